"""Bring-your-own PyTorch models: factory arguments, output detection, pre-processing flags.

    segexport --model my_net.py:build --factory-args '{"num_classes": 5}' \\
              --mean 123.675,116.28,103.53 --std 58.395,57.12,57.375 --bgr --classes names.txt

- ``--factory-args``: a JSON object, or ``key=value`` pairs (values read as JSON when they are
  JSON: ``5``, ``true``, ``[1, 2]``, ``"x"``; else as text). Parsed, never evaluated.
- The model's output is found by one forward pass at the export size, not assumed: a dict (as
  torchvision's segmentation models return, ``{'out', 'aux'}``) gives its ``'out'`` entry, a
  tuple or list its first element; logits below the input size (1/s) get a bilinear upsampling
  to the input in the exported graph, so that the argmax is taken at full resolution as the zoo
  models and the papers do. Each choice is printed.
- ``--mean / --std / --rgb | --bgr / --input-range / --classes`` set the model card's
  pre-processing and class names instead of ImageNet RGB and ``class_N`` defaults; without them
  a bring-your-own model's export says what it assumed.

Only the export side imports this module (it needs torch for the forward pass).
"""

import json
import os
import re

from ..errors import SegDeployError

_PAIR_SPLIT = re.compile(r",\s*(?=[A-Za-z_][A-Za-z0-9_]*\s*=)")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_factory_args(values):
    """``--factory-args`` values (each a JSON object or key=value pairs) -> one kwargs dict."""
    kwargs = {}
    for text in values or ():
        text = str(text).strip()
        if not text:
            continue
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise SegDeployError(
                    "--factory-args {!r} is not valid JSON ({}); write e.g. "
                    "'{{\"num_classes\": 5}}' or num_classes=5".format(text, exc)
                ) from None
            if not isinstance(parsed, dict):
                raise SegDeployError("--factory-args must be a JSON object, got {!r}".format(text))
            pairs = list(parsed.items())
        else:
            pairs = []
            for item in _PAIR_SPLIT.split(text):
                key, sep, value = item.partition("=")
                if not sep:
                    raise SegDeployError(
                        "--factory-args {!r}: expected key=value pairs such as "
                        "num_classes=5,pretrained=false, or a JSON object".format(text)
                    )
                pairs.append((key.strip(), _value(value.strip())))
        for key, value in pairs:
            if not _IDENT.match(str(key)):
                raise SegDeployError(
                    "--factory-args: {!r} is not a keyword argument name".format(key)
                )
            kwargs[str(key)] = value
    return kwargs


def _value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word: a string argument


def call_factory(fn, reference, kwargs):
    """``fn(**kwargs)`` in eval mode, with one line when the call fails or returns no Module."""
    import torch

    shown = ", ".join("{}={!r}".format(k, v) for k, v in sorted(kwargs.items()))
    try:
        model = fn(**kwargs)
    except (Exception, SystemExit) as exc:
        hint = " (check --factory-args)" if kwargs or isinstance(exc, TypeError) else ""
        text = (str(exc).strip().splitlines() or [""])[0][:200]
        raise SegDeployError(
            "--model {}: {}({}) raised {}{}{}".format(
                reference,
                getattr(fn, "__name__", "factory"),
                shown,
                type(exc).__name__,
                ": " + text if text else "",
                hint,
            )
        ) from None
    if not isinstance(model, torch.nn.Module):
        raise SegDeployError(
            "--model {}: the factory returned {}, not a torch.nn.Module".format(
                reference, type(model).__name__
            )
        )
    return model.eval()


def _select(output, key, index):
    if key is not None:
        return output[key]
    if index is not None:
        return output[index]
    return output


def _main_output(output):
    """(key, index, description) of the segmentation logits inside a model's output."""
    import torch

    if isinstance(output, dict):
        keys = list(output)
        if "out" in output:
            return "out", None, "a dict with keys {}: exporting 'out'".format(", ".join(keys))
        tensors = [k for k in keys if isinstance(output[k], torch.Tensor)]
        if len(tensors) == 1:
            return tensors[0], None, "a dict: exporting its one tensor {!r}".format(tensors[0])
        raise SegDeployError(
            "the model returns a dict with keys {} and no 'out'; return the logits "
            "(N x classes x H x W), or put them under 'out'".format(", ".join(map(str, keys)))
        )
    if isinstance(output, (tuple, list)):
        if not output:
            raise SegDeployError("the model returns an empty {}".format(type(output).__name__))
        return (
            None,
            0,
            "a {} of {}: exporting the first element (the rest, e.g. auxiliary "
            "heads, is left out)".format(type(output).__name__, len(output)),
        )
    return None, None, None


