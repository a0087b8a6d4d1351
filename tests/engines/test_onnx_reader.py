"""The minimal ONNX reader against files written by the onnx package (many shapes of graph)."""

import json

import numpy as np
import pytest

from segdeploy.engines import onnx_reader
from segdeploy.errors import SegDeployError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _save(tmp_path, model, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _assert_same_as_onnx(path):
    """Every field the reader decodes equals what the onnx package loads."""
    ref = onnx.load(str(path))
    got = onnx_reader.read_model(path)
    assert got.ir_version == ref.ir_version
    assert got.opset_import == {o.domain: o.version for o in ref.opset_import}
    assert got.producer_name == ref.producer_name
    assert got.metadata == {p.key: p.value for p in ref.metadata_props}
    assert onnx_reader.read_metadata(path) == got.metadata
    _assert_graph(got.graph, ref.graph)
    return got


def _assert_graph(got, ref):
    assert got.name == ref.name
    assert len(got.nodes) == len(ref.node)
    for g, r in zip(got.nodes, ref.node):
        assert (g.op_type, g.domain, g.name) == (r.op_type, r.domain, r.name)
        assert g.inputs == list(r.input) and g.outputs == list(r.output)
        assert set(g.attributes) == {a.name for a in r.attribute}
        for a in r.attribute:
            _assert_value(g.attributes[a.name], helper.get_attribute_value(a), a)
    assert set(got.initializers) == {t.name for t in ref.initializer}
    for t in ref.initializer:
        _assert_tensor(got.initializers[t.name], t)
    for gv, rv in zip(got.inputs + got.outputs, list(ref.input) + list(ref.output)):
        assert gv.name == rv.name
        assert gv.elem_type == rv.type.tensor_type.elem_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in rv.type.tensor_type.shape.dim
        )
        if not rv.type.tensor_type.HasField("shape"):
            dims = None
        assert gv.dims == dims
    assert len(got.inputs) == len(ref.input) and len(got.outputs) == len(ref.output)


def _assert_tensor(got, ref):
    assert got.data_type == ref.data_type
    assert got.dims == tuple(ref.dims)
    expected = numpy_helper.to_array(ref)
    if got.values is None:
        assert expected.size > onnx_reader.SMALL_TENSOR_ELEMENTS
    else:
        assert got.values.dtype == expected.dtype
        np.testing.assert_array_equal(got.values, expected)


def _assert_value(got, ref, attr):
    if attr.type == onnx.AttributeProto.GRAPH:
        _assert_graph(got, ref)
    elif attr.type == onnx.AttributeProto.GRAPHS:
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            _assert_graph(g, r)
    elif attr.type == onnx.AttributeProto.TENSOR:
        _assert_tensor(got, ref)
    elif attr.type == onnx.AttributeProto.TENSORS:
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            _assert_tensor(g, r)
    elif attr.type == onnx.AttributeProto.STRING:
        assert got == ref.decode()
    elif attr.type == onnx.AttributeProto.STRINGS:
        assert got == [s.decode() for s in ref]
    elif attr.type == onnx.AttributeProto.FLOAT:
        assert got == pytest.approx(ref) and isinstance(got, float)
    elif attr.type == onnx.AttributeProto.FLOATS:
        assert got == pytest.approx(list(ref))
    else:
        assert got == (list(ref) if isinstance(ref, (list, tuple)) else ref)


def _tensor_kinds():
    rng = np.random.default_rng(0)
    yield numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w_raw")
    # typed fields instead of raw_data: float_data, int64_data, int32_data (float16 bits), double
    yield helper.make_tensor("f_typed", TensorProto.FLOAT, [2, 2], [0.5, -1.0, 3.25, 1e-7])
    yield helper.make_tensor("i64_typed", TensorProto.INT64, [3], [-(2**40), 0, 7])
    yield helper.make_tensor("i32_typed", TensorProto.INT32, [2], [-5, 2**31 - 1])
    yield helper.make_tensor(
        "f16_typed", TensorProto.FLOAT16, [3], np.array([0.0, 6.0, -2.5], np.float16)
    )
    yield helper.make_tensor("d_typed", TensorProto.DOUBLE, [2], [1.0 / 3, -2.0])
    yield helper.make_tensor("b_typed", TensorProto.BOOL, [2], [True, False])
    yield helper.make_tensor("u8_typed", TensorProto.UINT8, [2], [0, 255])
    yield numpy_helper.from_array(np.array([0.0, 6.0], np.float16), "f16_raw")
    yield numpy_helper.from_array(np.array(3, np.int64), "scalar_raw")
    yield numpy_helper.from_array(np.zeros((0, 4), np.float32), "empty")
    yield numpy_helper.from_array(np.ones((65, 65), np.float32), "big")  # > SMALL: no values


