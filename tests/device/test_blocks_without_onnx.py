"""``segbench --blocks --backends tensorrt`` on a device without onnx (Jetson TX2): the block
graphs, and the fused (1,14) graph with its DBlockConv node, are written with numpy alone
(``bench.block_onnx``), byte for byte what onnx.helper and the D-block rewrite write on the host.
The onnx-free runs block the import in a subprocess (``sys.modules['onnx'] = None``)."""

import json
import os
import subprocess
import sys

import pytest

from segdeploy.bench import block_onnx, blocks
from segdeploy.engines import onnx_reader

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BH, BW = 4, 8

WRITE = """
import json, sys
sys.modules["onnx"] = None
from segdeploy.bench import blocks
weights = dict((label, blocks.block_weights(d, 0)) for label, d in blocks.BLOCKS)
paths = blocks._write_graphs(weights, {bh}, {bw}, sys.argv[1])
print(json.dumps(paths))
"""


def _run(code, *args):
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-c", code] + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        env=env,
        timeout=300,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_bytes_equal_what_onnx_writes():
    pytest.importorskip("onnx")  # the host side of the comparison
    from segdeploy.engines.dblock_graph import fuse_dblocks

    for _, dilations in blocks.BLOCKS:
        weights = blocks.block_weights(dilations, 0)
        proto = blocks.onnx_block(dilations, weights, BH, BW)
        assert block_onnx.block_bytes(dilations, weights, BH, BW) == proto.SerializeToString()
        if dilations == (1, 14):
            fused, summary = fuse_dblocks(proto)
            assert len(summary["fused"]) == 1
            mine = block_onnx.block_bytes(dilations, weights, BH, BW, fused=True)
            assert mine == fused.SerializeToString()


def test_graphs_are_written_without_onnx(tmp_path):
    code, out, err = _run(WRITE.format(bh=BH, bw=BW), str(tmp_path))
    assert code == 0, err[-2000:]
    paths = json.loads(out)
    assert sorted(paths) == sorted([label for label, _ in blocks.BLOCKS] + [blocks.FUSED])
    fused = onnx_reader.read_model(paths[blocks.FUSED])
    plugin = [n for n in fused.graph.nodes if n.op_type == "DBlockConv"]
    assert len(plugin) == 1 and plugin[0].domain == "trt.plugins"
    assert not any(n.op_type in ("Split", "Concat") for n in fused.graph.nodes)
    y = onnx_reader.read_model(paths["Y block"])
    assert [list(v.dims) for v in y.graph.inputs] == [[1, blocks.WIDTH, BH, BW]]
    try:  # where onnx is installed: the same bytes as the onnx path of the same function
        import onnx  # noqa: F401
    except ImportError:
        return
    weights = dict((label, blocks.block_weights(d, 0)) for label, d in blocks.BLOCKS)
    os.makedirs(str(tmp_path / "ref"))
    ref = blocks._write_graphs(weights, BH, BW, str(tmp_path / "ref"))
    for label, path in paths.items():
        with open(path, "rb") as a, open(ref[label], "rb") as b:
            assert a.read() == b.read(), label


SEGBENCH = """
import sys
sys.modules["onnx"] = None
from segdeploy.bench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_segbench_blocks_tensorrt_never_asks_for_onnx(tmp_path):
    args = ["--blocks", "--backends", "tensorrt", "--res", "64x128", "--iters", "2"]
    code, out, err = _run(SEGBENCH, *args)
    assert "onnx is not installed" not in err and "Traceback" not in err, err[-2000:]
    if code != 0:  # no TensorRT or no GPU here: the one-line reason, and it is not onnx
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "segbench: error: " in lines[0], err
        assert "TensorRT" in lines[0] or "CUDA" in lines[0]


@pytest.mark.tensorrt
def test_segbench_blocks_on_tensorrt_without_onnx(tmp_path):
    out = tmp_path / "blocks.json"
    args = ["--blocks", "--backends", "tensorrt", "--res", "256x512", "--iters", "3"]
    code, _, err = _run(SEGBENCH, *(args + ["--warmup", "1", "--json", str(out)]))
    assert code == 0, err[-3000:]
    with open(str(out)) as f:
        (result,) = json.load(f)["results"]
    labels = [row["block"] for row in result["rows"]]
    assert [label for label, _ in blocks.BLOCKS] == labels[: len(blocks.BLOCKS)]
