"""Host build of the fused head kernel: its arithmetic compiled as plain C++, called via ctypes.

``seg_head`` computes ``ArgMax(Resize_bilinear(logits))`` exactly as the CUDA kernel does (the
same ``__host__ __device__`` functions from ``seghead_common.cuh``), on the CPU: uint8 labels at
the output size, without the full-resolution logits. Its float arithmetic is ONNX Runtime's
Resize's, operation for operation, so its labels equal ONNX Runtime's Resize + ArgMax graph (the
tests show it). It is the reference for the ``SegHead`` node (``segdeploy.export.seghead``) and
for the kernel on a GPU. The library is compiled on first use with the system C++ compiler and
cached like the D-block host library (``segdeploy.plugins.dblock.host``), under
``seghead-host``.

FP16 (``fp16=True``): the kernel reads half logits and converts them to float (exact), so the
host build rounds the logits to float16 and runs the FP32 arithmetic on them.

Python 3.6 compatible, numpy only.
"""

import ctypes
import functools
import os

import numpy as np

from .. import host_build
from ..host_build import HostBuildError

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("seghead_common.cuh", "seghead_host.cpp")
ABI_VERSION = 3
MAX_CLASSES = 255


def cache_dir():
    """Per-user directory where the compiled fused head's host library is kept."""
    return os.path.join(host_build.cache_root(), "seghead-host")


def build_library(verbose=False):
    """Compile the host library if the cache lacks it; return its path."""
    return host_build.build_cached(
        HERE, SOURCES, "seghead_host.cpp", "seghead_host", cache_dir(),
        "fused head's", verbose,
    )  # fmt: skip


@functools.lru_cache(maxsize=None)  # noqa: UP033 (functools.cache is 3.9+)
def _library():
    lib = ctypes.CDLL(build_library())
    if lib.segdeploy_seghead_abi_version() != ABI_VERSION:
        raise HostBuildError("the cached fused head library is stale; delete " + cache_dir())
    fn = lib.segdeploy_seghead_f32
    fn.restype = ctypes.c_int
    fn.argtypes = (
        [ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_uint8)]
        + [ctypes.c_int] * 6
        + [ctypes.c_float, ctypes.c_float, ctypes.c_int, ctypes.POINTER(ctypes.c_longlong)]
    )
    cpu = lib.segdeploy_seghead_cpu_f32
    cpu.restype = ctypes.c_int
    cpu.argtypes = (
        [ctypes.c_void_p, ctypes.c_void_p]
        + [ctypes.c_int] * 5
        + [ctypes.c_float, ctypes.c_float, ctypes.c_int, ctypes.c_int, ctypes.c_longlong]
        + [ctypes.c_void_p, ctypes.POINTER(ctypes.c_longlong)]
    )
    lib.segdeploy_seghead_cpu_workspace.restype = ctypes.c_longlong
    lib.segdeploy_seghead_cpu_workspace.argtypes = [ctypes.c_int] * 6
    return lib


def load():
    """Compile (first use) and load the host library; raises HostBuildError or
    MissingDependencyError (no C++ compiler) when it cannot."""
    return _library()


