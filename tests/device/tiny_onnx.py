"""The device lane's model: a tiny segmentation graph written with onnx.helper, no torch.

``python tests/device/tiny_onnx.py`` (on the host, with onnx) rewrites the two committed files in
``tests/device/data/``; ``test_tiny_onnx.py`` checks that they are what this code writes, so the
bytes a device tests with are reviewable here. The graph is what a segexport labels graph looks
like to TensorRT and the Runtime (``image`` float32 NCHW in, ``labels`` int64 out via ArgMax, the
card in the metadata), small enough to commit: Conv 3x3 (3->8) + Relu + Conv 1x1 (8->19) +
ArgMax. Weights are seeded random numbers, so the labels vary across a frame.
"""

import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
H, W, CLASSES, HIDDEN = 64, 128, 19, 8
FILES = {"static": "tiny_labels.onnx", "dynamic": "tiny_labels_dynamic.onnx"}
OPSET, IR_VERSION = 13, 7  # what TensorRT 8.2's parser (JetPack 4.6.1) reads


def card(dynamic=False):
    """The model card the graph carries (what segexport would write for it)."""
    return {
        "schema": "segdeploy.card/1",
        "model": {"name": "tiny_conv", "family": "test", "num_classes": CLASSES},
        "input": {
            "name": "image",
            "layout": "NCHW",
            "channel_order": "RGB",
            "dtype": "float32",
            "scale": 1 / 255.0,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "height": H,
            "width": W,
            "dynamic": {"min": [32, 64], "opt": [H, W], "max": [128, 256]} if dynamic else None,
            "stride": 16,
        },
        "output": {"name": "labels", "kind": "labels", "dtype": "int64", "resolution": "input"},
        "provenance": {
            "random_weights": True,
            "opset": OPSET,
            "exporter": "onnx.helper (tests/device/tiny_onnx.py)",
        },
        "parity": {},
    }


def weights(seed=0):
    rng = np.random.RandomState(seed)
    w1 = rng.standard_normal((HIDDEN, 3, 3, 3)).astype(np.float32)
    b1 = rng.standard_normal(HIDDEN).astype(np.float32) * np.float32(0.1)
    w2 = rng.standard_normal((CLASSES, HIDDEN, 1, 1)).astype(np.float32)
    b2 = rng.standard_normal(CLASSES).astype(np.float32) * np.float32(0.1)
    return {"w1": w1, "b1": b1, "w2": w2, "b2": b2}


def serialize(dynamic=False):
    """The model's bytes (needs onnx: host only)."""
    from onnx import TensorProto, helper, numpy_helper

    h, w = ("height", "width") if dynamic else (H, W)
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["logits"], name="classifier"),
        helper.make_node("ArgMax", ["logits"], ["labels"], name="argmax", axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_labels",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, [1, h, w])],
        initializer=[numpy_helper.from_array(v, k) for k, v in sorted(weights().items())],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="segdeploy-tests"
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"segdeploy.card": json.dumps(card(dynamic), sort_keys=True)})
    return model.SerializeToString()


def path(kind="static"):
    return os.path.join(DATA, FILES[kind])


if __name__ == "__main__":
    for kind in FILES:
        with open(path(kind), "wb") as f:
            f.write(serialize(kind == "dynamic"))
        print(path(kind), os.path.getsize(path(kind)))
