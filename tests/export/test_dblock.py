"""The D-block graph rewrite (segexport --dblock-plugin) and its ONNX Runtime custom op.

The fused graph runs in ONNX Runtime with DBlockConv computed by the kernel's host build
(segdeploy.plugins.dblock.host), and must give the standard graph's labels.
"""

import json
import os
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from segdeploy import Runtime
from segdeploy.errors import EngineError, SegDeployError
from segdeploy.export import dblock, export_onnx, fold_batchnorm, verify
from segdeploy.export.cli import main
from segdeploy.export.onnx_export import op_histogram
from segdeploy.models.regseg import REGSEG_DILATIONS
from segdeploy.runtime.onnxruntime_backend import OnnxRuntimeEngine

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "runtime"))
from runtime_support import tiny_model  # noqa: E402


def varied(name, seed=0):
    """A zoo model with fan-in-scaled conv weights and random BN statistics: labels vary
    (runtime_support's tiny_model, which takes any zoo name)."""
    return tiny_model(seed=seed, name=name)


@pytest.fixture(scope="module")
def regseg_dblock(tmp_path_factory):
    """segexport --model regseg --dblock-plugin at 128x256 with non-degenerate weights."""
    out = tmp_path_factory.mktemp("dblock")
    ckpt = out / "regseg.pth"
    torch.save(varied("regseg").state_dict(), ckpt)
    argv = ["--model", "regseg", "--checkpoint", ckpt, "--res", "128x256", "--dblock-plugin"]
    argv += ["--backend", "onnxruntime", "--out", out / "o"]
    assert main([str(a) for a in argv]) == 0
    return out / "o"


def test_segexport_writes_twelve_dblockconv_nodes_and_no_split(regseg_dblock):
    fused = onnx.load(str(regseg_dblock / "regseg.dblock.onnx"))
    standard = onnx.load(str(regseg_dblock / "regseg.onnx"))
    ops = op_histogram(fused)
    assert ops["DBlockConv"] == 12 and "Split" not in ops
    assert op_histogram(standard)["Split"] == 12  # the standard graph is kept as it was
    # Each block replaced Split, 2 Conv, Concat and Relu.
    std_ops = op_histogram(standard)
    assert std_ops["Conv"] - ops["Conv"] == 24
    assert std_ops["Concat"] - ops.get("Concat", 0) == 12
    assert std_ops["Relu"] - ops["Relu"] == 12
    nodes = [n for n in fused.graph.node if n.op_type == "DBlockConv"]
    split = [d for d in REGSEG_DILATIONS if len(d) == 2]
    assert [list(helper.get_attribute_value(a) for a in n.attribute if a.name == "dilations")[0]
            for n in nodes] == split  # fmt: skip
    for node in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert node.domain == dblock.DOMAIN
        assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b""
        assert attrs["group_width"] == 16 and attrs["relu"] == 1
        weights = {t.name: t for t in fused.graph.initializer}
        w = numpy_helper.to_array(weights[node.input[1]])
        b = numpy_helper.to_array(weights[node.input[2]])
        assert w.shape[1:] == (16, 3, 3) and b.shape == (w.shape[0],)
    assert any(o.domain == dblock.DOMAIN for o in fused.opset_import)


def test_segexport_dblock_labels_equal_standard_graph(regseg_dblock):
    report = json.loads((regseg_dblock / "report.json").read_text())
    parity = report["dblock"]["parity"]
    assert parity["reference_classes"] >= 5  # the weights make labels vary
    assert parity["label_agreement"] == 1.0
    assert parity["disagreements_beyond_rounding"] == 0
    assert parity["max_rel_logit_error"] < 1e-5
    assert len(report["dblock"]["fused"]) == 12
    assert report["artifacts"]["onnx_dblock"].endswith("regseg.dblock.onnx")


def test_dblock_card_lists_the_fused_blocks(regseg_dblock):
    card = json.loads((regseg_dblock / "regseg.dblock.onnx.json").read_text())
    section = card["dblock"]
    assert section["plugin"] == "DBlockConv" and section["relu_fused"] == 12
    assert [b["dilations"] for b in section["blocks"]] == [
        d for d in REGSEG_DILATIONS if len(d) == 2
    ]
    assert [b["channels"] for b in section["blocks"]] == [256] * 11 + [320]
    assert card["parity"]["dblock_vs_standard"]["label_agreement"] == 1.0
    assert "dblock" not in json.loads((regseg_dblock / "regseg.onnx.json").read_text())


