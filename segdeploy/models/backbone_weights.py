"""ImageNet backbone weights in torchvision's format, for users who fine-tune a zoo model.

    model = models.build("swiftnet_rn18", backbone_weights="resnet18-f37072fd.pth")
    models.load_backbone_weights(model, "resnet18-f37072fd.pth")          # the same

Every zoo model with an ImageNet backbone declares ``backbone_arch`` (``resnet18``, ``resnet50``,
``resnet101``, ``mobilenet_v2``) and ``backbone_key_map()``: model key -> torchvision key for each
backbone parameter and buffer. Several model keys may read one torchvision key (the SwiftNet
pyramid keeps one BatchNorm per pyramid level, all initialised from the single ImageNet one).
The classifier (``fc.*``, ``classifier.*``) and layers a model does not build (MobileNetV2's
``features.18``) are ignored; ``num_batches_tracked`` may be absent (torchvision's older files
predate it). Anything else missing, unexpected or of the wrong shape raises ``CheckpointError``.
"""

import re
from typing import Dict, Iterable

from ..errors import CheckpointError, SegDeployError
from .checkpoint import read_checkpoint, sha256_file

# torchvision keys no segmentation model uses
IGNORED_TORCHVISION_KEYS = re.compile(r"^(fc|classifier)\.|^features\.18\.")


def prefixed_key_map(model_keys: Iterable[str], model_prefix: str, tv_prefix: str = ""):
    """``{model_prefix + k: tv_prefix + k}`` for backbone keys ``k`` (without prefixes)."""
    return {model_prefix + k: tv_prefix + k for k in model_keys}


def _guess_arch(keys) -> str:
    keys = set(keys)
    if "features.1.conv.0.0.weight" in keys:
        return "mobilenet_v2"
    if "layer1.0.conv3.weight" in keys:
        blocks = {k.split(".")[1] for k in keys if k.startswith("layer3.")}
        return "resnet101" if len(blocks) > 6 else "resnet50"
    if "layer1.0.conv2.weight" in keys:
        blocks = {k.split(".")[1] for k in keys if k.startswith("layer3.")}
        return "resnet34" if len(blocks) > 2 else "resnet18"
    return ""


def load_backbone_weights(model, path: str, allow_unsafe_pickle: bool = False):
    """Load torchvision ImageNet weights at ``path`` into ``model``'s backbone; return ``model``.

    Only backbone tensors change; the decoder keeps its initialisation. Raises
    ``CheckpointError`` when the file is not a torchvision state_dict of the model's backbone.
    """
    import torch

    if not hasattr(model, "backbone_key_map"):
        raise SegDeployError(
            "{} has no ImageNet backbone to load weights into".format(type(model).__name__)
        )
    arch = model.backbone_arch
    key_map: Dict[str, str] = model.backbone_key_map()
    ckpt = read_checkpoint(path, allow_unsafe_pickle)
    model_state = model.state_dict()
    wanted = set(key_map.values())
    missing = sorted(
        {tv for tv in wanted if tv not in ckpt and not tv.endswith("num_batches_tracked")}
    )
    unexpected = sorted(
        k for k in ckpt if k not in wanted and not IGNORED_TORCHVISION_KEYS.search(k)
    )
    shapes = sorted(
        {
            "{} {} vs {} {}".format(tv, list(ckpt[tv].shape), mk, list(model_state[mk].shape))
            for mk, tv in key_map.items()
            if tv in ckpt and ckpt[tv].shape != model_state[mk].shape
        }
    )
    if missing or unexpected or shapes:
        parts = []
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", shapes),
        ):
            if items:
                more = " and {} more".format(len(items) - 6) if len(items) > 6 else ""
                parts.append(
                    "{} {} key(s): {}{}".format(len(items), label, ", ".join(items[:6]), more)
                )
        guess = _guess_arch(ckpt)
        hint = ""
        if guess and guess != arch:
            hint = " (the file looks like torchvision {} weights)".format(guess)
        raise CheckpointError(
            "{} is not a torchvision {} state_dict for the backbone of {}{}: {}".format(
                path, arch, type(model).__name__, hint, "; ".join(parts)
            )
        )
    with torch.no_grad():
        for model_key, tv_key in key_map.items():
            if tv_key in ckpt:
                model_state[model_key].copy_(ckpt[tv_key])
    model.segdeploy_backbone_sha256 = sha256_file(path)
    return model
