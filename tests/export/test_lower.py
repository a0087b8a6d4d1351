"""Export rewrites for old TensorRT releases: each one computes what the original graph computes
(ONNX Runtime on both), and the pyramid model exported for 8.2 gives PyTorch's labels."""

import copy
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from segdeploy.engines import onnx_reader, parser_rules  # noqa: E402
from segdeploy.export import lower  # noqa: E402


def _run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _graph_model(nodes, initializers, in_shape, in_type=TensorProto.FLOAT, opset=13):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", in_type, in_shape)],
        [helper.make_tensor_value_info("y", in_type, None)],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


@pytest.mark.parametrize("k", [2, 4, 8])
def test_cubic_downsampling_becomes_an_equal_convolution(k):
    scales = numpy_helper.from_array(np.array([1, 1, 1.0 / k, 1.0 / k], np.float32), "s")
    resize = helper.make_node(
        "Resize",
        ["x", "", "s"],
        ["y"],
        name="down",
        mode="cubic",
        coordinate_transformation_mode="half_pixel",
        cubic_coeff_a=-0.75,
    )
    model = _graph_model([resize], [scales], [2, 3, 6 * k, 10 * k])
    x = np.random.default_rng(k).standard_normal((2, 3, 6 * k, 10 * k)).astype(np.float32)
    expected = _run(model, {"x": x})
    lowered = copy.deepcopy(model)
    assert lower.cubic_downsample_to_conv(lowered) == ["down"]
    ops = [n.op_type for n in lowered.graph.node]
    assert "Resize" not in ops and "Conv" in ops
    got = _run(lowered, {"x": x})
    assert got.shape == expected.shape == (2, 3, 6, 10)
    # the same arithmetic in another order: equal to float32 rounding
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
    assert lower.cubic_weights(-0.75, 0.5).sum() == pytest.approx(1.0)


def test_resizes_that_are_not_exact_downsampling_stay():
    def resize(scale, mode="cubic"):
        s = numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "s")
        node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode=mode)
        return _graph_model([node], [s], [1, 3, 24, 24])

    for model in (resize(1 / 3.0), resize(2.0), resize(0.5, "linear")):
        assert lower.cubic_downsample_to_conv(model) == []


def test_batchnorm_becomes_mul_add():
    rng = np.random.default_rng(0)
    c = 8
    stats = [
        numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.uniform(-1, 1, c).astype(np.float32), "beta"),
        numpy_helper.from_array(rng.uniform(-1, 1, c).astype(np.float32), "mean"),
        numpy_helper.from_array(rng.uniform(1e-4, 2, c).astype(np.float32), "var"),
    ]
    bn = helper.make_node(
        "BatchNormalization", ["x", "gamma", "beta", "mean", "var"], ["y"], name="bn", epsilon=1e-5
    )
    model = _graph_model([bn], stats, [2, c, 5, 7])
    x = rng.standard_normal((2, c, 5, 7)).astype(np.float32)
    lowered = copy.deepcopy(model)
    assert lower.batchnorm_to_mul_add(lowered) == 1
    assert [n.op_type for n in lowered.graph.node] == ["Mul", "Add"]
    assert {t.name for t in lowered.graph.initializer} == {"bn_scale", "bn_shift"}
    np.testing.assert_allclose(_run(lowered, {"x": x}), _run(model, {"x": x}), rtol=1e-5, atol=1e-5)


def test_fp16_clip_becomes_relu_min_or_max_min():
    def clip(lo, hi):
        bounds = [
            numpy_helper.from_array(np.array(lo, np.float16), "lo"),
            numpy_helper.from_array(np.array(hi, np.float16), "hi"),
        ]
        node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="relu6")
        return _graph_model([node], bounds, [1, 4, 6, 6], in_type=TensorProto.FLOAT16)

    x = (np.random.default_rng(1).standard_normal((1, 4, 6, 6)) * 5).astype(np.float16)
    for lo, ops in ((0.0, ["Relu", "Min"]), (-1.5, ["Max", "Min"])):
        model = clip(lo, 6.0)
        lowered = copy.deepcopy(model)
        assert lower.lower_fp16_for_target(lowered, "8.2")
        assert [n.op_type for n in lowered.graph.node] == ops
        np.testing.assert_array_equal(_run(lowered, {"x": x}), _run(model, {"x": x}))
        assert not parser_rules.check_model(
            onnx_reader.parse_model(lowered.SerializeToString()), "8.2"
        )
        untouched = copy.deepcopy(model)
        assert lower.lower_fp16_for_target(untouched, "8.6") == []  # 8.5+ reads FP16 bounds
        assert [n.op_type for n in untouched.graph.node] == ["Clip"]


def _everything_model():
    """A small graph with every rewrite's pattern: BatchNorm, cubic 1/2 Resize, IR 8."""
    c = 3
    inits = [
        numpy_helper.from_array(np.full(c, v, np.float32), n)
        for n, v in (("g", 1.5), ("b", 0.25), ("m", 0.1), ("v", 0.9))
    ] + [numpy_helper.from_array(np.array([1, 1, 0.5, 0.5], np.float32), "s")]
    nodes = [
        helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["n"], name="bn"),
        helper.make_node("Resize", ["n", "", "s"], ["y"], name="down", mode="cubic"),
    ]
    model = _graph_model(nodes, inits, [1, c, 16, 16])
    model.ir_version = 8
    return model