def test_every_attribute_and_tensor_kind(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"], name="inner")],
        "body",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    node = helper.make_node(
        "Custom",
        ["a", "", "w_raw"],
        ["b"],
        name="everything",
        domain="com.example",
        f=0.25,
        f_zero=0.0,
        i=-3,
        i_zero=0,
        big_i=2**62,
        s="nearest",
        empty_s="",
        t=numpy_helper.from_array(np.array([1.5, -2.0], np.float32), "t"),
        g=body,
        floats=[1.0, -0.5],
        ints=[-1, 0, 2**40],
        strings=["a", "bé"],
        tensors=[numpy_helper.from_array(np.arange(3, dtype=np.int64), "t0")],
        graphs=[body, body],
    )
    graph = helper.make_graph(
        [node, helper.make_node("Relu", ["b"], ["c"])],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3, 8, None])],
        [
            helper.make_tensor_value_info("c", TensorProto.FLOAT16, [1, 2]),
            helper.make_tensor_value_info("lbl", TensorProto.INT64, None),
        ],
        initializer=list(_tensor_kinds()),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 2)],
        producer_name="test",
    )
    helper.set_model_props(model, {"segdeploy.card": '{"k": "välue"}', "other": ""})
    got = _assert_same_as_onnx(_save(tmp_path, model))
    assert got.opset == 17
    assert got.graph.outputs[1].dims is None  # no shape at all is not "a scalar"
    assert got.graph.inputs[0].dims == ("N", 3, 8, None)
    assert got.graph.initializers["f16_raw"].dtype == "float16"
    assert got.graph.initializers["big"].values is None


def test_real_exported_graph(tmp_path):
    torch = pytest.importorskip("torch")
    from segdeploy.export.onnx_export import export_onnx
    from segdeploy.models import build

    torch.manual_seed(0)
    model = build("swiftnet_tiny", num_classes=5).eval()
    path = tmp_path / "swiftnet.onnx"
    card = {"schema": "segdeploy.card/1", "model": {"name": "swiftnet_tiny"}}
    export_onnx(model, path, height=64, width=64, card=card)
    got = _assert_same_as_onnx(path)
    assert {"Conv", "Relu", "ArgMax"} <= {n.op_type for n in got.graph.nodes}
    assert got.graph.outputs[0].dtype == "int64"
    assert json.loads(onnx_reader.read_metadata(path)["segdeploy.card"]) == card


def test_ir_version_and_many_opsets(tmp_path):
    for ir, opset in ((3, 9), (6, 13), (7, 14), (8, 17), (10, 21)):
        graph = helper.make_graph(
            [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
            "clip",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4])],
            initializer=[
                numpy_helper.from_array(np.array(0, np.float16), "lo"),
                numpy_helper.from_array(np.array(6, np.float16), "hi"),
            ],
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir
        )
        got = _assert_same_as_onnx(_save(tmp_path, model, "m{}.onnx".format(ir)))
        assert got.ir_version == ir and got.opset == opset
        assert float(got.graph.initializers["hi"].values) == 6.0


def _one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_not_onnx_and_truncated_files_are_one_line(tmp_path):
    missing = tmp_path / "missing.onnx"
    with pytest.raises(SegDeployError) as exc:
        onnx_reader.read_model(missing)
    assert "cannot read" in _one_line(exc)

    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 10)
    with pytest.raises(SegDeployError) as exc:
        onnx_reader.read_metadata(text)
    assert "not" in _one_line(exc) and "ONNX" in _one_line(exc)

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    data = helper.make_model(graph).SerializeToString()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) - 5])
    with pytest.raises(SegDeployError) as exc:
        onnx_reader.read_model(cut)
    assert "not a readable ONNX model" in _one_line(exc)

    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(SegDeployError, match="not an ONNX model"):
        onnx_reader.read_model(empty)


def test_absurd_nesting_and_varints_are_refused(tmp_path):
    # A field whose declared length runs far past the end of the file.
    huge = tmp_path / "huge.onnx"
    huge.write_bytes(b"\x08\x07" + b"\x3a" + b"\xff\xff\xff\xff\x0f" + b"\x00" * 8)
    with pytest.raises(SegDeployError, match="runs past"):
        onnx_reader.read_model(huge)

    # An 11-byte varint.
    long_varint = tmp_path / "varint.onnx"
    long_varint.write_bytes(b"\x08" + b"\xff" * 11 + b"\x01")
    with pytest.raises(SegDeployError, match="10 bytes"):
        onnx_reader.read_model(long_varint)

    # Subgraphs nested past MAX_DEPTH: If nodes inside If nodes.
    leaf = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "leaf",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    inner = leaf
    for level in range(onnx_reader.MAX_DEPTH + 2):
        node = helper.make_node("If", ["c"], ["y"], then_branch=leaf, else_branch=inner)
        inner = helper.make_graph(
            [node],
            "level{}".format(level),
            [],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
    deep = _save(tmp_path, helper.make_model(inner), "deep.onnx")
    with pytest.raises(SegDeployError, match="nested more than"):
        onnx_reader.read_model(deep)
    # ...while the metadata of the same file is still readable: it never walks the graph.
    assert onnx_reader.read_metadata(deep) == {}