def _make_wrapper(model, key, index, upsample):
    import torch
    import torch.nn.functional as F

    class MainOutput(torch.nn.Module):
        """The user's model, reduced to its logits at the input resolution."""

        def __init__(self):
            super(MainOutput, self).__init__()
            self.model = model

        def forward(self, x):
            y = _select(self.model(x), key, index)
            if upsample:
                y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
            return y

    wrapper = MainOutput().eval()
    for attr in ("segdeploy_checkpoint_sha256", "num_classes", "output_stride"):
        if hasattr(model, attr):
            setattr(wrapper, attr, getattr(model, attr))
    return wrapper


def prepare(model, height, width, say=None):
    """One forward pass at ``height`` x ``width``: (model to export, classes, facts).

    The returned model yields N x K x height x width logits; ``facts`` records what was found
    (for the card and the progress lines).
    """
    import torch

    say = say or (lambda text: None)
    try:
        with torch.no_grad():
            output = model(torch.zeros(1, 3, height, width))
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [""])[0][:200]
        raise SegDeployError(
            "--model: a forward pass at {}x{} failed: {}: {}".format(
                height, width, type(exc).__name__, text
            )
        ) from None
    key, index, container = _main_output(output)
    logits = _select(output, key, index)
    if not isinstance(logits, torch.Tensor):
        raise SegDeployError(
            "--model: the model returns {}, not one logits tensor; return the N x classes x H x "
            "W logits (a dict with 'out' is fine)".format(type(logits).__name__)
        )
    if logits.dim() != 4 or not logits.is_floating_point():
        raise SegDeployError(
            "--model: the model returns a {} tensor of shape {}; segdeploy needs float logits "
            "of shape N x classes x H x W".format(logits.dtype, tuple(logits.shape))
        )
    _, classes, out_h, out_w = (int(v) for v in logits.shape)
    facts = {"output": container or "a tensor", "logits_hw": [out_h, out_w]}
    if container:
        say("model output: " + container)
    upsample = (out_h, out_w) != (height, width)
    if upsample:
        ratio = height / float(out_h)
        facts["resolution"] = "1/{:g}".format(round(ratio, 2))
        say(
            "model output: {} classes at {}x{}, {} of the {}x{} input: a bilinear upsampling to "
            "the input is added to the graph, so labels come out at full resolution".format(
                classes, out_h, out_w, facts["resolution"], height, width
            )
        )
    else:
        facts["resolution"] = "input"
        say("model output: {} classes at the input resolution {}x{}".format(classes, height, width))
    if key is not None or index is not None or upsample:
        model = _make_wrapper(model, key, index, upsample)
    return model, classes, facts


# --- pre-processing and class flags ------------------------------------------------------


