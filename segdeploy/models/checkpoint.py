"""Loading checkpoints in the formats the official repositories save.

Accepted: a plain state_dict; ``{'model': sd}`` (RegSeg), ``{'state_dict': sd}`` (SwiftNet,
Lightning), ``{'model_state': sd}`` (DeepLabV3Plus-Pytorch); keys prefixed with ``module.``
(DataParallel / DistributedDataParallel) or ``_orig_mod.`` (torch.compile); the ``FullModel``
state_dict of HRNet-Semantic-Segmentation's training code (DDRNet, PIDNet): the network under
``model.`` beside the loss modules' buffers (the cross-entropy's class weights).

Training-only heads (auxiliary, boundary, detail heads) that official checkpoints carry and the
deployment form does not build are named by key prefix in ``ModelSpec.training_only``; loading
drops them and says so in one line. Any other missing or unexpected key is still an error.
"""

import os
import re
import sys
from typing import Dict, List, Sequence, Tuple

from ..errors import CheckpointError
from ..manifest import sha256_file  # one file hash for checkpoints, manifests and plans

WRAPPER_KEYS = ("model", "state_dict", "model_state", "model_state_dict", "net")
STRIP_PREFIXES = ("module.", "_orig_mod.")
# HRNet-Semantic-Segmentation's FullModel(model, loss): the network's keys under "model.", the
# losses' buffers (CrossEntropyLoss(weight=...) registers the class weights) under these
FULLMODEL_PREFIX = "model."
FULLMODEL_LOSS_PREFIXES = ("loss.", "sem_loss.", "bd_loss.")


def read_checkpoint(path: str, allow_unsafe_pickle: bool = False) -> Dict:
    """Read ``path`` on the CPU and return the bare state_dict inside it."""
    import torch

    if not os.path.isfile(path):
        from .._io import missing_file

        raise CheckpointError(missing_file(path, "checkpoint"))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_unsafe_pickle)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(describe_load_error(path, exc, allow_unsafe_pickle)) from None
    return unwrap_state_dict(obj, path)


# torch's messages, mapped to what they mean for a user; checked in this order
_KNOWN_FAILURES = (
    (
        "failed finding central directory",
        "the file is truncated or damaged (its zip archive "
        "is incomplete); copy or download it again",
    ),
    (
        "miniz",
        "the file is truncated or damaged (its zip archive is unreadable); copy or "
        "download it again",
    ),
    ("WeightsUnpickler error", "not a PyTorch checkpoint, or a truncated one"),
    ("invalid load key", "not a PyTorch checkpoint, or a truncated one"),
    ("Ran out of input", "the file is empty or truncated"),
)


def describe_load_error(path: str, exc: BaseException, allow_unsafe_pickle: bool = False) -> str:
    """One line for a failed ``torch.load``: what is wrong with the file and what to do."""
    text = str(exc)
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    if found and not allow_unsafe_pickle:
        blocked = " (a function a checkpoint has no reason to call)" if "blocked" in text else ""
        return (
            "checkpoint {} pickles a Python object ({}{}) that weights-only loading refuses; "
            "if you trust its source, pass --unsafe-pickle (allow_unsafe_pickle=True in "
            "Python), which lets it run code".format(path, found.group(1), blocked)
        )
    for needle, meaning in _KNOWN_FAILURES:
        if needle in text:
            return "cannot read checkpoint {}: {}".format(path, meaning)
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    if isinstance(exc, (KeyError, EOFError, UnicodeDecodeError)) or len(first) < 8:
        # e.g. KeyError('101') for a text file: torch's message says nothing to a user
        return (
            "cannot read checkpoint {}: not a PyTorch checkpoint, or a truncated one ({})".format(
                path, type(exc).__name__
            )
        )
    return "cannot read checkpoint {}: {}".format(path, _clip(first, 240))


