"""The fused head in PyTorch equals the host build (CPU here, CUDA where a GPU is); the CUDA
kernel and the TensorRT plugin on a real GPU (skipped without one, never faked)."""

import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segdeploy.plugins.seghead import compile_check, host, torch_head  # noqa: E402

HERE = os.path.dirname(compile_check.__file__)


def planted(seed, classes, h, w):
    from segdeploy.plugins.seghead.gpu_check import planted_logits

    return planted_logits(np.random.default_rng(seed), 2, classes, h, w)


@pytest.mark.parametrize("classes", [1, 2, 19, 150])
@pytest.mark.parametrize("factor", [4, 8, 2.37])
@pytest.mark.parametrize("align_corners", [False, True])
def test_torch_fused_equals_host_build_on_cpu(classes, factor, align_corners):
    x = planted(classes + int(factor * 10), classes, 11, 15)
    out = (int(11 * factor), int(15 * factor))
    want, slow = host.seg_head(x, out, align_corners, return_slow=True)
    got, tslow = torch_head.fused_head(torch.from_numpy(x), out, align_corners, return_slow=True)
    np.testing.assert_array_equal(got.numpy(), want)
    assert tslow == slow


def test_axis_taps_match_the_kernel_formula():
    # Half-pixel at x4: output 0 maps to -0.375, clamped to 0 (sources 0 and 1, all weight on
    # 0); output 6 maps to 6.5 / 4 - 0.5 = 1.125 -> sources 1 and 2, 0.125 of the weight on 2.
    i1, i2, d1, d2 = torch_head.axis_taps(8, 32)
    assert (i1[0], i2[0], d1[0], d2[0]) == (0, 1, 0.0, 1.0)
    assert (i1[6], i2[6], d1[6], d2[6]) == (1, 2, 0.125, 0.875)
    # The last source: i1 == i2, both weights 0.5 (ONNX Runtime's convention).
    assert (i1[-1], i2[-1], d1[-1], d2[-1]) == (7, 7, 0.5, 0.5)
    i1, _, d1, _ = torch_head.axis_taps(8, 29, align_corners=True)
    assert (i1[-1], d1[-1]) == (7, 0.5) and i1[4] == 1 and d1[4] == np.float32(4 * 7) / 28 - 1


def test_launch_geometry_matches_the_kernel_source():
    from segdeploy.plugins.seghead import gpu_check

    with open(os.path.join(HERE, "seghead_kernel.cu")) as f:
        source = f.read()
    pix = int(re.search(r"static const int kPix = (\d+);", source).group(1))
    rows = int(re.search(r"static const int kTileH = (\d+);", source).group(1))
    region = int(re.search(r"static const int kRegion = (\d+);", source).group(1))
    assert (gpu_check.PIX, gpu_check.TILE_H) == (pix, rows)
    assert compile_check.THREADS_PER_BLOCK == 32 * rows
    assert compile_check.SHARED_BYTES == 2 * region  # int16 source labels
    assert set(gpu_check.KERNELS.values()) == set(compile_check.KERNELS)


@pytest.mark.gpu
def test_torch_fused_equals_host_build_on_cuda():
    for seed, classes in ((0, 19), (1, 150)):
        x = planted(seed, classes, 14, 19)
        for align_corners in (False, True):
            want = host.seg_head(x, (33, 45), align_corners)
            got = torch_head.fused_head(torch.from_numpy(x).cuda(), (33, 45), align_corners)
            np.testing.assert_array_equal(got.cpu().numpy(), want)
            half = torch.from_numpy(x).cuda().half()
            got16 = torch_head.fused_head(half, (33, 45), align_corners)
            want16 = host.seg_head(x, (33, 45), align_corners, fp16=True)
            np.testing.assert_array_equal(got16.cpu().numpy(), want16)


@pytest.mark.gpu
def test_cuda_kernel_equals_host_build():
    from segdeploy.plugins.seghead import gpu_check

    kernels = gpu_check.Kernels()
    cases = gpu_check.exactness(kernels)
    assert len(cases) == 4 * 3 * 2 * 4
    assert [c for c in cases if c["mismatches"]] == []
    rows = gpu_check.timing(kernels, 19, 256, 512, 8, repeats=3)
    assert all(r["matches_host"] and r["median_ms"] > 0 for r in rows)


@pytest.mark.tensorrt
def test_segbench_head_on_tensorrt_with_the_plugin(tmp_path, capsys):
    import shutil

    from segdeploy.bench.cli import main
    from segdeploy.plugins.seghead import build

    if not shutil.which("cmake") or not shutil.which("nvcc"):
        pytest.skip("building the SegHead plugin needs cmake and nvcc on this device")
    lib = build.build(str(tmp_path / "seghead"))
    out = tmp_path / "head.json"
    code = main(["--head", "19:8", "--res", "256x512", "--backends", "tensorrt", "--plugin", lib,
                 "--warmup", "2", "--iters", "5", "--json", str(out)])  # fmt: skip
    assert code == 0
    import json

    rows = json.loads(out.read_text())["result"]["rows"]
    fused = [r for r in rows if r["head"].startswith("fused")]
    assert {r["precision"] for r in fused} == {"fp32", "fp16"}
    # The plugin's labels are the host build's, every one.
    assert all(r["equal_to_host_build"] == 1.0 for r in fused)
    assert "SegHead" in capsys.readouterr().out
