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
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile

import numpy as np

from ...errors import MissingDependencyError, SegDeployError

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("dblock_common.cuh", "dblock_host.cpp")
GROUP_WIDTH = 16
ABI_VERSION = 1
# Largest |fp16 result - fp32 reference| / max|fp32 reference| accepted by the tests (half has an
# 11-bit significand: 2**-11 relative rounding per input; the sum of 144 products spreads it).
FP16_TOLERANCE = 2e-3

_FLAGS = ("-std=c++11", "-O3", "-ffp-contract=off", "-fPIC", "-shared")


class HostBuildError(SegDeployError):
    """The C++ compiler could not build the D-block host library."""


def _compiler():
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name:
            path = shutil.which(name)
            if path:
                return path
    raise MissingDependencyError(
        "the D-block host build needs a C++ compiler and none was found; install one "
        "(e.g. apt-get install g++) or set CXX to its path"
    )


def cache_dir():
    """Per-user directory where compiled host libraries are kept."""
    root = os.environ.get("SEGDEPLOY_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "segdeploy")
    return os.path.join(root, "dblock-host")


def _cpu_tag():
    """What -march=native depends on, so that a cache shared by two CPUs never mixes builds."""
    tag = platform.machine()
    try:
        with open("/proc/cpuinfo", "r") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    tag += "|" + line.strip()
                    if line.startswith(("flags", "Features")):
                        break
    except OSError:
        pass
    return tag


def _native_flags(compiler):
    """-march=native where the compiler takes it (hardware fmaf instead of a libm call)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write("int main() { return 0; }\n")
        try:
            proc = subprocess.run(
                [compiler, "-march=native", src, "-o", os.path.join(tmp, "probe")],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError:
            return ()
    return ("-march=native",) if proc.returncode == 0 else ()


def _compiler_version(compiler):
    try:
        proc = subprocess.run(
            [compiler, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    except OSError as exc:
        raise MissingDependencyError(
            "the C++ compiler {} cannot be run ({}); install g++ or set CXX".format(compiler, exc)
        ) from None
    return proc.stdout


def build_library(verbose=False):
    """Compile the host library if the cache lacks it; return its path."""
    compiler = _compiler()
    flags = _FLAGS + _native_flags(compiler)
    digest = hashlib.sha256()
    for name in SOURCES:
        with open(os.path.join(HERE, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read() + b"\0")
    digest.update(_compiler_version(compiler))
    digest.update(" ".join(flags).encode())
    digest.update(_cpu_tag().encode())
    directory = cache_dir()
    path = os.path.join(directory, "libdblock_host-{}.so".format(digest.hexdigest()[:24]))
    if os.path.exists(path):
        return path
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise HostBuildError(
            "cannot create the cache directory {} ({}); set SEGDEPLOY_CACHE to a writable "
            "directory".format(directory, exc.strerror or exc)
        ) from None
    fd, tmp = tempfile.mkstemp(prefix=".libdblock_host-", suffix=".so.tmp", dir=directory)
    os.close(fd)
    cmd = [compiler] + list(flags) + [os.path.join(HERE, "dblock_host.cpp"), "-o", tmp]
    try:
        if verbose:
            print(" ".join(cmd))
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
            raise HostBuildError(
                "{} failed to compile the D-block host library: {}".format(
                    os.path.basename(compiler), lines[0] if lines else "no output"
                )
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)  # atomic: a concurrent build of the same key just wins or loses
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


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
