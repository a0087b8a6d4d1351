"""The lane's committed ONNX graphs: what tiny_onnx.py writes, read without onnx, varied labels."""

import numpy as np
import pytest
import tiny_onnx

from segdeploy import card as card_mod
from segdeploy.engines import onnx_reader


@pytest.mark.parametrize("kind", sorted(tiny_onnx.FILES))
def test_committed_graph_is_what_the_generator_writes(kind):
    pytest.importorskip("onnx")  # the host regenerates; a device only reads the committed bytes
    with open(tiny_onnx.path(kind), "rb") as f:
        committed = f.read()
    assert committed == tiny_onnx.serialize(kind == "dynamic"), (
        "tests/device/data is stale: run python tests/device/tiny_onnx.py on the host"
    )


@pytest.mark.parametrize("kind", sorted(tiny_onnx.FILES))
def test_graph_reads_without_onnx_and_carries_a_valid_card(kind):
    path = tiny_onnx.path(kind)
    model = onnx_reader.read_model(path)
    assert model.opset == tiny_onnx.OPSET
    assert [n.op_type for n in model.graph.nodes] == ["Conv", "Relu", "Conv", "ArgMax"]
    card = card_mod.from_json(onnx_reader.read_metadata(path)[card_mod.METADATA_KEY])
    card_mod.validate(card)
    assert card["output"]["kind"] == "labels" and card["model"]["num_classes"] == 19
    assert (card["input"]["dynamic"] is not None) == (kind == "dynamic")


def test_labels_vary_across_a_frame():
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(tiny_onnx.path("dynamic"), providers=["CPUExecutionProvider"])
    rng = np.random.RandomState(0)
    for h, w in ((64, 128), (32, 64)):
        labels = session.run(None, {"image": rng.standard_normal((1, 3, h, w)).astype(np.float32)})
        assert labels[0].shape == (1, h, w)
        assert len(np.unique(labels[0])) >= 5  # a TensorRT-vs-ORT comparison on it means something
