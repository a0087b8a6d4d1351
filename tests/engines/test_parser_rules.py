"""The per-release ONNX parser check: its rules on small graphs, and every zoo model x {FP32,
FP16} x {8.2, 8.6, 10.x, 11.x} passing it once exported (and lowered) for that release."""

import numpy as np
import pytest

from segdeploy.engines import onnx_reader, parser_rules
from segdeploy.errors import SegDeployError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TARGETS = ["8.2", "8.6", "10.8", "11.4"]


def _model(nodes, initializers=(), opset=13, out_type=TensorProto.FLOAT, in_type=TensorProto.FLOAT):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", in_type, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", out_type, None)],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return onnx_reader.parse_model(model.SerializeToString())


def _errors(model, version):
    return [str(f) for f in parser_rules.check_model(model, version) if f.level == "error"]


def _const(name, value, dtype):
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def test_cubic_resize_needs_8_5():
    scales = _const("s", [1, 1, 0.5, 0.5], np.float32)
    model = _model(
        [helper.make_node("Resize", ["x", "", "s"], ["y"], name="r", mode="cubic")], [scales]
    )
    for version in ("8.2", "8.4"):
        (error,) = _errors(model, version)
        assert "node r (Resize)" in error and "bicubic" in error
    for version in ("8.5", "8.6", "10.0", "11.4"):
        assert _errors(model, version) == []
    linear = _model([helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear")], [scales])
    assert _errors(linear, "8.2") == []


def test_fp16_clip_bounds_are_misread_before_8_5():
    def clip(dtype, in_type):
        nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="relu6")]
        bounds = [_const("lo", 0, dtype), _const("hi", 6, dtype)]
        return _model(nodes, bounds, in_type=in_type, out_type=in_type)

    half = clip(np.float16, TensorProto.FLOAT16)
    errors = _errors(half, "8.2")
    assert len(errors) == 2 and all("float16" in e and "float32 bytes" in e for e in errors)
    assert _errors(half, "8.5") == [] and _errors(half, "10.8") == []
    assert _errors(clip(np.float32, TensorProto.FLOAT), "8.2") == []


def test_qdq_must_be_symmetric_int8():
    def qdq(zero, scale=0.1):
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq"),
        ]
        return _model(nodes, [_const("s", scale, np.float32), zero])

    for version in TARGETS:  # what segexport --int8 writes
        assert _errors(qdq(_const("z", 0, np.int8)), version) == []
    for version in ("8.6", "10.8", "11.4"):  # read as INT8: 128..255 saturate, silently
        errors = _errors(qdq(_const("z", 0, np.uint8)), version)
        assert len(errors) == 2 and all("UINT8 zero point" in e for e in errors), errors
    assert any("uint8" in e for e in _errors(qdq(_const("z", 0, np.uint8)), "8.2"))
    shifted = _errors(qdq(_const("z", 3, np.int8)), "10.8")
    assert len(shifted) == 2 and all("symmetric" in e for e in shifted)
    assert all("positive" in e for e in _errors(qdq(_const("z", 0, np.int8), -0.1), "8.2"))


def test_computed_clip_bounds_on_half_data_before_8_5():
    nodes = [
        helper.make_node("Identity", ["lo0"], ["lo"]),
        helper.make_node("Clip", ["x", "lo", ""], ["y"]),
    ]
    model = _model(
        nodes,
        [_const("lo0", 0, np.float16)],
        in_type=TensorProto.FLOAT16,
        out_type=TensorProto.FLOAT16,
    )
    (error,) = _errors(model, "8.2")
    assert "FLOAT or INT32" in error and "float16" in error
    assert _errors(model, "8.6") == []