class CpuHead(object):
    """The host library's CPU layout of the head for one image, its scratch kept between calls.

    ``CpuHead(threads)(logits, out_size, out, align_corners)`` writes ``out`` (H x W uint8,
    C-contiguous) from C x h x w float32 C-contiguous logits and returns how many output pixels
    needed all classes interpolated. The arguments are the caller's to check (``runtime.head``
    does). Not thread-safe: its workspace is per object.
    """

    def __init__(self, threads=1, work_per_thread=0):
        self.threads = max(1, int(threads))
        # the library adds a thread per this much work (output pixels + source values); 0: its
        # default, measured (a second thread costs more than it saves on small heads)
        self.work_per_thread = int(work_per_thread)
        self._lib = _library()
        self._workspace = np.empty(0, np.uint64)  # 8-byte aligned (floats, Taps)
        self._slow = ctypes.c_longlong(0)

    def __call__(self, logits, out_size, out, align_corners=False):
        c, h, w = logits.shape
        out_h, out_w = int(out_size[0]), int(out_size[1])
        need = int(self._lib.segdeploy_seghead_cpu_workspace(c, h, w, out_h, out_w, self.threads))
        if self._workspace.nbytes < need:
            self._workspace = np.empty(-(-need // 8), np.uint64)
        code = self._lib.segdeploy_seghead_cpu_f32(
            logits.ctypes.data,
            out.ctypes.data,
            c,
            h,
            w,
            out_h,
            out_w,
            default_scale(h, out_h),
            default_scale(w, out_w),
            1 if align_corners else 0,
            self.threads,
            self.work_per_thread,
            self._workspace.ctypes.data,
            ctypes.byref(self._slow),
        )
        if code == -2:
            raise MemoryError("the fused head's host library ran out of memory")
        if code != 0:
            raise ValueError(
                "the fused head's host library rejected the arguments (code {})".format(code)
            )
        return int(self._slow.value)


def default_scale(in_len, out_len):
    """ONNX Runtime's scale of an axis resized to ``out_len`` by sizes: float32 out / in."""
    return float(np.float32(out_len) / np.float32(in_len))


def check_arguments(shape, out_size, scales=None):
    """Raise ValueError unless (shape, out_size, scales) fit the SegHead contract."""
    if len(shape) != 4:
        raise ValueError("logits must be N x C x H x W, got shape {}".format(tuple(shape)))
    n, c, h, w = (int(v) for v in shape)
    if not 1 <= c <= MAX_CLASSES:
        raise ValueError(
            "the fused head takes 1 to {} classes (uint8 labels), got {}".format(MAX_CLASSES, c)
        )
    if h < 1 or w < 1:
        raise ValueError("logits must have a non-empty H x W, got {} x {}".format(h, w))
    if len(out_size) != 2 or min(int(v) for v in out_size) < 1:
        raise ValueError("out_size must be two positive ints (H, W), got {!r}".format(out_size))
    if scales is not None and (len(scales) != 2 or not min(float(s) for s in scales) > 0):
        raise ValueError("scales must be two positive floats (H, W), got {!r}".format(scales))


def seg_head(logits, out_size, align_corners=False, scales=None, fp16=False, return_slow=False):
    """uint8 labels (N x out_h x out_w) = ArgMax(Resize_bilinear(logits)), the kernel's way.

    logits: N x C x H x W (C <= 255); out_size: (out_h, out_w); align_corners: True for
    ``align_corners``, False for ``half_pixel`` / ``pytorch_half_pixel``; scales: ONNX Runtime's
    (scale_h, scale_w) where the graph's Resize gives scales (default: out / in, as for sizes).
    With ``return_slow`` also returns how many output pixels needed all classes interpolated.
    """
    logits = np.asarray(logits)
    check_arguments(logits.shape, out_size, scales)
    if fp16:
        logits = logits.astype(np.float16)
    x = np.ascontiguousarray(logits, dtype=np.float32)
    n, c, h, w = x.shape
    out_h, out_w = int(out_size[0]), int(out_size[1])
    if scales is None:
        scales = (default_scale(h, out_h), default_scale(w, out_w))
    labels = np.empty((n, out_h, out_w), np.uint8)
    slow = ctypes.c_longlong(0)
    code = _library().segdeploy_seghead_f32(
        x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
        labels.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
        n,
        c,
        h,
        w,
        out_h,
        out_w,
        float(scales[0]),
        float(scales[1]),
        1 if align_corners else 0,
        ctypes.byref(slow),
    )
    if code != 0:
        raise ValueError(
            "the fused head's host library rejected the arguments (code {})".format(code)
        )
    return (labels, int(slow.value)) if return_slow else labels


def sample_logits(classes, height, width, seed=0):
    """1 x C x h x w float32 logits: square class regions (16 source pixels a side, 128 labels at
    stride 8; smaller for small inputs, so that there are at least 4 x 4 of them) and noise, so
    that about a tenth of the labels sit where the regions meet."""
    rng = np.random.RandomState(seed)
    side = max(2, min(16, min(height, width) // 4))
    coarse = rng.standard_normal((1, classes, -(-height // side), -(-width // side))) * 4.0
    x = np.repeat(np.repeat(coarse, side, 2), side, 3)[:, :, :height, :width]
    return (x + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)
