"""segbuild --seghead-plugin: the labels head becomes the SegHead plugin node before the build.

The rewritten graphs are run in ONNX Runtime with the SegHead node computed by the kernel's host
build (``runtime/seghead_op.py``), against the standard graph; the TensorRT build itself runs
only under the ``tensorrt`` mark (skipped, with the reason, where TensorRT or a GPU is missing).
"""

import os
import sys

import numpy as np
import pytest

from segdeploy import card as card_mod
from segdeploy.engines import seghead_graph
from segdeploy.engines.build_cli import main as segbuild
from segdeploy.errors import SegDeployError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime_extensions")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H, W = 64, 128


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """(whole graph, graph cut before its head) of a tiny RegSeg with varied weights."""
    pytest.importorskip("torch")
    sys.path.insert(0, os.path.join(REPO, "tests", "runtime"))
    try:
        from runtime_support import export_tiny
    finally:
        sys.path.pop(0)
    from segdeploy.export.head import cut_head
    from segdeploy.export.onnx_export import save_model, set_card

    folder = tmp_path_factory.mktemp("seghead")
    whole, cut_path = folder / "tiny.onnx", folder / "cut.onnx"
    export_tiny(whole, H, W, seed=3)
    proto = onnx.load(str(whole))
    cut, card = cut_head(proto, card_mod.read_onnx_card(proto))
    set_card(cut, card)
    save_model(cut, str(cut_path))
    return whole, cut_path


def _frames():
    sys.path.insert(0, os.path.join(REPO, "tests", "runtime"))
    try:
        from runtime_support import smooth_frame
    finally:
        sys.path.pop(0)
    return [smooth_frame(H, W, seed=3), smooth_frame(100, 150, seed=8)]


def _labels(path, **options):
    from segdeploy.runtime import Runtime

    with Runtime(str(path), **options) as rt:
        return [rt.infer(frame) for frame in _frames()], rt.head


def _trtexec_line(text):
    return [line for line in text.splitlines() if line.startswith("trtexec ")][0]


