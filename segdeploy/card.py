"""The model card: the metadata that travels with every artifact (DESIGN.md, "The model card").

It is a plain JSON-able dict, stored whole as JSON under the key ``segdeploy.card`` in an ONNX
file's ``metadata_props`` and as the sidecar ``<engine file>.json`` next to every engine, so that
``Runtime(path)`` needs no other configuration. Python 3.6 compatible: the device side reads it.

    {
      "schema": "segdeploy.card/1",
      "model":  {"name", "family", "num_classes", "dataset", "class_names", "palette"},
      "input":  {"name": "image", "layout": "NCHW", "channel_order": "RGB", "dtype": "float32",
                 "scale": 1/255, "mean": [..3], "std": [..3], "height", "width",
                 "dynamic": null | {"min": [h, w], "opt": [h, w], "max": [h, w]}, "stride"},
      "output": {"name", "kind": "labels" | "logits", "dtype", "resolution": "input",
                 "head": absent | {"kind": "graph"} | {"kind": "fused", "size": [H, W],
                         "logits_size": [h, w] | null, "align_corners": bool, "mode"}
                         | {"kind": "seghead", "size", "logits_size", "align_corners", "mode",
                            "node", "plugin", "plugin_version", "scales": [sh, sw] | null}},
      "provenance": {"checkpoint_sha256", "segdeploy", "torch", "onnx", "opset", "exported_at"},
      "parity": {...verification figures...},
      "engine": {...sidecar only: backend, precision, device, versions, build flags...}
    }
"""

import copy
import json
import math
import os

from . import _io
from .errors import EngineError, SegDeployError

SCHEMA = "segdeploy.card/1"
METADATA_KEY = "segdeploy.card"


def takes_uint8_frames(card):
    """True for a graph exported with ``segexport --input uint8``: it takes N x H x W x 3 uint8
    frames and normalizes them itself (``validate`` ties layout NHWC to dtype uint8)."""
    return str(card.get("input", {}).get("dtype", "float32")) == "uint8"


# output.head: "graph" = Resize + ArgMax inside the engine (today's graphs); "fused" = the engine
# returns the low-resolution logits and the runtime's fused head (runtime/head.py) upsamples them
# to "size" (the network input; for a dynamic graph, whatever size the input has) and takes the
# argmax, exactly as the removed Resize (coordinate transform "mode") + ArgMax did; "seghead" =
# the engine returns labels that its SegHead plugin node computes from the logits with those
# same fields (segbuild --seghead-plugin; engines/seghead_graph.py).
HEAD_KINDS = ("graph", "fused", "seghead")
HEAD_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners")


def fused_head(card):
    """The card's ``output.head`` when the runtime must run the fused head, else None."""
    head = card.get("output", {}).get("head")
    return head if isinstance(head, dict) and head.get("kind") == "fused" else None


def seghead_head(card):
    """The card's ``output.head`` when the engine's SegHead plugin node computes the labels."""
    head = card.get("output", {}).get("head")
    return head if isinstance(head, dict) and head.get("kind") == "seghead" else None


def sidecar_path(engine_path):
    """``model.plan`` -> ``model.plan.json``."""
    return os.fspath(engine_path) + ".json"


# Label maps are uint8 (0..255); logits engines may have more classes for infer(feeds) users.
MAX_CLASSES = 255
MAX_LOGIT_CLASSES = 4096
MAX_SIDE = 16384  # the same bound as engines.profiles.parse_hw
MAX_STRIDE = 1024
MAX_CARD_BYTES = 4 << 20  # a card with a 256-colour palette and class names is ~20 KB
MAX_DEPTH = 8  # card -> section -> dynamic -> min -> value is 5 deep


def _fail(where, text):
    raise SegDeployError("{} is invalid: {}; re-export it with segexport".format(where, text))


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_in(where, key, value, low, high):
    if not _is_int(value) or not low <= value <= high:
        _fail(where, "{} must be an integer in {}..{}, got {!r}".format(key, low, high, value))
    return value


def _str(where, key, value, limit=256):
    if not isinstance(value, str) or not value or len(value) > limit:
        _fail(where, "{} must be a non-empty string of at most {} characters".format(key, limit))
    return value