def test_ops_opsets_types_and_outputs_per_release():
    gelu = _model([helper.make_node("Gelu", ["x"], ["y"])], opset=20)
    assert any("no importer in TensorRT 8.6" in e for e in _errors(gelu, "8.6"))
    assert any("opset 20 is newer" in e and "<= 17" in e for e in _errors(gelu, "8.6"))
    assert _errors(gelu, "10.8") == []
    hardswish = _model([helper.make_node("HardSwish", ["x"], ["y"])])
    assert _errors(hardswish, "8.2") and not _errors(hardswish, "8.4")
    layernorm = _model([helper.make_node("LayerNormalization", ["x", "x"], ["y"])])
    assert _errors(layernorm, "8.5") and not _errors(layernorm, "8.6")
    assert not _errors(layernorm, "9.3") and not _errors(layernorm, "11.4")
    assert any(
        "<= 13" in e
        for e in _errors(_model([helper.make_node("Relu", ["x"], ["y"])], opset=17), "8.2")
    )

    u8 = _model([helper.make_node("Add", ["x", "c"], ["y"])], [_const("c", [1], np.uint8)])
    assert any("'c' is uint8" in e for e in _errors(u8, "8.2"))
    assert _errors(u8, "8.6") == []
    cast = _model(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.BFLOAT16)],
        out_type=TensorProto.BFLOAT16,
    )
    assert any("Cast to bfloat16" in e for e in _errors(cast, "8.6"))
    assert _errors(cast, "10.0") == []
    big = _model([helper.make_node("Add", ["x", "c"], ["y"])], [_const("c", [2**40], np.int64)])
    assert any("beyond int32" in e for e in _errors(big, "8.6")) and _errors(big, "10.0") == []

    argmax = _model(
        [helper.make_node("ArgMax", ["x"], ["y"], axis=1, keepdims=0)], out_type=TensorProto.INT64
    )
    notes = [str(f) for f in parser_rules.check_model(argmax, "8.2")]
    assert any("int32" in n for n in notes) and _errors(argmax, "8.2") == []
    assert parser_rules.check_model(argmax, "10.0") == []
    pool = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], dilations=[2, 2])
    assert all(any("dilations" in e for e in _errors(_model([pool]), v)) for v in TARGETS)
    custom = _model([helper.make_node("DBlock", ["x"], ["y"], domain="segdeploy")])
    assert [f.level for f in parser_rules.check_model(custom, "8.2")] == ["note"]


def test_label_dtype_each_engine_returns():
    assert parser_rules.engine_output_dtype("int64", "8.2") == "int32"
    assert parser_rules.engine_output_dtype("int64", (8, 6)) == "int32"
    assert parser_rules.engine_output_dtype("int64", "10.0.1") == "int64"
    assert parser_rules.engine_output_dtype("int64", "11.4") == "int64"
    assert parser_rules.engine_output_dtype("float32", "8.2") == "float32"