def test_runtime_opens_dblock_graph_only_when_asked(regseg_dblock):
    path = str(regseg_dblock / "regseg.dblock.onnx")
    with pytest.raises(EngineError, match=r"custom_ops=\['dblock'\]"):
        Runtime(path)
    with pytest.raises(EngineError, match="custom_ops knows"):
        Runtime(path, custom_ops=["cuda_dblock"])
    frame = (np.random.RandomState(1).rand(128, 256, 3) * 255).astype(np.uint8)
    with (
        Runtime(path, custom_ops=["dblock"]) as fused,
        Runtime(str(regseg_dblock / "regseg.onnx")) as standard,
    ):
        expected = standard.infer(frame)
        assert len(np.unique(expected)) >= 5
        np.testing.assert_array_equal(fused.infer(frame), expected)


def _tiny_export():
    model = varied("regseg_tiny", seed=2)
    return model, export_onnx(fold_batchnorm(model), None, height=64, width=128)["model"]


def test_rewrite_matches_by_structure_not_names():
    _, proto = _tiny_export()
    renamed = onnx.ModelProto()
    renamed.CopyFrom(proto)
    for i, node in enumerate(renamed.graph.node):
        node.name = "n{}".format(i)
    blocks, skipped = dblock.find_blocks(renamed)
    assert [b.dilations for b in blocks] == [(1, 2), (1, 4), (1, 14)] and skipped == []
    fused, summary = dblock.fuse_dblocks(renamed)
    assert op_histogram(fused)["DBlockConv"] == 3 and "Split" not in op_histogram(fused)
    # Weights are the two convs' weights stacked (BN already folded into them).
    weights = {t.name: numpy_helper.to_array(t) for t in fused.graph.initializer}
    first = blocks[0]
    node = next(n for n in fused.graph.node if n.op_type == "DBlockConv")
    np.testing.assert_array_equal(weights[node.input[1]], np.concatenate(first.weights))
    np.testing.assert_array_equal(weights[node.input[2]], np.concatenate(first.biases))
    assert summary["fused"][0]["replaced"] == [n.name for n in first.nodes]
    assert [n.op_type for n in first.nodes] == ["Split", "Conv", "Conv", "Concat", "Relu"]
    assert op_histogram(proto)["Split"] == 3  # the input model is untouched


def test_fused_graph_can_disagree():
    """The comparison sees a wrong kernel input: swapping a block's dilations changes logits."""
    model, proto = _tiny_export()
    fused, _ = dblock.fuse_dblocks(proto)
    node = [n for n in fused.graph.node if n.op_type == "DBlockConv"][-1]  # (1, 14)
    for attr in node.attribute:
        if attr.name == "dilations":
            attr.ints[:] = [14, 1]
    card = {"input": {"height": 64, "width": 128, "scale": 1 / 255.0}}
    card["input"].update(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    inputs = verify.random_inputs(card, 1)
    figures = dblock.compare_graphs(proto, fused, inputs, 19)
    assert figures["max_rel_logit_error"] > 1e-2
    assert verify.verdict(figures) and figures["disagreements_beyond_rounding"] > 0
    good = dblock.compare_graphs(proto, dblock.fuse_dblocks(proto)[0], inputs, 19)
    assert good["max_rel_logit_error"] < 1e-5 and good["label_agreement"] == 1.0


def _block_graph(channels=64, group_width=16, dilations=(1, 4), relu=True, extra_use=False):
    """X -> Split -> Conv d1, Conv d2 -> Concat [-> Relu] -> Y, with random constant weights."""
    rng = np.random.RandomState(0)
    half = channels // 2
    inits = [numpy_helper.from_array(np.array([half, half], np.int64), "sizes")]
    nodes = [helper.make_node("Split", ["x", "sizes"], ["s0", "s1"], axis=1)]
    for i, d in enumerate(dilations):
        w = (rng.standard_normal((half, group_width, 3, 3)) / 12).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, "w{}".format(i)),
            numpy_helper.from_array(rng.standard_normal(half).astype(np.float32), "b{}".format(i)),
        ]
        nodes.append(
            helper.make_node(
                "Conv",
                ["s{}".format(i), "w{}".format(i), "b{}".format(i)],
                ["c{}".format(i)],
                dilations=[d, d],
                pads=[d] * 4,
                kernel_shape=[3, 3],
                group=half // group_width,
            )
        )
    nodes.append(helper.make_node("Concat", ["c0", "c1"], ["cat"], axis=1))
    outputs = ["y"]
    if relu:
        nodes.append(helper.make_node("Relu", ["cat"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["cat"], ["y"]))
    if extra_use:
        nodes.append(helper.make_node("Identity", ["c1"], ["side"]))
        outputs.append("side")
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, channels, 9, 13])],
        [
            helper.make_tensor_value_info(o, TensorProto.FLOAT, [2, c, 9, 13])
            for o, c in zip(outputs, [channels, half])
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("relu", [True, False])
def test_block_graph_fused_equals_standard(relu, tmp_path):
    proto = _block_graph(relu=relu)
    path = tmp_path / "block.onnx"
    onnx.save(proto, str(path))
    out, summary = dblock.fuse_file(str(path))
    assert out.endswith("block.dblock.onnx") and summary["fused"][0]["relu"] is relu
    x = np.random.RandomState(3).standard_normal((2, 64, 9, 13)).astype(np.float32)
    with (
        OnnxRuntimeEngine(str(path), io_binding=False) as std,
        OnnxRuntimeEngine(out, io_binding=False, custom_ops=["dblock"]) as fused,
    ):
        expected = std.infer({"x": x})["y"]
        got = fused.infer({"x": x})["y"]
    assert (expected < 0).any() is not relu  # the ReLU is there exactly when it was fused
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"group_width": 8}, "groups of 16"),
        ({"extra_use": True}, "other consumers"),
    ],
)
def test_patterns_outside_the_contract_are_left_with_the_reason(kwargs, reason, tmp_path):
    proto = _block_graph(**kwargs)
    fused, summary = dblock.fuse_dblocks(proto)
    assert summary["fused"] == [] and reason in summary["skipped"][0]["reason"]
    assert op_histogram(fused) == op_histogram(proto)
    path = tmp_path / "odd.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(SegDeployError, match="no split-dilation D block"):
        dblock.fuse_file(str(path))
    assert not (tmp_path / "odd.dblock.onnx").exists()


