"""The D-block kernel's arithmetic (host build) against PyTorch's split / conv / concat (+ ReLU)."""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segdeploy.plugins.dblock import host  # noqa: E402

# RegSeg's split blocks (paper Table 2): (1,2), 4x(1,4), 7x(1,14), all at 256 channels; (1,1) is
# Table 1's D(1,1), where both halves share a dilation.
REGSEG_DILATIONS = [(1, 2), (1, 4), (1, 14), (1, 1)]


def torch_reference(x, w, b, dilations, relu):
    """RegSeg's DilatedConv as exported: Split -> two grouped convs -> Concat, then bias, ReLU."""
    xt = torch.from_numpy(np.asarray(x, np.float32))
    wt = torch.from_numpy(np.asarray(w, np.float32))
    half = xt.shape[1] // 2
    outs = []
    for part, weight, d in zip(xt.split(half, 1), wt.split(half, 0), dilations):
        outs.append(
            torch.nn.functional.conv2d(part, weight, padding=d, dilation=d, groups=half // 16)
        )
    y = torch.cat(outs, 1) + torch.from_numpy(np.asarray(b, np.float32))[:, None, None]
    return (y.relu() if relu else y).numpy()


def random_case(rng, n, c, h, w):
    # Fan-in scaled weights (144 inputs per output) keep outputs O(1), as in a trained block.
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((c, 16, 3, 3)) / 12.0).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    return x, wt, b


def rel_err(a, ref):
    return float(np.abs(a.astype(np.float64) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("dilations", REGSEG_DILATIONS)
@pytest.mark.parametrize("relu", [True, False])
def test_fp32_matches_pytorch_for_regseg_blocks(dilations, relu):
    rng = np.random.default_rng(sum(dilations) + relu)
    # Batch 2, odd height and width, smaller than the dilation-14 reach on one side.
    x, w, b = random_case(rng, 2, 256, 19, 33)
    got = host.dblock_conv(x, w, b, dilations, relu=relu)
    ref = torch_reference(x, w, b, dilations, relu)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert rel_err(got, ref) <= 1e-5
    if relu:
        assert (got == 0).mean() > 0.2  # the ReLU really clipped something
    else:
        assert (got < 0).mean() > 0.2


@pytest.mark.parametrize("shape", [(1, 32, 1, 1), (3, 64, 5, 2), (1, 256, 32, 64), (2, 96, 7, 31)])
def test_fp32_odd_shapes(shape):
    rng = np.random.default_rng(shape[2] * 100 + shape[3])
    x, w, b = random_case(rng, *shape)
    for dilations in [(1, 14), (3, 2)]:
        got = host.dblock_conv(x, w, b, dilations, relu=True)
        assert rel_err(got, torch_reference(x, w, b, dilations, True)) <= 1e-5


def test_halves_use_their_own_dilation():
    # Swapping the dilations must change exactly the outputs that depend on them.
    rng = np.random.default_rng(7)
    x, w, b = random_case(rng, 1, 64, 20, 20)
    a = host.dblock_conv(x, w, b, (1, 4), relu=False)
    s = host.dblock_conv(x, w, b, (4, 1), relu=False)
    assert not np.allclose(a[:, :32], s[:, :32]) and not np.allclose(a[:, 32:], s[:, 32:])
    assert rel_err(s, torch_reference(x, w, b, (4, 1), False)) <= 1e-5


@pytest.mark.parametrize("dilations", [(1, 2), (1, 4), (1, 14)])
def test_fp16_emulation(dilations):
    rng = np.random.default_rng(11 + dilations[1])
    x, w, b = random_case(rng, 2, 256, 15, 21)
    got = host.dblock_conv(x, w, b, dilations, relu=True, fp16=True)
    assert got.dtype == np.float16
    # Against the FP32 result on the unrounded inputs: the stated FP16 tolerance.
    ref = torch_reference(x, w, b, dilations, True)
    err = rel_err(got, ref)
    assert err <= host.FP16_TOLERANCE
    # FP16 rounding really happened (an FP32 result would be ~1e-7 off).
    assert err > 1e-5
    # Against FP32 arithmetic on the half-rounded inputs, rounded once to half: within one half
    # ulp of the value (the accumulation order of PyTorch differs, the rounding points do not).
    r16 = [a.astype(np.float16).astype(np.float32) for a in (x, w, b)]
    ref16 = torch_reference(*r16, dilations, True)
    # ulp, plus the FP32 summation-order noise where the value cancels to about zero
    mag = np.maximum(np.abs(ref16), np.abs(got.astype(np.float32))).astype(np.float16)
    ulp = np.spacing(mag).astype(np.float32) + 1e-6 * np.abs(ref16).max()
    assert np.all(np.abs(got.astype(np.float32) - ref16) <= ulp)


def test_bad_shapes_are_refused():
    x = np.zeros((1, 48, 4, 4), np.float32)
    with pytest.raises(ValueError, match="multiple of 32"):
        host.dblock_conv(x, np.zeros((48, 16, 3, 3)), np.zeros(48), (1, 2))
    x = np.zeros((1, 64, 4, 4), np.float32)
    with pytest.raises(ValueError, match="W must be 64 x 16 x 3 x 3"):
        host.dblock_conv(x, np.zeros((64, 8, 3, 3)), np.zeros(64), (1, 2))
    with pytest.raises(ValueError, match="group_width 16"):
        host.dblock_conv(x, np.zeros((64, 16, 3, 3)), np.zeros(64), (1, 2), group_width=8)
    with pytest.raises(ValueError, match="dilations"):
        host.dblock_conv(x, np.zeros((64, 16, 3, 3)), np.zeros(64), (0, 2))


def test_cache_is_keyed_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path))
    path = host.build_library()
    assert path.startswith(str(tmp_path)) and os.path.exists(path)
    mtime = os.stat(path).st_mtime_ns
    assert host.build_library() == path and os.stat(path).st_mtime_ns == mtime
    # No temporary file is left next to it.
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


def test_missing_compiler_is_one_clear_error(tmp_path):
    # A fresh process with no compiler on PATH and an empty cache: one MissingDependencyError.
    code = (
        "from segdeploy.errors import MissingDependencyError\n"
        "from segdeploy.plugins.dblock import host\n"
        "try:\n"
        "    host.build_library()\n"
        "except MissingDependencyError as exc:\n"
        "    print('MDE:', exc)\n"
    )
    env = dict(os.environ, PATH=str(tmp_path), SEGDEPLOY_CACHE=str(tmp_path / "c"))
    env.pop("CXX", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    text = out.stdout.decode()
    assert out.returncode == 0, out.stderr.decode()
    assert text.startswith("MDE: the D-block host build needs a C++ compiler")
    assert len(text.strip().splitlines()) == 1