def parse_triple(text, flag):
    """'0.485,0.456,0.406' -> [0.485, 0.456, 0.406] (one line on anything else)."""
    parts = [p.strip() for p in str(text).replace(" ", ",").split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise SegDeployError(
            "{} takes three numbers R,G,B (or one for all channels), e.g. {} 0.485,0.456,0.406; "
            "got {!r}".format(flag, flag, text)
        )
    return values


def read_classes(text):
    """``--classes``: a count, or a file of names (one a line; blank and # lines skipped).

    Returns (count, names or None)."""
    text = str(text).strip()
    if text.isdigit():
        count = int(text)
        if count < 1:
            raise SegDeployError("--classes must be at least 1, got {}".format(count))
        return count, None
    if not os.path.isfile(text):
        raise SegDeployError(
            "--classes {}: not a number of classes and no such file (give a count, or a text "
            "file with one class name a line)".format(text)
        )
    from .._io import read_text

    names = [line.strip() for line in read_text(text, "--classes").splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise SegDeployError("--classes {} lists no class names".format(text))
    return len(names), names


def resolve_flags(args):
    """Check the flags before any work; --classes also sets --num-classes (the head's size)."""
    if getattr(args, "factory_args", None) and not (args.model and ".py:" in args.model):
        raise SegDeployError("--factory-args goes with --model path/to/file.py:factory")
    if getattr(args, "input_range", None) and not (args.mean or args.std):
        raise SegDeployError("--input-range says how to read --mean/--std; give them too")
    for flag in ("mean", "std"):
        if getattr(args, flag, None):
            parse_triple(getattr(args, flag), "--" + flag)
    if getattr(args, "classes", None):
        count, _ = read_classes(args.classes)
        if args.num_classes and args.num_classes != count:
            raise SegDeployError(
                "--classes gives {} classes but --num-classes {}; give one of them".format(
                    count, args.num_classes
                )
            )
        args.num_classes = count


def check_classes(detected, args):
    """One line when the model's head disagrees with --classes / --num-classes."""
    promised = args.num_classes
    if promised and promised != detected:
        raise SegDeployError(
            "the model outputs {} classes but {} says {}; fix the flag or the model's head".format(
                detected,
                "--classes" if getattr(args, "classes", None) else "--num-classes",
                promised,
            )
        )


def record_output(card, facts):
    """Note in the card what the forward pass found (the graph's output is at the input size)."""
    if facts.get("resolution", "input") != "input":
        card["output"]["upsampled_from"] = facts["resolution"]
    card["output"]["model_output"] = facts.get("output")
    return card


def apply_flags(card, args, say=None):
    """Set the card's pre-processing and class names from the flags; returns the card.

    A bring-your-own model (card family ``user``) exported without them gets a line saying
    what was assumed, instead of silently ImageNet-normalized RGB and ``class_N`` names.
    """
    say = say or (lambda text: None)
    inp, model = card["input"], card["model"]
    mean_flag, std_flag = getattr(args, "mean", None), getattr(args, "std", None)
    order = getattr(args, "channel_order", None)
    if mean_flag or std_flag:
        scale = float(inp["scale"])
        # the card's values in pixel units (0..255): (p * s - m) / d == (p - m / s) / (d / s)
        mean_px = [m / scale for m in inp["mean"]]
        std_px = [d / scale for d in inp["std"]]
        given = [parse_triple(t, f) for t, f in ((mean_flag, "--mean"), (std_flag, "--std")) if t]
        input_range = getattr(args, "input_range", None) or (
            "0-255" if max(max(v) for v in given) > 1.0 else "0-1"
        )
        unit = 255.0 if input_range == "0-1" else 1.0
        if mean_flag:
            mean_px = [v * unit for v in parse_triple(mean_flag, "--mean")]
        if std_flag:
            std_px = [v * unit for v in parse_triple(std_flag, "--std")]
        if min(std_px) <= 0:
            raise SegDeployError("--std values must be positive, got {}".format(std_flag))
        # stored as segdeploy's cards always are: pixels / 255, then (x - mean) / std
        inp["scale"] = 1.0 / 255.0
        inp["mean"] = [round(v / 255.0, 8) for v in mean_px]
        inp["std"] = [round(v / 255.0, 8) for v in std_px]
        say(
            "pre-processing: (pixel - [{}]) / [{}] in 0..255 units ({} values read as {})".format(
                ", ".join("{:g}".format(v) for v in mean_px),
                ", ".join("{:g}".format(v) for v in std_px),
                "--mean/--std",
                input_range,
            )
        )
    if order:
        inp["channel_order"] = order
    if getattr(args, "classes", None):
        count, names = read_classes(args.classes)
        if count != int(model["num_classes"]):
            raise SegDeployError(
                "--classes gives {} classes but the model has {}".format(
                    count, model["num_classes"]
                )
            )
        if names is not None:
            if names != list(model.get("class_names") or []):
                model["dataset"] = None  # the count matched a dataset, the names do not
            model["class_names"] = names
    if model.get("family") == "user":
        assumed = []
        if not (mean_flag or std_flag):
            assumed.append("ImageNet mean/std on pixels / 255 (--mean/--std to change)")
        if not order:
            assumed.append("{} channel order (--rgb/--bgr)".format(inp["channel_order"]))
        if not getattr(args, "classes", None) and not model.get("dataset"):
            assumed.append(
                "class names class_0..class_{} (--classes names.txt)".format(
                    int(model["num_classes"]) - 1
                )
            )
        if assumed:
            say("assumed for this model: " + "; ".join(assumed))
    return card