def _numbers(where, key, value, count, positive=False):
    if (
        not isinstance(value, list)
        or len(value) != count
        or not all(_is_number(v) and (v > 0 or not positive) for v in value)
    ):
        _fail(
            where,
            "{} must be a list of {} finite{} numbers, got {!r}".format(
                key, count, " positive" if positive else "", _short(value)
            ),
        )
    return value


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _depth(obj, limit):
    """True when ``obj`` nests no deeper than ``limit`` (iterative: no RecursionError)."""
    stack = [(obj, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            if level > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return True


def _hw(where, key, value):
    if not isinstance(value, list) or len(value) != 2:
        _fail(where, "{} must be [height, width], got {!r}".format(key, _short(value)))
    return tuple(_int_in(where, key, v, 1, MAX_SIDE) for v in value)


def validate(card, where="model card", input_shape=None, output_shape=None):
    """The card, or a one-line SegDeployError saying which field is wrong.

    Checks types, ranges (1 <= classes <= 255 for label output, sizes, stride), that numbers are
    finite and std > 0, the palette's shape and the nesting depth. With ``input_shape`` /
    ``output_shape`` (the graph's, -1 / None / a name for dynamic axes) it also checks that the
    card agrees with the graph: the fixed input size and the logits' channel count.
    """
    if not isinstance(card, dict) or card.get("schema") != SCHEMA:
        raise SegDeployError(
            "{} is not a segdeploy model card (schema {!r} expected)".format(where, SCHEMA)
        )
    if not _depth(card, MAX_DEPTH):
        _fail(where, "it nests deeper than {} levels".format(MAX_DEPTH))
    for section, keys in (
        ("model", ("name", "num_classes")),
        ("input", ("name", "channel_order", "scale", "mean", "std", "height", "width", "stride")),
        ("output", ("name", "kind")),
    ):
        body = card.get(section)
        if not isinstance(body, dict):
            _fail(where, "{} must be an object".format(section))
        missing = [k for k in keys if k not in body]
        if missing:
            raise SegDeployError("{} lacks {}.{}".format(where, section, ", ".join(missing)))
    model, cin, cout = card["model"], card["input"], card["output"]

    kind = cout["kind"]
    if kind not in ("labels", "logits"):
        _fail(where, "output.kind must be 'labels' or 'logits', got {!r}".format(_short(kind)))
    _str(where, "output.name", cout["name"])
    head = cout.get("head")
    fused = isinstance(head, dict) and head.get("kind") == "fused"
    top = MAX_CLASSES if kind == "labels" or fused else MAX_LOGIT_CLASSES
    classes = _int_in(where, "model.num_classes", model["num_classes"], 1, top)
    if head is not None:
        _check_head(where, head, kind)
    _str(where, "model.name", model["name"])
    names = model.get("class_names")
    if names is not None and (
        not isinstance(names, list)
        or len(names) != classes
        or not all(isinstance(n, str) and len(n) <= 256 for n in names)
    ):
        _fail(where, "model.class_names must be {} strings".format(classes))
    palette = model.get("palette")
    if palette is not None and (
        not isinstance(palette, list)
        or not 1 <= len(palette) <= MAX_LOGIT_CLASSES
        or not all(
            isinstance(c, list) and len(c) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in c)
            for c in palette
        )
    ):
        _fail(where, "model.palette must be a list of [r, g, b] triples of 0..255")

    _str(where, "input.name", cin["name"])
    if cin["channel_order"] not in ("RGB", "BGR"):
        _fail(where, "input.channel_order must be 'RGB' or 'BGR'")
    if not _is_number(cin["scale"]) or not cin["scale"] > 0:
        _fail(where, "input.scale must be a finite number > 0, got {!r}".format(cin["scale"]))
    _numbers(where, "input.mean", cin["mean"], 3)
    _numbers(where, "input.std", cin["std"], 3, positive=True)
    _int_in(where, "input.height", cin["height"], 1, MAX_SIDE)
    _int_in(where, "input.width", cin["width"], 1, MAX_SIDE)
    _int_in(where, "input.stride", cin["stride"], 1, MAX_STRIDE)
    # float32 NCHW (normalized by the runtime), or uint8 NHWC frames the graph normalizes itself
    for key, allowed in (("layout", ("NCHW", "NHWC")), ("dtype", ("float32", "uint8"))):
        if cin.get(key) is not None and cin[key] not in allowed:
            _fail(where, "input.{} must be {}".format(key, " or ".join(allowed)))
    if (cin.get("layout") == "NHWC") != (cin.get("dtype") == "uint8"):
        _fail(where, "input.layout NHWC goes with input.dtype uint8 (and NCHW with float32)")
    if cin.get("max_batch") is not None:
        _int_in(where, "input.max_batch", cin["max_batch"], 1, 4096)
    dynamic = cin.get("dynamic")
    if dynamic is not None:
        if not isinstance(dynamic, dict) or any(k not in dynamic for k in ("min", "opt", "max")):
            _fail(where, "input.dynamic must be null or {min, opt, max}")
        lo, opt, hi = (_hw(where, "input.dynamic." + k, dynamic[k]) for k in ("min", "opt", "max"))
        if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
            _fail(where, "input.dynamic must satisfy min <= opt <= max")
    engine = card.get("engine")
    if engine is not None:
        if not isinstance(engine, dict):
            _fail(where, "engine must be an object")
        plugins = engine.get("plugins")
        if plugins is not None and (
            not isinstance(plugins, list)
            or not all(
                isinstance(p, dict)
                and isinstance(p.get("file"), str)
                and isinstance(p.get("sha256"), str)
                for p in plugins
            )
        ):
            _fail(where, "engine.plugins must be a list of {file, sha256}")
    if input_shape is not None or output_shape is not None:
        check_graph(card, where, input_shape, output_shape)
    return card


def _check_head(where, head, kind):
    if not isinstance(head, dict) or head.get("kind") not in HEAD_KINDS:
        _fail(where, "output.head must be an object with kind 'graph', 'fused' or 'seghead'")
    if head["kind"] == "graph":
        return
    wanted = "logits" if head["kind"] == "fused" else "labels"
    if kind != wanted:
        _fail(
            where,
            "output.head kind {!r} needs output.kind {!r} (the engine's output)".format(
                head["kind"], wanted
            ),
        )
    if head["kind"] == "seghead":
        for key in ("node", "plugin", "plugin_version"):
            if head.get(key) is not None:
                _str(where, "output.head." + key, head[key])
        if head.get("scales") is not None:
            _numbers(where, "output.head.scales", head["scales"], 2, positive=True)
    _hw(where, "output.head.size", head.get("size"))
    if head.get("logits_size") is not None:
        _hw(where, "output.head.logits_size", head["logits_size"])
    corners = head.get("align_corners")
    if not isinstance(corners, bool):
        _fail(where, "output.head.align_corners must be true or false")
    mode = head.get("mode", "align_corners" if corners else "half_pixel")
    if mode not in HEAD_MODES or (mode == "align_corners") != corners:
        _fail(
            where,
            "output.head.mode must be one of {} and agree with align_corners, got {!r}".format(
                ", ".join(HEAD_MODES), _short(mode)
            ),
        )


def _fixed(dim):
    return dim if _is_int(dim) and dim > 0 else None


def check_graph(card, where, input_shape=None, output_shape=None):
    """SegDeployError unless the (validated) card agrees with the graph's tensor shapes."""
    cin, kind = card["input"], card["output"]["kind"]
    if input_shape is not None:
        shape = list(input_shape)
        nhwc = takes_uint8_frames(card)
        if len(shape) != 4 or _fixed(shape[3 if nhwc else 1]) not in (None, 3):
            raise SegDeployError(
                "{}: the graph's input has shape {}, not {}".format(
                    where, shape, "N x H x W x 3" if nhwc else "N x 3 x H x W"
                )
            )
        fixed = (
            (_fixed(shape[1]), _fixed(shape[2])) if nhwc else (_fixed(shape[2]), _fixed(shape[3]))
        )
        if None not in fixed and not cin.get("dynamic") and fixed != (cin["height"], cin["width"]):
            raise SegDeployError(
                "{} says the input is {}x{} but the graph's input is fixed at {}x{}; use "
                "{}x{} or re-export the graph at the size you want".format(
                    where, cin["height"], cin["width"], fixed[0], fixed[1], fixed[0], fixed[1]
                )
            )
    if output_shape is not None:
        shape = list(output_shape)
        rank = 3 if kind == "labels" else 4
        if len(shape) != rank:
            raise SegDeployError(
                "{} says the output is {} ({}-D) but the graph's output has shape {}".format(
                    where, kind, rank, shape
                )
            )
        classes = card["model"]["num_classes"]
        if kind == "logits" and _fixed(shape[1]) not in (None, classes):
            raise SegDeployError(
                "{} says {} classes but the graph's logits have {} channels".format(
                    where, classes, shape[1]
                )
            )
    return card


def to_json(card):
    return json.dumps(card, sort_keys=False, default=_io._json_default)


def from_json(text, where="model card"):
    """Parse and validate a card from JSON text or UTF-8 bytes; SegDeployError for anything
    malformed (bad encoding, deep nesting, oversize, wrong types)."""
    if isinstance(text, bytes):
        if len(text) > MAX_CARD_BYTES:
            _fail(where, "it is larger than {} bytes".format(MAX_CARD_BYTES))
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            _fail(where, "it is not UTF-8 text (byte {})".format(exc.start))
    if not isinstance(text, str):
        _fail(where, "expected JSON text")
    if len(text) > MAX_CARD_BYTES:
        _fail(where, "it is larger than {} bytes".format(MAX_CARD_BYTES))
    try:
        card = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        _fail(where, "it nests deeper than {} levels".format(MAX_DEPTH))
    except ValueError as exc:
        raise SegDeployError(
            "{} is not valid JSON: {}".format(where, str(exc).splitlines()[0][:200])
        ) from None
    return validate(card, where)


def store_onnx_card(model_proto, card):
    """Store ``card`` as JSON in the model's metadata_props (replacing an older card)."""
    props = model_proto.metadata_props
    for i in reversed(range(len(props))):
        if props[i].key == METADATA_KEY:
            del props[i]
    entry = props.add()
    entry.key = METADATA_KEY
    entry.value = to_json(card)
    return model_proto


def read_onnx_card(model_proto, where="ONNX file"):
    """The card in ``model_proto``'s metadata, or None."""
    for prop in model_proto.metadata_props:
        if prop.key == METADATA_KEY:
            return from_json(prop.value, where)
    return None


def _reject_constant(name):
    # NaN / Infinity are not JSON; Python's json accepts them unless told otherwise
    raise ValueError("{} is not a JSON number".format(name))


def write_sidecar(engine_path, card):
    """Write ``<engine_path>.json`` atomically."""
    _io.write_json(sidecar_path(engine_path), card)


def read_sidecar(engine_path):
    """The card stored next to ``engine_path``; EngineError if it is missing or broken."""
    path = sidecar_path(engine_path)
    if not os.path.isfile(path):
        hint = "re-run segexport or segbuild, which write both"
        if os.fspath(engine_path).endswith((".plan", ".engine")):
            hint += "; for a plan trtexec built: segbuild --adopt {} MODEL.onnx".format(engine_path)
        raise EngineError(
            "{} has no model card next to it ({} is missing); {}".format(engine_path, path, hint)
        )
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CARD_BYTES + 1)
    except OSError as exc:
        raise EngineError("cannot read {}: {}".format(path, exc.strerror or exc)) from None
    return from_json(data, path)


def with_engine(card, engine_info):
    """A copy of ``card`` with its ``engine`` section set."""
    out = copy.deepcopy(card)
    out["engine"] = engine_info
    # The label dtype the engine really returns: TensorRT 8.x has no INT64 tensors, so its
    # ONNX parser turns an int64 ArgMax into int32 (10.x keeps int64).
    for tensor in engine_info.get("outputs") or ():
        if tensor.get("name") == out.get("output", {}).get("name") and tensor.get("dtype"):
            out["output"]["dtype"] = tensor["dtype"]
    return out
