"""Host build of the fused D-block kernel: its arithmetic compiled as plain C++, called via ctypes.

``dblock_conv`` computes ``DBlockConv(X, W, B)`` exactly as the CUDA kernel does (the same
``__host__ __device__`` functions from ``dblock_common.cuh``, the same fmaf order), on the CPU.
It backs the ONNX Runtime custom op for ``DBlockConv`` graphs and the tests that compare the
kernel's arithmetic with PyTorch. The shared library is compiled on first use with the system C++
compiler (``$CXX``, else ``c++``, ``g++`` or ``clang++``) and cached per user under
``$SEGDEPLOY_CACHE`` or ``$XDG_CACHE_HOME/segdeploy`` (default ``~/.cache/segdeploy``), keyed by
the hash of the sources, the compiler and the flags; the cache entry is written atomically.

FP16 (``fp16=True``) reproduces the kernel's FP16 mode: the kernel reads half inputs, weights and
bias, converts them to float (exact), accumulates in FP32 with the same fmaf order and rounds the
result to half once. So X, W and B are rounded to float16, the FP32 arithmetic runs, and Y is
rounded to float16: the same numbers the FP16 kernel writes. Against an FP32 reference on
unrounded inputs the difference is the half rounding of the inputs and of the output: at most
``FP16_TOLERANCE`` of the output's largest magnitude (see the tests).

Python 3.6 compatible, numpy only.
"""

import ctypes
import functools
import os

import numpy as np

from .. import host_build
from ..host_build import HostBuildError

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("dblock_common.cuh", "dblock_host.cpp")
GROUP_WIDTH = 16
ABI_VERSION = 1
# Largest |fp16 result - fp32 reference| / max|fp32 reference| accepted by the tests (half has an
# 11-bit significand: 2**-11 relative rounding per input; the sum of 144 products spreads it).
FP16_TOLERANCE = 2e-3


def cache_dir():
    """Per-user directory where the compiled D-block host library is kept."""
    return os.path.join(host_build.cache_root(), "dblock-host")


def build_library(verbose=False):
    """Compile the host library if the cache lacks it; return its path."""
    return host_build.build_cached(
        HERE, SOURCES, "dblock_host.cpp", "dblock_host", cache_dir(), "D-block",
        verbose,
    )  # fmt: skip


@functools.lru_cache(maxsize=None)  # noqa: UP033 (functools.cache is 3.9+)
def _library():
    lib = ctypes.CDLL(build_library())
    if lib.segdeploy_dblock_abi_version() != ABI_VERSION:
        raise HostBuildError("the cached D-block host library is stale; delete " + cache_dir())
    fptr = ctypes.POINTER(ctypes.c_float)
    fn = lib.segdeploy_dblock_conv_f32
    fn.restype = ctypes.c_int
    fn.argtypes = [fptr, fptr, fptr, fptr] + [ctypes.c_int] * 7
    return lib


def _as_f32(a, rounding):
    a = np.asarray(a)
    if rounding:
        a = a.astype(np.float16)
    return np.ascontiguousarray(a, dtype=np.float32)


def check_shapes(x_shape, w_shape, b_shape, dilations, group_width=GROUP_WIDTH):
    """Raise ValueError unless the shapes and attributes fit the DBlockConv contract."""
    if group_width != GROUP_WIDTH:
        raise ValueError("DBlockConv supports group_width 16 only, got {}".format(group_width))
    if len(dilations) != 2 or min(int(d) for d in dilations) < 1:
        raise ValueError("dilations must be two positive ints [d1, d2], got {!r}".format(dilations))
    if len(x_shape) != 4:
        raise ValueError("X must be N x C x H x W, got shape {}".format(tuple(x_shape)))
    c = x_shape[1]
    if c % (2 * GROUP_WIDTH):
        raise ValueError(
            "X has {} channels; DBlockConv needs a multiple of {} "
            "(two halves of groups of {})".format(c, 2 * GROUP_WIDTH, GROUP_WIDTH)
        )
    if tuple(w_shape) != (c, GROUP_WIDTH, 3, 3):
        raise ValueError(
            "W must be {} x 16 x 3 x 3 for X with {} channels, got {}".format(c, c, tuple(w_shape))
        )
    if tuple(b_shape) != (c,):
        raise ValueError("B must have shape ({},), got {}".format(c, tuple(b_shape)))


def dblock_conv(x, weight, bias, dilations, group_width=GROUP_WIDTH, relu=True, fp16=False):
    """``DBlockConv(X, W, B)`` on the CPU with the kernel's arithmetic.

    x: N x C x H x W; weight: C x 16 x 3 x 3 (channels [0, C/2) dilation d1, [C/2, C) d2);
    bias: C; dilations: (d1, d2). Returns float32 (fp16=False) or float16 (fp16=True).
    """
    x = np.asarray(x)
    weight = np.asarray(weight)
    bias = np.asarray(bias)
    check_shapes(x.shape, weight.shape, bias.shape, dilations, group_width)
    xs = _as_f32(x, fp16)
    ws = _as_f32(weight, fp16)
    bs = _as_f32(bias, fp16)
    n, c, h, w = xs.shape
    y = np.empty_like(xs)
    fptr = ctypes.POINTER(ctypes.c_float)
    code = _library().segdeploy_dblock_conv_f32(
        xs.ctypes.data_as(fptr),
        ws.ctypes.data_as(fptr),
        bs.ctypes.data_as(fptr),
        y.ctypes.data_as(fptr),
        n,
        c,
        h,
        w,
        int(dilations[0]),
        int(dilations[1]),
        1 if relu else 0,
    )
    if code != 0:
        raise ValueError("DBlockConv host library rejected the arguments (code {})".format(code))
    return y.astype(np.float16) if fp16 else y