def test_seghead_plugin_replaces_the_head_and_keeps_the_labels(graphs, capsys):
    whole, _ = graphs
    argv = [str(whole), "--seghead-plugin", "--plugin", "libseghead_plugin.so"]
    assert segbuild(argv + ["--print-trtexec", "--trt-version", "10.8"]) == 0
    out = capsys.readouterr().out
    fused = whole.parent / "tiny.seghead.onnx"
    line = _trtexec_line(out)
    assert "--onnx={}".format(fused) in line and "--staticPlugins=libseghead_plugin.so" in line
    proto = onnx.load(str(fused))
    ops = [n.op_type for n in proto.graph.node]
    before = [n.op_type for n in onnx.load(str(whole)).graph.node]
    assert ops[-1] == "SegHead" and "ArgMax" not in ops  # the final Resize went with its ArgMax
    assert ops.count("Resize") == before.count("Resize") - 1 and len(ops) == len(before) - 1
    (output,) = proto.graph.output
    assert output.type.tensor_type.elem_type == onnx.TensorProto.INT32
    # the card, in the metadata and the sidecar: the labels come from the SegHead node
    card = card_mod.read_onnx_card(proto)
    assert card == card_mod.read_sidecar(str(fused))
    head = card_mod.seghead_head(card)
    assert card["output"]["kind"] == "labels" and card["output"]["dtype"] == "int32"
    assert head["size"] == [H, W] and head["logits_size"] == [H // 4, W // 4]
    assert head["node"] == proto.graph.node[-1].name and head["align_corners"] is False
    # ONNX Runtime, SegHead on the host build, against the standard graph: every label
    from segdeploy.export.seghead import _random_feeds, check

    standard = onnx.load(str(whole))
    figures = check(standard, proto, _random_feeds(standard, 2))
    assert figures["classes"] >= 5 and figures["pixels"] == 2 * H * W
    assert figures["disagreements"] == 0
    # and through Runtime, which reads the card (int32 labels from the engine, head "seghead")
    expected, _ = _labels(whole)
    got, head_kind = _labels(fused, custom_ops=["seghead"])
    assert head_kind == "seghead" and len(np.unique(expected[0])) >= 5
    for a, b in zip(expected, got):
        assert b.dtype == np.uint8 and np.array_equal(a, b)


def test_a_graph_cut_before_its_head_gets_the_node_after_its_logits(graphs, capsys):
    whole, cut = graphs
    # without the flag: the logits plan, and one line saying who runs the head
    assert segbuild([str(cut), "--print-trtexec", "--trt-version", "8.6"]) == 0
    captured = capsys.readouterr()
    note = [line for line in captured.err.splitlines() if "head is fused" in line]
    assert len(note) == 1 and "runtime runs the head on the host" in note[0]
    assert "--onnx={}".format(cut) in _trtexec_line(captured.out)
    argv = [str(cut), "--seghead-plugin", "--plugin", "libseghead_plugin.so", "--print-trtexec"]
    assert segbuild(argv + ["--trt-version", "8.6"]) == 0
    captured = capsys.readouterr()
    assert "head is fused" not in captured.err
    fused = cut.parent / "cut.seghead.onnx"
    assert "--plugins=libseghead_plugin.so" in _trtexec_line(captured.out)
    proto = onnx.load(str(fused))
    node = proto.graph.node[-1]
    assert node.op_type == "SegHead" and list(node.input) == ["logits"]
    assert [o.name for o in proto.graph.output] == ["labels"]
    card = card_mod.read_onnx_card(proto)
    assert card["output"]["name"] == "labels" and card["output"]["resolution"] == "input"
    assert card_mod.seghead_head(card)["logits_size"] == [H // 4, W // 4]
    # the same labels as the whole graph's Resize + ArgMax
    import onnxruntime as ort

    from segdeploy.export.seghead import _random_feeds, host_session

    standard = onnx.load(str(whole))
    reference = ort.InferenceSession(str(whole), providers=["CPUExecutionProvider"])
    appended = host_session(proto)
    classes = set()
    for feed in _random_feeds(standard, 2, seed=4):
        want = reference.run(None, feed)[0]
        got = appended.run(None, feed)[0]
        assert got.dtype == np.int32 and np.array_equal(want, got)
        classes.update(np.unique(want).tolist())
    assert len(classes) >= 5


def test_dblock_then_seghead_and_the_fp16_twin(graphs, tmp_path, capsys):
    whole, _ = graphs
    folder = tmp_path
    src = folder / "net.onnx"
    src.write_bytes(whole.read_bytes())
    from segdeploy.export.fp16 import convert_to_fp16

    typed = convert_to_fp16(onnx.load(str(whole)))  # what segexport --fp16 writes beside it
    onnx.save(typed, str(folder / "net.fp16.onnx"))
    argv = [str(src), "--dblock-plugin", "--seghead-plugin", "--fp16", "--print-trtexec"]
    argv += ["--plugin", "libdblock_plugin.so", "--plugin", "libseghead_plugin.so"]
    assert segbuild(argv + ["--trt-version", "11.0"]) == 0
    out = capsys.readouterr().out
    both = folder / "net.dblock.seghead.onnx"
    line = _trtexec_line(out)
    assert "--onnx={}".format(folder / "net.dblock.seghead.fp16.onnx") in line  # TensorRT 11
    assert "libdblock_plugin.so" in line and "libseghead_plugin.so" in line
    ops = [n.op_type for n in onnx.load(str(both)).graph.node]
    assert ops.count("DBlockConv") == 3 and ops[-1] == "SegHead" and "ArgMax" not in ops
    expected, _ = _labels(whole)
    got, head_kind = _labels(both, custom_ops=["dblock", "seghead"])
    assert head_kind == "seghead"
    for a, b in zip(expected, got):
        # the D blocks' host build sums in another order than ONNX Runtime's Conv
        assert np.mean(a == b) >= 0.999
    # the FP16-typed twin got its SegHead too, with the typed graph's labels
    expected, _ = _labels(folder / "net.fp16.onnx")
    got, _ = _labels(folder / "net.dblock.seghead.fp16.onnx", custom_ops=["dblock", "seghead"])
    assert len(np.unique(expected[0])) >= 5
    assert all(np.mean(a == b) >= 0.999 for a, b in zip(expected, got))


def _one_line_error(capsys, argv, *words):
    assert segbuild(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    for word in words:
        assert word in err[0]


def test_mistakes_are_one_line(graphs, tmp_path, capsys):
    whole, _ = graphs
    src = tmp_path / "m.onnx"
    src.write_bytes(whole.read_bytes())
    build = "python -m segdeploy.plugins.seghead.build"
    _one_line_error(capsys, [str(src), "--seghead-plugin"], "--plugin build/seghead/", build)
    assert not (tmp_path / "m.seghead.onnx").exists()
    both = [str(src), "--dblock-plugin", "--seghead-plugin", "--plugin", "lib.so"]
    _one_line_error(capsys, both, "both plugin libraries")
    assert not (tmp_path / "m.dblock.onnx").exists()  # refused before anything was written
    # no --plugin with --print-trtexec: the line names the library where the build writes it
    assert segbuild([str(src), "--seghead-plugin", "--print-trtexec", "--trt-version", "8.2"]) == 0
    assert "--plugins=build/seghead/libseghead_plugin.so" in capsys.readouterr().out
    argv = [str(src), "--dblock-plugin", "--seghead-plugin", "--print-trtexec"]
    assert segbuild(argv + ["--trt-version", "8.2"]) == 0
    line = _trtexec_line(capsys.readouterr().out)
    assert "--onnx={}".format(tmp_path / "m.dblock.seghead.onnx") in line
    assert "--plugins=build/dblock/libdblock_plugin.so" in line and "libseghead_plugin" in line
    fused = str(tmp_path / "m.seghead.onnx")
    _one_line_error(capsys, [fused, "--seghead-plugin", "--print-trtexec"], "already holds")


def test_append_refuses_a_graph_that_does_not_fit_its_card(graphs):
    _, cut = graphs
    proto = onnx.load(str(cut))
    card = card_mod.read_onnx_card(proto)
    wrong = dict(card, output=dict(card["output"], name="other"))
    with pytest.raises(SegDeployError, match="not an output of the graph"):
        seghead_graph.append_head(proto, wrong)
    head = dict(card["output"]["head"], logits_size=[8, 8])
    with pytest.raises(SegDeployError, match="the card says the logits are 8x8"):
        seghead_graph.append_head(proto, dict(card, output=dict(card["output"], head=head)))
    dynamic = dict(card["input"], dynamic={"min": [32, 64], "opt": [64, 128], "max": [64, 128]})
    with pytest.raises(SegDeployError, match="dynamic"):
        seghead_graph.append_head(proto, dict(card, input=dynamic))


def test_the_card_checks_a_seghead_head():
    card = {
        "schema": card_mod.SCHEMA,
        "model": {"name": "m", "num_classes": 7},
        "input": {
            "name": "image",
            "channel_order": "RGB",
            "scale": 1.0,
            "mean": [0, 0, 0],
            "std": [1, 1, 1],
            "height": 64,
            "width": 128,
            "stride": 4,
        },
        "output": {
            "name": "labels",
            "kind": "labels",
            "head": {
                "kind": "seghead",
                "size": [64, 128],
                "align_corners": False,
                "mode": "half_pixel",
            },
        },
    }
    assert card_mod.seghead_head(card_mod.validate(card))["size"] == [64, 128]
    assert card_mod.fused_head(card) is None
    logits = dict(card, output=dict(card["output"], kind="logits"))
    with pytest.raises(SegDeployError, match="'seghead' needs output.kind 'labels'"):
        card_mod.validate(logits)
    bad = dict(card["output"]["head"], scales=[0, 4])
    with pytest.raises(SegDeployError, match="output.head.scales"):
        card_mod.validate(dict(card, output=dict(card["output"], head=bad)))


def _plugin_library():
    path = os.environ.get("SEGDEPLOY_SEGHEAD_PLUGIN") or os.path.join(REPO, seghead_graph.LIBRARY)
    if not os.path.isfile(path):
        pytest.skip(
            "no SegHead plugin library at {} (build it with {}, or name it in "
            "SEGDEPLOY_SEGHEAD_PLUGIN)".format(path, seghead_graph.BUILD_COMMAND)
        )
    return path


@pytest.mark.tensorrt
@pytest.mark.parametrize("which", ["whole", "cut"])
def test_segbuild_builds_a_seghead_plan_whose_labels_match(graphs, which, tmp_path):
    from segdeploy.runtime.backend import open_engine

    library = _plugin_library()
    whole, cut = graphs
    source = whole if which == "whole" else cut
    plan = tmp_path / "tiny.seghead.plan"
    argv = [str(source), "--seghead-plugin", "--plugin", library, "--out", str(plan)]
    assert segbuild(argv + ["--workspace", "256"]) == 0
    sidecar = card_mod.read_sidecar(str(plan))
    assert card_mod.seghead_head(sidecar) is not None
    import onnxruntime as ort

    from segdeploy.export.seghead import _random_feeds

    feed = _random_feeds(onnx.load(str(whole)), 1, seed=6)[0]
    want = ort.InferenceSession(str(whole), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    with open_engine(str(plan), plugins=[library]) as engine:
        got = np.array(engine.infer(feed)["labels"])
    assert len(np.unique(want)) >= 5 and got.shape == want.shape
    assert np.mean(got == want) >= 0.999  # TensorRT's logits round otherwise than ONNX Runtime's


def test_runtime_reads_a_seghead_card(graphs, capsys):
    """head='frame' on a SegHead graph: one line saying its labels come from the node."""
    from segdeploy.runtime import Runtime

    whole, _ = graphs
    assert segbuild([str(whole), "--seghead-plugin", "--print-trtexec"]) == 0
    capsys.readouterr()
    fused = str(whole.parent / "tiny.seghead.onnx")
    with pytest.raises(SegDeployError, match="its SegHead node computes them"):
        Runtime(fused, custom_ops=["seghead"], head="frame")
    with pytest.raises(Exception, match=r"custom_ops=\['seghead'\]"):
        Runtime(fused)  # ONNX Runtime alone cannot run the node: the error says how