def test_fuse_file_refuses_a_fused_graph(regseg_dblock):
    with pytest.raises(SegDeployError, match="already holds DBlockConv"):
        dblock.fuse_file(str(regseg_dblock / "regseg.dblock.onnx"))


def test_segexport_dblock_plugin_on_a_model_without_d_blocks(tmp_path, capsys):
    argv = ["--model", "swiftnet_tiny", "--res", "64x128", "--dblock-plugin"]
    code = main(argv + ["--backend", "onnxruntime", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no split-dilation D block" in err[0]
    assert not list(tmp_path.glob("*.dblock.onnx"))


def test_segexport_dblock_fp16_graph_and_trtexec_line(tmp_path, capsys):
    argv = ["--model", "regseg_tiny", "--res", "64x128", "--dblock-plugin", "--fp16"]
    argv += ["--print-trtexec", "--trt-version", "8.2", "--backend", "onnxruntime"]
    assert main(argv + ["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    fused16 = onnx.load(str(tmp_path / "regseg_tiny.dblock.fp16.onnx"))
    nodes = [n for n in fused16.graph.node if n.op_type == "DBlockConv"]
    assert len(nodes) == 3 and "Split" not in op_histogram(fused16)
    weights = {t.name: t for t in fused16.graph.initializer}
    assert weights[nodes[0].input[1]].data_type == TensorProto.FLOAT16
    card16 = json.loads((tmp_path / "regseg_tiny.dblock.fp16.onnx.json").read_text())
    assert card16["precision"] == "fp16" and len(card16["dblock"]["blocks"]) == 3
    # TensorRT 8.2 builds FP16 from the FP32 graph with --fp16: the D-block line names it and
    # loads the plugin with 8.x's flag.
    line = next(s for s in out.splitlines() if "trtexec" in s and "tiny.dblock.onnx" in s)
    assert "--onnx=" + str(tmp_path / "regseg_tiny.dblock.onnx") in line
    assert "--plugins=build/dblock/libdblock_plugin.so" in line and "--fp16" in line


def test_tensorrt_build_of_the_dblock_graph_needs_the_plugin():
    import argparse

    args = argparse.Namespace(dblock_plugin=True, plugin=[])
    with pytest.raises(SegDeployError, match="--plugin build/dblock/libdblock_plugin.so"):
        dblock.check_engine_args(args, "tensorrt")
    dblock.check_engine_args(args, "onnxruntime")  # no TensorRT build: nothing to load
