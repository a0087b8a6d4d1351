"""The protobuf reader and the TensorRT parser check under Python 3.6 (numpy 1.19, no onnx, no
protobuf), as segbuild runs them on a Jetson TX2: what 3.6 reads from graphs the host wrote
equals what the onnx package reads, and the 8.2 check refuses what 8.2's parser cannot take.

Skipped, with the reason, where the lane's ``.venv36`` does not exist.
"""

import json

import numpy as np
import pytest
from py36_support import needs_lane, run36

pytestmark = needs_lane

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# Runs under 3.6 in a directory outside the repository, so segdeploy is the installed copy.
DUMP = """
import json, sys
from segdeploy.engines import onnx_reader, parser_rules
out = {}
for path in sys.argv[1:]:
    m = onnx_reader.read_model(path)
    g = m.graph
    checks = {}
    for version in ("8.2", "8.6", "10.8"):
        try:
            checks[version] = ["ok"] + parser_rules.check_graph(path, version)
        except parser_rules.ParserRuleError as exc:
            checks[version] = ["refused", str(exc)]
    out[path] = {
        "ir": m.ir_version, "opsets": m.opset_import, "metadata": onnx_reader.read_metadata(path),
        "nodes": [[n.op_type, n.name, n.inputs, n.outputs, sorted(n.attributes)] for n in g.nodes],
        "inits": {k: [t.data_type, list(t.dims), None if t.values is None else t.values.tolist()]
                  for k, t in g.initializers.items()},
        "io": [[v.name, v.elem_type, list(v.dims) if v.dims is not None else None]
               for v in g.inputs + g.outputs],
        "checks": checks,
    }
print(json.dumps(out))
"""


def _run36(paths, cwd):
    proc = run36(["-c", DUMP] + [str(p) for p in paths], cwd, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _graphs(tmp_path):
    """A bicubic downsampling (8.2 refuses), an FP16 ReLU6 (8.2 misreads), a tiny exported
    segmentation graph with its card (every release takes it)."""
    paths = []
    scales = numpy_helper.from_array(np.array([1, 1, 0.5, 0.5], np.float32), "scales")
    cubic = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="down", mode="cubic")],
        "cubic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 16])],
        initializer=[scales],
    )
    bounds = [
        numpy_helper.from_array(np.array(0, np.float16), "lo"),
        numpy_helper.from_array(np.array(6, np.float16), "hi"),
    ]
    relu6 = helper.make_graph(
        [helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="relu6")],
        "relu6",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 8, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 8, "H", "W"])],
        initializer=bounds,
    )
    for name, graph in (("cubic.onnx", cubic), ("relu6.onnx", relu6)):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 7
        helper.set_model_props(model, {"segdeploy.card": '{"x": 1}'})
        onnx.save(model, str(tmp_path / name))
        paths.append(tmp_path / name)
    torch = pytest.importorskip("torch")
    from segdeploy import models
    from segdeploy.export.onnx_export import export_onnx

    torch.manual_seed(0)
    tiny = models.build("regseg_tiny", num_classes=5).eval()
    export_onnx(tiny, str(tmp_path / "tiny.onnx"), height=32, width=64, card=None)
    paths.append(tmp_path / "tiny.onnx")
    return paths


def test_reader_and_parser_check_under_python36(tmp_path):
    paths = _graphs(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    got = _run36(paths, outside)
    for path in paths:
        ref = onnx.load(str(path))
        mine = got[str(path)]
        assert mine["ir"] == ref.ir_version
        assert mine["opsets"] == {o.domain: o.version for o in ref.opset_import}
        assert mine["metadata"] == {p.key: p.value for p in ref.metadata_props}
        assert mine["nodes"] == [
            [n.op_type, n.name, list(n.input), list(n.output), sorted(a.name for a in n.attribute)]
            for n in ref.graph.node
        ]
        for t in ref.graph.initializer:
            data_type, dims, values = mine["inits"][t.name]
            assert (data_type, dims) == (t.data_type, list(t.dims))
            if values is not None:
                np.testing.assert_array_equal(values, numpy_helper.to_array(t).tolist())
        io = list(ref.graph.input) + list(ref.graph.output)
        assert [v[0] for v in mine["io"]] == [v.name for v in io]
        assert [v[1] for v in mine["io"]] == [v.type.tensor_type.elem_type for v in io]

    cubic, relu6, tiny = (got[str(p)]["checks"] for p in paths)
    assert cubic["8.2"][0] == "refused" and "bicubic Resize" in cubic["8.2"][1]
    assert relu6["8.2"][0] == "refused" and "float32 bytes" in relu6["8.2"][1]
    for checks in (cubic, relu6, tiny):
        assert checks["8.6"][0] == checks["10.8"][0] == "ok"
    assert tiny["8.2"][0] == "ok" and any("int32" in n for n in tiny["8.2"][1:])
    assert got[str(paths[1])]["io"][0][2] == [1, 8, "H", "W"]
