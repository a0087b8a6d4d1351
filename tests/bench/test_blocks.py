"""segbench --blocks: the RegSeg paper's Table 1 on this machine (torch, onnxruntime).

No timing is asserted (the machine is shared): the tests check what the table is made of, that
the ONNX blocks compute RegSeg's DBlock, that the fused row computes the (1,14) block, and the
CLI's output files and errors.
"""

import csv
import json
import os

import numpy as np
import pytest
import torch

from segdeploy.bench import blocks
from segdeploy.bench.cli import main


@pytest.mark.parametrize("dilations", [None, (1, 4), (1, 14)])
def test_onnx_block_computes_regseg_dblock(dilations):
    import onnxruntime as ort

    weights = blocks.block_weights(dilations, seed=3)
    x = blocks.block_input(6, 20)
    proto = blocks.onnx_block(dilations, weights, 6, 20)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    with torch.no_grad():
        expected = blocks.torch_block(dilations, weights)(torch.from_numpy(x)).numpy()
    assert np.abs(expected).max() > 0.1 and (expected == 0).any()  # not degenerate; ReLU'd
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_the_d_blocks_have_the_split_the_y_block_has_not():
    def ops(dilations):
        proto = blocks.onnx_block(dilations, blocks.block_weights(dilations), 4, 4)
        return [n.op_type for n in proto.graph.node]

    assert "Split" not in ops(None) and ops(None).count("Conv") == 5
    assert ops((1, 1)).count("Split") == 1 and ops((1, 1)).count("Conv") == 6


def test_interleaving_rotates_the_first_block():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    samples = blocks.time_interleaved(calls, warmup=1, iters=4)
    assert {k: len(v) for k, v in samples.items()} == {"a": 4, "b": 4, "c": 4}
    timed = order[3:]  # after one warm-up round
    assert [timed[i * 3] for i in range(4)] == ["a", "b", "c", "a"]


def test_rows_ratio_is_paired_and_paper_column_is_table_1():
    samples = {"Y block": [1.0, 2.0, 4.0], "D block (1,4)": [1.5, 3.0, 6.0]}
    rows = {r["block"]: r for r in blocks.rows_for(samples)}
    assert rows["Y block"]["ratio"] == 1.0
    assert rows["D block (1,4)"]["ratio"] == pytest.approx(1.5)
    assert [
        rows[b]["paper_ratio"] for b in ("D block (1,1)", "D block (1,4)", "D block (1,10)")
    ] == [
        1.1,
        1.2,
        1.2,
    ]
    assert rows["D block (1,14)"]["paper_ms"] is None and rows["D block (1,14)"]["n"] == 0


def test_segbench_blocks_torch_and_onnxruntime(tmp_path, capsys):
    out_json, out_csv = tmp_path / "t1.json", tmp_path / "t1.csv"
    argv = ["--blocks", "--res", "128x256", "--backends", "torch,onnxruntime"]
    argv += ["--warmup", "0", "--iters", "2"]
    code = main(argv + ["--json", str(out_json), "--csv", str(out_csv)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("RegSeg Table 1") == 2 and "not a speed proxy" in out
    data = json.loads(out_json.read_text())
    results = {r["backend"]: r for r in data["results"]}
    assert set(results) == {"torch", "onnxruntime"}
    for result in results.values():
        assert result["block_hw"] == [8, 16]
        rows = {r["block"]: r for r in result["rows"]}
        assert rows["Y block"]["ratio"] == 1.0
        for label, _ in blocks.BLOCKS:
            assert rows[label]["n"] == 2 and rows[label]["median_ms"] > 0
    fused = {r["block"]: r for r in results["onnxruntime"]["rows"]}[blocks.FUSED]
    assert fused["n"] > 0 and fused["ratio"] is None  # timed, but no ratio: not a speed proxy
    assert fused["max_abs_diff"] <= 1e-5 * fused["max_abs_output"]
    torch_fused = {r["block"]: r for r in results["torch"]["rows"]}[blocks.FUSED]
    assert torch_fused["n"] == 0 and "no PyTorch engine" in torch_fused["note"]
    with open(str(out_csv)) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * (len(blocks.BLOCKS) + 1)
    assert {r["backend"] for r in rows} == {"torch", "onnxruntime"}


@pytest.mark.parametrize(
    "res, needle",
    [("100x100", "multiple of the model's stride 16"), ("256x512,512x1024", "one --res")],
)
def test_segbench_blocks_bad_res(res, needle, capsys):
    code = main(["--blocks", "--res", res])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


@pytest.mark.tensorrt
def test_segbench_blocks_tensorrt(tmp_path):
    """On a GPU with TensorRT: the standard blocks build and run; the fused row needs the plugin
    library, named by SEGDEPLOY_DBLOCK_PLUGIN (built by the plugin's CMake)."""
    plugin = os.environ.get("SEGDEPLOY_DBLOCK_PLUGIN")
    result = blocks.run_backend("tensorrt", 256, 512, 2, 5, plugins=[plugin] if plugin else [])
    rows = {r["block"]: r for r in result["rows"]}
    assert all(rows[label]["n"] == 5 for label, _ in blocks.BLOCKS)
    if plugin:
        assert rows[blocks.FUSED]["max_abs_diff"] <= 2e-2 * rows[blocks.FUSED]["max_abs_output"]


def test_segbench_plugin_is_for_tensorrt_plans(tmp_path, capsys):
    engine = tmp_path / "regseg.onnx"
    engine.write_bytes(b"")
    code = main(["--engine", str(engine), "--plugin", "libdblock_plugin.so"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not a TensorRT plan" in err[0], err


def test_fp16_typed_block_graphs_keep_the_fused_row(tmp_path):
    """TensorRT 11 builds FP16 from FP16-typed graphs: the rewrite must still find the block."""
    import onnx
    from onnx import TensorProto

    weights = {label: blocks.block_weights(d) for label, d in blocks.BLOCKS}
    paths = blocks._write_graphs(weights, 4, 8, str(tmp_path), fp16_typed=True)
    fused = onnx.load(paths[blocks.FUSED])
    node = next(n for n in fused.graph.node if n.op_type == "DBlockConv")
    init = {t.name: t for t in fused.graph.initializer}
    assert init[node.input[1]].data_type == TensorProto.FLOAT16
    assert fused.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # FP32 I/O
    assert sorted(paths) == sorted([b[0] for b in blocks.BLOCKS] + [blocks.FUSED])