def test_check_graph_is_one_line_and_versions_are_checked(tmp_path):
    scales = numpy_helper.from_array(np.array([1, 1, 0.25, 0.25], np.float32), "s")
    graph = helper.make_graph(
        [
            helper.make_node("Resize", ["x", "", "s"], ["a"], name="r1", mode="cubic"),
            helper.make_node("Resize", ["a", "", "s"], ["y"], name="r2", mode="cubic"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[scales],
    )
    path = tmp_path / "cubic.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(parser_rules.ParserRuleError) as exc:
        parser_rules.check_graph(path, (8, 2), "fp16")
    message = str(exc.value)
    assert "\n" not in message and "TensorRT 8.2" in message and "FP16 build" in message
    assert "node r1 (Resize)" in message and "(and 1 more)" in message
    assert isinstance(exc.value, SegDeployError)
    assert parser_rules.check_graph(path, "10.8") == []
    for bad in ("7.1", "ten", ""):
        with pytest.raises(SegDeployError):
            parser_rules.parse_version(bad)


# --- the zoo ----------------------------------------------------------------------------------

ZOO = [
    "bisenetv2",
    "ddrnet23",
    "ddrnet23_slim",
    "deeplabv3plus_mobilenet",
    "deeplabv3plus_resnet50",
    "deeplabv3plus_resnet101",
    "fchardnet70",
    "lraspp_mobilenet_v3_large",
    "pidnet_l",
    "pidnet_m",
    "pidnet_s",
    "regseg",
    "stdc1_seg",
    "stdc2_seg",
    "swiftnet_mnv2",
    "swiftnet_rn18",
    "swiftnet_rn18_pyramid",
    "ti_deeplabv3lite_mnv2",
    "ti_fpnlite_mnv2",
    "ti_unetlite_mnv2",
]


def test_zoo_list_is_the_registry():
    models = pytest.importorskip("segdeploy.models")
    assert sorted(ZOO) == models.list_models(include_tiny=False)


# The rewrites depend only on whether the target is older than 8.5 (test_lower checks that
# 10.x/11.x get exactly 8.6's graph), so the four targets share two lowered copies.
LOWERING_CLASS = {"8.2": "8.2", "8.6": "8.6", "10.8": "8.6", "11.4": "8.6"}
RAW_FP16_CHECKED = ("swiftnet_mnv2", "deeplabv3plus_mobilenet")


class _ZooExports(object):
    """Each zoo model exported once per test session (segexport's path: fold BatchNorm, export
    with ArgMax labels, FP16 copy), lowered per target as segexport does; only the parsed
    structure (onnx_reader.OnnxModel) is kept, one model at a time."""

    def __init__(self):
        self.name = None
        self.graphs = {}
        self.raw = {}

    def get(self, name, target, precision):
        if name != self.name:
            self._export(name)
        return self.graphs[(LOWERING_CLASS[target], precision)]

    def _export(self, name):
        import copy

        import torch

        from segdeploy import models
        from segdeploy.export import fold_batchnorm
        from segdeploy.export.fp16 import convert_to_fp16
        from segdeploy.export.lower import lower_for_target, lower_fp16_for_target
        from segdeploy.export.onnx_export import export_onnx

        self.name, self.graphs, self.raw = None, {}, {}
        spec = models.get_spec(name)
        size = max(spec.stride, 64)
        torch.manual_seed(0)
        with torch.no_grad():
            folded = fold_batchnorm(models.build(name).eval())
        proto = export_onnx(folded, None, height=size, width=2 * size, opset=13)["model"]
        self.raw["fp32"] = onnx_reader.parse_model(proto.SerializeToString())
        half_of_raw = None
        if name in RAW_FP16_CHECKED:
            half_of_raw = convert_to_fp16(proto)
            self.raw["fp16"] = onnx_reader.parse_model(half_of_raw.SerializeToString())
        for target in sorted(set(LOWERING_CLASS.values())):
            lowered = copy.deepcopy(proto)
            rewrites = lower_for_target(lowered, target)
            # an export no rewrite touched is the raw graph: reuse its FP16 copy
            half = convert_to_fp16(lowered) if rewrites or half_of_raw is None else half_of_raw
            if not rewrites:
                half_of_raw = half
            half = copy.deepcopy(half) if half is half_of_raw else half
            lower_fp16_for_target(half, target)
            self.graphs[(target, "fp32")] = onnx_reader.parse_model(lowered.SerializeToString())
            self.graphs[(target, "fp16")] = onnx_reader.parse_model(half.SerializeToString())
        self.name = name


@pytest.fixture(scope="module")
def zoo():
    pytest.importorskip("torch")
    return _ZooExports()


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_graphs_pass_the_parser_check_on_every_target(zoo, name):
    for target in TARGETS:
        for precision in ("fp32", "fp16"):
            model = zoo.get(name, target, precision)
            # the same verdict segexport and segbuild reach: no error, notes only
            notes = parser_rules.verdict(model, target, precision, name)
            assert all("\n" not in n for n in notes)
            ops = {n.op_type for n in model.graph.nodes}
            assert "BatchNormalization" not in ops  # exported as Mul+Add for every target
            if target == "8.2":
                assert model.ir_version <= 7
                assert not any(
                    n.op_type == "Resize" and n.attributes.get("mode") == "cubic"
                    for n in model.graph.nodes
                )
            labels = model.graph.outputs[0]
            assert (labels.name, labels.dtype) == ("labels", "int64")
            expected = "int32" if target.startswith("8.") else "int64"
            assert parser_rules.engine_output_dtype(labels.dtype, target) == expected
    # ... and the check bites: the graphs as exported before this issue fail where the issue says
    raw_errors = {p: {t: _errors(zoo.raw[p], t) for t in TARGETS} for p in zoo.raw}
    for precision in zoo.raw:
        for target in ("8.6", "10.8", "11.4"):
            assert raw_errors[precision][target] == []
    if name == "swiftnet_rn18_pyramid":
        assert len(raw_errors["fp32"]["8.2"]) == 2  # its two bicubic downsampling Resizes
    elif name in ("swiftnet_mnv2", "deeplabv3plus_mobilenet"):
        assert len(raw_errors["fp16"]["8.2"]) == 68  # 34 ReLU6 Clips, two FP16 bounds each
        assert raw_errors["fp32"]["8.2"] == []
    else:
        assert all(raw_errors[precision]["8.2"] == [] for precision in zoo.raw)
