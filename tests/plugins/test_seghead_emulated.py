"""The CUDA kernel's own source, run block by block on the CPU (tests/plugins/seghead_emu), gives
the host build's labels: its tiles, source rectangles, shared-memory offsets and stores are right
without a GPU. (On a GPU, test_seghead_torch_gpu.py runs the real thing.)"""

import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest

from segdeploy.plugins.seghead import host
from segdeploy.plugins.seghead.gpu_check import planted_logits

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = os.path.dirname(host.__file__)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        pytest.skip("no C++ compiler to build the kernel emulation")
    lib = str(tmp_path_factory.mktemp("emu") / "libseghead_emu.so")
    emu = os.path.join(HERE, "seghead_emu")
    cmd = [cxx, "-std=c++14", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-I", emu,
           "-I", SOURCES, os.path.join(emu, "emulate.cpp"), "-o", lib]  # fmt: skip
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0 and b"_Float16" in proc.stdout:
        pytest.skip("this C++ compiler has no _Float16 (the emulation's half type)")
    assert proc.returncode == 0, proc.stdout.decode()
    fn = ctypes.CDLL(lib).seghead_emulate
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int] * 8 + [ctypes.c_float] * 2
    fn.argtypes.append(ctypes.c_int)
    return fn


def emulate(fn, x, out, align_corners, half=False, int32=False):
    x = np.ascontiguousarray(x, np.float16 if half else np.float32)
    n, c, h, w = x.shape
    labels = np.full((n,) + tuple(out), 77, np.int32 if int32 else np.uint8)
    scales = (host.default_scale(h, out[0]), host.default_scale(w, out[1]))
    sizes = (n, c, h, w, out[0], out[1])
    fn(
        x.ctypes.data,
        labels.ctypes.data,
        int(half),
        int(int32),
        *sizes,
        *scales,
        int(align_corners),
    )
    return labels


@pytest.mark.parametrize("classes", [1, 2, 19, 150])
@pytest.mark.parametrize("factor", [4, 8, 2.37])
def test_emulated_kernel_equals_host_build(emulator, classes, factor):
    rng = np.random.default_rng(classes * 7 + int(factor * 10))
    h, w = (9, 13) if factor == 8 else (14, 19)
    x = planted_logits(rng, 2, classes, h, w)
    out = (int(h * factor), int(w * factor))  # widths 52, 104, 45: partial tiles, odd tails
    for align_corners in (False, True):
        want = host.seg_head(x, out, align_corners)
        for half, int32 in ((False, False), (False, True), (True, False), (True, True)):
            ref = host.seg_head(x, out, align_corners, fp16=True) if half else want
            got = emulate(emulator, x, out, align_corners, half, int32)
            np.testing.assert_array_equal(got, ref)


def test_emulated_kernel_large_and_downscaled(emulator):
    rng = np.random.default_rng(2)
    # A 1024-wide row spans 8 tiles; a downscale makes the source rectangle exceed the shared
    # array (2048 labels), so the per-pixel path runs.
    x = planted_logits(rng, 1, 19, 32, 128)
    for out in [(256, 1024), (9, 30), (5, 7)]:
        np.testing.assert_array_equal(emulate(emulator, x, out, False), host.seg_head(x, out))
    big = planted_logits(rng, 1, 3, 200, 300)
    np.testing.assert_array_equal(
        emulate(emulator, big, (20, 250), True), host.seg_head(big, (20, 250), True)
    )


def test_emulated_kernel_255_classes(emulator):
    rng = np.random.default_rng(6)
    x = planted_logits(rng, 1, 255, 6, 7)
    x[:, 254] += 4.0  # label 254 in every byte lane of the packed stores
    want = host.seg_head(x, (24, 28))
    assert (want == 254).any()
    for int32 in (False, True):
        np.testing.assert_array_equal(emulate(emulator, x, (24, 28), False, int32=int32), want)
