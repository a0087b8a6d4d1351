"""The D-block kernel on a real GPU against the host build (skipped without a CUDA device)."""

import ctypes
import os
import re

import pytest

from segdeploy.plugins.dblock import compile_check, gpu_check

HERE = os.path.dirname(compile_check.__file__)


def _driver_present():
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.mark.gpu
@pytest.mark.parametrize("dilations", [(1, 2), (1, 14)])
def test_kernel_matches_host_build_on_gpu(dilations):
    # Batch 2, odd sizes: partial tiles in both directions, unaligned pairs, both halves.
    report = gpu_check.run(2, 256, 19, 33, dilations, repeats=3)
    assert [r["precision"] for r in report["results"]] == ["fp32", "fp16"]
    for r in report["results"]:
        assert r["matches_host"], r
        assert r["median_ms"] > 0


def test_launch_geometry_matches_the_kernel_source():
    with open(os.path.join(HERE, "dblock_kernel.cu")) as f:
        source = f.read()
    pix = int(re.search(r"static const int kPix = (\d+);", source).group(1))
    rows = int(re.search(r"static const int kBlockRows = (\d+);", source).group(1))
    assert (gpu_check.PIX, gpu_check.BLOCK_ROWS) == (pix, rows)
    assert compile_check.THREADS_PER_BLOCK == 32 * rows


@pytest.mark.parametrize("shape", [(1, 256, 64, 128), (2, 64, 19, 33), (3, 32, 1, 1)])
def test_launch_grid_covers_every_output_once(shape):
    n, c, h, w = shape
    grid, block = gpu_check.launch_grid(n, c, h, w)
    assert block == (32, 4, 1)
    # Each block covers 64 columns, 4 rows, one (image, group); a tile fewer would miss outputs.
    assert grid[0] * 64 >= w > (grid[0] - 1) * 64
    assert grid[1] * 4 >= h > (grid[1] - 1) * 4
    assert grid[2] == n * c // 16


def test_launch_cost_of_regseg_block():
    # 1 x 256 x 64 x 128 (RegSeg 1/16 at 1024x2048): 2 * 8192 px * 256 ch * 144 MACs.
    flops, nbytes = gpu_check.launch_cost(1, 256, 64, 128, 2)
    assert flops == 2 * 64 * 128 * 256 * 144
    assert nbytes == 2 * (2 * 64 * 128 * 256 + 256 * 144 + 256)


@pytest.mark.skipif(_driver_present(), reason="a CUDA driver is present here")
def test_no_driver_is_one_clear_line(capsys):
    assert gpu_check.main(["--res", "8x8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA driver" in err[0]