def _clip(text: str, limit: int) -> str:
    """``text`` cut at a word boundary with an ellipsis, never mid-word."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + " ..."


def unwrap_state_dict(obj, path: str = "checkpoint") -> Dict:
    """Find the state_dict in a wrapped checkpoint and strip DataParallel/compile prefixes."""
    import torch

    state = obj
    for _ in range(3):  # e.g. {'model': {'state_dict': ...}}
        if not isinstance(state, dict):
            break
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            break
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            "{} holds no state_dict (found {}); expected a state_dict or a dict with one of the "
            "keys {}".format(path, keys, ", ".join(WRAPPER_KEYS))
        )
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    for prefix in STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _classifier_hint(shape_mismatches: List[Tuple[str, tuple, tuple]]) -> str:
    # A classifier's out-channels are the first dimension of the last mismatched weight/bias.
    for key, ckpt_shape, model_shape in reversed(shape_mismatches):
        if re.search(r"(classifier|logits|head|cls|fc)", key) and ckpt_shape[:1] != model_shape[:1]:
            return (
                " (the checkpoint's classifier has {} classes, the model was built with {}: "
                "pass num_classes={})".format(ckpt_shape[0], model_shape[0], ckpt_shape[0])
            )
    return ""


def describe_mismatch(model_state: Dict, ckpt_state: Dict, limit: int = 10) -> str:
    """A readable account of missing keys, unexpected keys and shape mismatches, or ''."""
    missing = [k for k in model_state if k not in ckpt_state]
    unexpected = [k for k in ckpt_state if k not in model_state]
    shapes = [
        (k, tuple(ckpt_state[k].shape), tuple(model_state[k].shape))
        for k in model_state
        if k in ckpt_state and ckpt_state[k].shape != model_state[k].shape
    ]
    parts = []

    def listing(keys):
        more = " and {} more".format(len(keys) - limit) if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more

    if missing:
        parts.append("{} missing key(s): {}".format(len(missing), listing(missing)))
    if unexpected:
        parts.append("{} unexpected key(s): {}".format(len(unexpected), listing(unexpected)))
    if shapes:
        parts.append(
            "{} shape mismatch(es): {}".format(
                len(shapes),
                listing(
                    [
                        "{} checkpoint {} vs model {}".format(k, list(a), list(b))
                        for k, a, b in shapes
                    ]
                ),
            )
        )
    if not parts:
        return ""
    text = "; ".join(parts) + _classifier_hint(shapes)
    if missing and unexpected and len(missing) == len(model_state):
        text += " (no key matches: is this a checkpoint of another architecture?)"
    return text


def strip_fullmodel(state: Dict, model_state: Dict) -> Tuple[Dict, List[str]]:
    """``(network state, loss keys)`` of a FullModel checkpoint, or ``(state, [])`` otherwise.

    A FullModel state_dict has every key under ``model.`` or a loss prefix, at least one under
    ``model.``, and none that the model itself has (a model with a ``model`` submodule is left
    alone).
    """
    if any(k in model_state for k in state):
        return state, []
    net = {
        k[len(FULLMODEL_PREFIX) :]: v for k, v in state.items() if k.startswith(FULLMODEL_PREFIX)
    }
    losses = [k for k in state if k.startswith(FULLMODEL_LOSS_PREFIXES)]
    if not net or len(net) + len(losses) != len(state):
        return state, []
    return net, losses


def split_training_only(
    ckpt_state: Dict, model_state: Dict, prefixes: Sequence[str]
) -> Tuple[Dict, Dict[str, int]]:
    """``(the rest, {prefix: tensors dropped})``: keys the model lacks under ``prefixes`` go."""
    kept, dropped = {}, {}
    for key, value in ckpt_state.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is not None and key not in model_state:
            dropped[prefix] = dropped.get(prefix, 0) + 1
        else:
            kept[key] = value
    return kept, dropped


def describe_dropped(path: str, heads: Dict[str, int], loss_keys: Sequence[str]) -> str:
    """The one line loading prints when it leaves training-only parts of a checkpoint out."""
    parts = []
    if heads:
        parts.append(
            "the training-only head{} {} ({} tensors)".format(
                "s" if len(heads) > 1 else "",
                ", ".join(p.rstrip(".") for p in heads),
                sum(heads.values()),
            )
        )
    if loss_keys:
        parts.append("the training loss's {}".format(", ".join(loss_keys)))
    return "checkpoint {}: left out {}, which the deployment form does not use".format(
        os.path.basename(path), " and ".join(parts)
    )


def _print_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load_checkpoint(
    model,
    path: str,
    allow_unsafe_pickle: bool = False,
    strict: bool = True,
    training_only: Sequence[str] = None,
    report=_print_to_stderr,
):
    """Load the checkpoint at ``path`` into ``model`` (in place) and return ``model``.

    Loads with ``weights_only=True`` unless ``allow_unsafe_pickle`` is set. With ``strict`` any
    missing/unexpected key or shape mismatch raises ``CheckpointError`` listing them, except keys
    under ``training_only`` (default: the model's ``ModelSpec.training_only``) that the model does
    not have and a FullModel's loss buffers: those are dropped, and ``report`` (default: print to
    stderr) gets one line naming them; ``model.segdeploy_checkpoint_dropped`` lists the prefixes.
    """
    ckpt_state = read_checkpoint(path, allow_unsafe_pickle)
    model_state = model.state_dict()
    if training_only is None:
        spec = getattr(model, "segdeploy_spec", None)
        training_only = tuple(getattr(spec, "training_only", ()) or ())
    ckpt_state, loss_keys = strip_fullmodel(ckpt_state, model_state)
    ckpt_state, heads = split_training_only(ckpt_state, model_state, training_only)
    problem = describe_mismatch(model_state, ckpt_state)
    if problem and strict:
        raise CheckpointError(
            "checkpoint {} does not fit {}: {}".format(path, type(model).__name__, problem)
        )
    if not strict:
        ckpt_state = {
            k: v
            for k, v in ckpt_state.items()
            if k in model_state and v.shape == model_state[k].shape
        }
    model.load_state_dict(ckpt_state, strict=strict)
    model.segdeploy_checkpoint_sha256 = sha256_file(path)
    model.segdeploy_checkpoint_dropped = tuple(heads) + tuple(loss_keys)
    if (heads or loss_keys) and report is not None:
        report(describe_dropped(path, heads, loss_keys))
    return model