def test_rewrites_depend_only_on_whether_the_target_predates_8_5():
    graphs = {}
    for target in ("8.2", "8.4", "8.5", "8.6", "10.0", "10.8", "11.4"):
        model = _everything_model()
        notes = lower.lower_for_target(model, target)
        graphs[target] = (model.SerializeToString(), len(notes))
    assert graphs["8.2"] == graphs["8.4"]
    assert graphs["8.5"] == graphs["8.6"] == graphs["10.0"] == graphs["10.8"] == graphs["11.4"]
    assert graphs["8.2"] != graphs["8.6"]
    old = _everything_model()
    lower.lower_for_target(old, "8.2")
    assert old.ir_version == 7 and [n.op_type for n in old.graph.node] == [
        "Mul",
        "Add",
        "Pad",
        "Conv",
    ]
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(old, {"x": x}), _run(_everything_model(), {"x": x}), atol=1e-5)


@pytest.mark.slow
def test_pyramid_exported_for_8_2_gives_pytorch_labels(tmp_path, capsys):
    """segexport --trt-version 8.2 on the pyramid model with golden weights (labels that vary):
    its two bicubic downsamplings are lowered, the FP32 and FP16 graphs pass 8.2's parser check
    as written (IR 7, no BatchNormalization), and the lowered graph gives PyTorch's labels."""
    torch = pytest.importorskip("torch")
    from segdeploy import models
    from segdeploy.export.cli import main
    from segdeploy.models.golden import deterministic_state, probe_input

    model = models.build("swiftnet_rn18_pyramid", num_classes=19).eval()
    model.load_state_dict(deterministic_state(model))
    checkpoint = tmp_path / "golden.pth"
    torch.save(model.state_dict(), str(checkpoint))
    argv = ["--model", "swiftnet_rn18_pyramid", "--checkpoint", checkpoint, "--res", "128x256"]
    argv += ["--fp16", "--out", tmp_path, "--verify-inputs", "1"]
    argv += ["--backend", "tensorrt", "--print-trtexec", "--trt-version", "8.2"]
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "2 bicubic downsampling Resize -> edge-padded depthwise convolution" in out
    assert "trtexec" in out

    for name in ("swiftnet_rn18_pyramid.onnx", "swiftnet_rn18_pyramid.fp16.onnx"):
        path = tmp_path / name
        written = onnx_reader.read_model(path)
        assert written.ir_version == 7
        assert not any(n.attributes.get("mode") == "cubic" for n in written.graph.nodes)
        assert "BatchNormalization" not in {n.op_type for n in written.graph.nodes}
        notes = parser_rules.check_graph(path, "8.2", "fp16" if "fp16" in name else "fp32")
        assert any("int32" in n for n in notes)

    x = probe_input((1, 3, 128, 256))
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy().argmax(1)
    assert len(np.unique(reference)) >= 5  # labels that vary, so agreement means something
    proto = onnx.load(str(tmp_path / "swiftnet_rn18_pyramid.onnx"))
    labels = _run(proto, {proto.graph.input[0].name: x})
    assert labels.shape == reference.shape
    assert (labels == reference).mean() >= 0.999
    with open(tmp_path / "report.json") as f:
        parity = json.load(f)["parity_fp32"]
    assert parity["label_agreement"] >= 0.999


def test_engine_sidecar_records_the_label_dtype_the_engine_returns():
    from segdeploy import card as card_mod

    card = {"output": {"name": "labels", "kind": "labels", "dtype": "int64"}}
    for trt_dtype in ("int32", "int64"):  # what an 8.x / a 10.x engine's labels tensor is
        info = {"backend": "tensorrt", "outputs": [{"name": "labels", "dtype": trt_dtype}]}
        assert card_mod.with_engine(card, info)["output"]["dtype"] == trt_dtype
    assert card["output"]["dtype"] == "int64"  # the ONNX's own card is left alone
    onnxruntime_engine = {"backend": "onnxruntime"}
    assert card_mod.with_engine(card, onnxruntime_engine)["output"]["dtype"] == "int64"


def test_trt_version_alone_targets_that_release(tmp_path, capsys):
    """--trt-version names the device even for a host-only export: the ONNX is rewritten and
    checked for it (SwiftNet's decoder BatchNorms -> Mul+Add), and still verified here."""
    pytest.importorskip("torch")
    from segdeploy.export.cli import main

    argv = ["--model", "swiftnet_tiny", "--res", "64x128", "--out", tmp_path]
    argv += ["--backend", "onnxruntime", "--trt-version", "8.2", "--verify-inputs", "1"]
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "BatchNormalization without a convolution before them -> Mul+Add" in out
    assert "TensorRT 8.2 parser check of swiftnet_tiny.onnx" in out
    written = onnx_reader.read_model(tmp_path / "swiftnet_tiny.onnx")
    assert "BatchNormalization" not in {n.op_type for n in written.graph.nodes}
    assert (tmp_path / "swiftnet_tiny.ort").is_file()  # the host's engine from the same graph
