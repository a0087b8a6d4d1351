"""``--head fused`` end to end on the tiny RegSeg: the graph cut before its final Resize, the card's
``output.head``, and the Runtime's fused post-processing against the same graph with its head."""

import numpy as np
import pytest
from runtime_support import export_tiny, smooth_frame

from segdeploy import card as card_mod
from segdeploy.errors import ExportError, SegDeployError
from segdeploy.runtime import Runtime
from segdeploy.runtime.head import reference_labels

onnx = pytest.importorskip("onnx")

H, W = 64, 128


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """(graph-head .onnx, fused-head .onnx, the fused card) of one tiny RegSeg."""
    from segdeploy.card import read_onnx_card as read_card
    from segdeploy.export.head import cut_head
    from segdeploy.export.onnx_export import save_model, set_card

    folder = tmp_path_factory.mktemp("head")
    graph_path, fused_path = folder / "tiny.onnx", folder / "tiny.fused.onnx"
    export_tiny(graph_path, H, W, seed=3)
    proto = onnx.load(str(graph_path))
    cut, card = cut_head(proto, read_card(proto))
    onnx.checker.check_model(cut, full_check=True)
    set_card(cut, card)
    save_model(cut, str(fused_path))
    return graph_path, fused_path, card


def test_the_cut_graph_returns_low_resolution_logits_and_the_card_says_how_to_upsample(engines):
    _, fused_path, card = engines
    proto = onnx.load(str(fused_path))
    ops = [n.op_type for n in proto.graph.node]
    assert "ArgMax" not in ops and ops[-1] != "Resize"
    (output,) = proto.graph.output
    dims = [d.dim_value for d in output.type.tensor_type.shape.dim]
    assert output.name == "logits" and dims == [1, 19, H // 4, W // 4]
    head = card["output"]["head"]
    assert card["output"]["kind"] == "logits"
    assert head == {
        "kind": "fused",
        "size": [H, W],
        "logits_size": [H // 4, W // 4],
        "align_corners": False,
        "mode": "half_pixel",
    }
    assert card_mod.fused_head(card_mod.validate(card)) == head


@pytest.mark.parametrize("frame_hw", [(H, W), (100, 150), (37, 300)])
def test_runtime_fused_head_gives_the_graph_heads_labels(engines, frame_hw):
    graph_path, fused_path, _ = engines
    frame = smooth_frame(frame_hw[0], frame_hw[1], seed=frame_hw[1])
    with Runtime(graph_path) as graph, Runtime(fused_path) as fused:
        expected = graph.infer(frame)
        labels = fused.infer(frame)
        batch = fused.infer_batch([frame, frame])
        assert graph.head == "graph" and fused.head == "fused-network"
    assert len(np.unique(expected)) >= 5
    assert labels.shape == frame_hw and labels.dtype == np.uint8
    assert (labels == expected).mean() >= 0.9999
    assert all(np.array_equal(b, labels) for b in batch)


def test_head_frame_upsamples_the_logits_straight_to_the_frame(engines):
    _, fused_path, _ = engines
    frame = smooth_frame(100, 150, seed=9)
    with Runtime(fused_path, head="frame") as rt:
        labels = rt.infer(frame)
        # the engine's own low-resolution logits, upsampled the long way to the frame's size
        low = rt.engine.infer({rt.input_name: rt._pre.one(frame)})[rt.output_name][0]
        network = Runtime(fused_path)
        at_network = network.infer(frame)
        network.close()
    assert rt.head == "fused-frame" and labels.shape == (100, 150)
    assert np.array_equal(labels, reference_labels(low, (100, 150)))
    # a different rule from nearest-resizing network-size labels: boundaries move
    assert 0.9 < (labels == at_network).mean() < 1.0


def test_head_frame_on_a_graph_with_its_head_and_a_wrong_head_are_one_line(engines):
    graph_path = engines[0]
    with pytest.raises(SegDeployError, match="segexport --head fused"):
        Runtime(graph_path, head="frame")
    with pytest.raises(SegDeployError, match="head must be"):
        Runtime(graph_path, head="fast")


def test_choose_head_defaults_and_refusals(engines):
    from segdeploy.export.head import choose_head, cut_head

    proto = onnx.load(str(engines[0]))
    assert choose_head(None, "onnxruntime", proto) == ("fused", None)
    assert choose_head(None, "tensorrt", proto) == ("graph", None)
    assert choose_head("graph", "onnxruntime", proto) == ("graph", None)
    assert choose_head("fused", "tensorrt", proto)[0] == "fused"
    cut = onnx.load(str(engines[1]))  # ends in a Conv: nothing to cut
    choice, note = choose_head(None, "onnxruntime", cut)
    assert choice == "graph" and "Resize" in note
    with pytest.raises(ExportError, match="--head graph"):
        choose_head("fused", "onnxruntime", cut)
    with pytest.raises(ExportError, match="--head graph"):
        cut_head(cut, card_mod.validate(engines[2]))


BAD_HEADS = [
    ({"kind": "fast"}, "kind 'graph', 'fused' or 'seghead'"),
    ({"kind": "fused", "align_corners": False}, "output.head.size"),
    ({"kind": "fused", "size": [64, 0], "align_corners": False}, "output.head.size"),
    ({"kind": "fused", "size": [64, 128], "align_corners": "no"}, "align_corners"),
    ({"kind": "fused", "size": [64, 128], "align_corners": True, "mode": "half_pixel"}, "mode"),
    ({"kind": "fused", "size": [64, 128], "align_corners": False, "mode": "cubic"}, "mode"),
]


@pytest.mark.parametrize("head, needle", BAD_HEADS)
def test_malformed_heads_are_one_line(engines, head, needle):
    card = dict(engines[2], output=dict(engines[2]["output"], head=head))
    with pytest.raises(SegDeployError, match=needle):
        card_mod.validate(card)


def test_a_fused_head_needs_logits_out_and_at_most_255_classes(engines):
    card = engines[2]
    labels_out = dict(card, output=dict(card["output"], kind="labels"))
    with pytest.raises(SegDeployError, match="output.kind 'logits'"):
        card_mod.validate(labels_out)
    many = dict(card, model=dict(card["model"], num_classes=300, class_names=None, palette=None))
    with pytest.raises(SegDeployError, match=r"1\.\.255"):
        card_mod.validate(many)


def test_triton_declares_the_low_resolution_logits_of_a_fused_head(engines):
    from segdeploy.engines.triton import tensor_dims

    card = engines[2]
    assert tensor_dims(card, 0) == ([1, 3, H, W], [1, 19, H // 4, W // 4])
    assert tensor_dims(card, 8) == ([3, H, W], [19, H // 4, W // 4])
    dynamic = dict(
        card, input=dict(card["input"], dynamic={"min": [32, 64], "opt": [H, W], "max": [128, 256]})
    )
    assert tensor_dims(dynamic, 8) == ([3, -1, -1], [19, -1, -1])


def test_segexport_head_graph_and_fused_engines_give_the_same_labels(tmp_path):
    import torch
    from runtime_support import tiny_model

    from segdeploy.export.cli import main as segexport

    checkpoint = tmp_path / "tiny.pth"
    torch.save(tiny_model(seed=5).state_dict(), str(checkpoint))  # labels vary per pixel
    argv = ["--model", "regseg_tiny", "--checkpoint", str(checkpoint), "--res", "64x128"]
    argv += ["--verify-inputs", "1", "--backend", "onnxruntime", "-q"]
    assert segexport(argv + ["--out", str(tmp_path / "fused")]) == 0
    assert segexport(argv + ["--out", str(tmp_path / "graph"), "--head", "graph"]) == 0
    fused_ort, graph_ort = (
        tmp_path / "fused" / "regseg_tiny.ort",
        tmp_path / "graph" / "regseg_tiny.ort",
    )
    assert card_mod.read_sidecar(str(fused_ort))["output"]["head"]["kind"] == "fused"
    assert "head" not in card_mod.read_sidecar(str(graph_ort))["output"]
    # the exported .onnx keeps its head either way: the portable graph for other targets
    proto = onnx.load(str(tmp_path / "fused" / "regseg_tiny.onnx"))
    assert [o.name for o in proto.graph.output] == ["labels"]
    frame = smooth_frame(90, 170, seed=4)
    with Runtime(fused_ort) as fused, Runtime(graph_ort) as graph:
        assert fused.engine.outputs[0].shape[1:] == (19, 16, 32)
        assert fused.head == "fused-network" and graph.head == "graph"
        expected = graph.infer(frame)
        assert len(np.unique(expected)) >= 5
        assert (fused.infer(frame) == expected).mean() >= 0.9999


def test_the_runtime_runs_the_compiled_head_on_its_threads_and_numpy_gives_the_same(
    engines, monkeypatch
):
    from test_fused_head import needs_compiled_head

    needs_compiled_head()
    _, fused_path, _ = engines
    frame = smooth_frame(100, 150, seed=4)
    with Runtime(fused_path, threads=2) as rt:
        assert rt.head_impl == "compiled" and rt._post._fused._compiled.threads == 2
        compiled = rt.infer(frame)
    monkeypatch.setenv("SEGDEPLOY_HEAD_IMPL", "numpy")
    with Runtime(fused_path) as rt:
        assert rt.head_impl == "numpy"
        assert np.array_equal(rt.infer(frame), compiled)
    assert len(np.unique(compiled)) >= 5
