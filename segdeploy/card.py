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
      "output": {"name", "kind": "labels" | "logits", "dtype", "resolution": "input"},
      "provenance": {"checkpoint_sha256", "segdeploy", "torch", "onnx", "opset", "exported_at"},
      "parity": {...verification figures...},
      "engine": {...sidecar only: backend, precision, device, versions, build flags...}
    }
"""

import copy
import json
import os

from . import _io
from .errors import EngineError, SegDeployError

SCHEMA = "segdeploy.card/1"
METADATA_KEY = "segdeploy.card"


def sidecar_path(engine_path):
    """``model.plan`` -> ``model.plan.json``."""
    return os.fspath(engine_path) + ".json"


def validate(card, where="model card"):
    """Raise SegDeployError unless ``card`` has the fields the runtime relies on."""
    if not isinstance(card, dict) or card.get("schema") != SCHEMA:
        raise SegDeployError(
            "{} is not a segdeploy model card (schema {!r} expected)".format(where, SCHEMA)
        )
    for section, keys in (
        ("model", ("name", "num_classes")),
        ("input", ("name", "channel_order", "scale", "mean", "std", "height", "width", "stride")),
        ("output", ("name", "kind")),
    ):
        missing = [k for k in keys if k not in card.get(section, {})]
        if missing:
            raise SegDeployError("{} lacks {}.{}".format(where, section, ", ".join(missing)))
    return card


def to_json(card):
    return json.dumps(card, sort_keys=False, default=_io._json_default)


def from_json(text, where="model card"):
    try:
        card = json.loads(text)
    except ValueError as exc:
        raise SegDeployError("{} is not valid JSON: {}".format(where, exc)) from None
    return validate(card, where)


def write_sidecar(engine_path, card):
    """Write ``<engine_path>.json`` atomically."""
    _io.write_json(sidecar_path(engine_path), card)


def read_sidecar(engine_path):
    """The card stored next to ``engine_path``; EngineError if it is missing or broken."""
    path = sidecar_path(engine_path)
    if not os.path.isfile(path):
        hint = "re-run segexport or segbuild, which write both"
        if os.fspath(engine_path).endswith((".plan", ".engine")):
            hint += "; for a plan trtexec built: segbuild --adopt {} --onnx MODEL.onnx".format(
                engine_path
            )
        raise EngineError(
            "{} has no model card next to it ({} is missing); {}".format(engine_path, path, hint)
        )
    with open(path, "r", encoding="utf-8") as f:
        return from_json(f.read(), path)


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
