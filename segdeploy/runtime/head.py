"""The fused labels head: low-resolution logits -> full-resolution uint8 labels, exact to the
graph's bilinear Resize + ArgMax, without materialising the C x H x W upsampled logits.

    logits (C, h, w) ──► argmax a (h, w) ──► cell (i, j) uniform? all four of a[i|i+1, j|j+1] equal
                                                    │
               uniform cells ──► label a[i, j]      │   (a convex combination of four sources
               (most pixels)     nearest-style fill │    that share their argmax keeps it)
                                                    ▼
               other cells ──► their output pixels only: the C-class interpolation, in the
                               same float32 arithmetic as ONNX Runtime's Resize, then ArgMax

Why it is exact: each output pixel is ``w11*X11 + w21*X21 + w12*X12 + w22*X22`` with weights
>= 0. Where the four sources have the same argmax k, every class's term is at most class k's
term and float rounding is monotone, so no class exceeds k after rounding either; ArgMax (first
index on ties) returns k, except where rounding turns a strict inequality into a tie (a true
tie of the reference's output, resolved by its first index). Elsewhere the labels come from the
reference's own arithmetic: the weights as ONNX Runtime's CPU Resize computes them
(``upsample.cc`` SetupUpsampleBilinear: the source coordinate in float32, clamped, ``dx1 = |x -
x1|``, ``dx2 = |x - x2|``, 0.5 each where ``x1 == x2``), products ``(dx * dy) * X`` summed left
to right. ``scripts/bench_head.py`` and ``tests/runtime/test_fused_head.py`` check it against ONNX
Runtime itself.

Coordinate transforms: ``align_corners`` (``F.interpolate(..., align_corners=True)``) and
``half_pixel`` (``align_corners=False``: what the TorchScript exporter writes at opset >= 11);
``pytorch_half_pixel`` differs from ``half_pixel`` only for an output side of 1.

Implementations, chosen by measurement (``scripts/bench_head.py --micro``): the compiled one
(``impl="compiled"``), the SegHead kernel's host library (``segdeploy.plugins.seghead.host``:
its CPU layout, the kernel's own arithmetic, on the Runtime's threads), 4x the numpy one at
512x1024 on one thread; it is built once per machine with the system C++ compiler, a plain C
ABI loaded with ctypes, so one build serves every Python from 3.6 on. Where no compiler is
found, or the build fails, ``impl="auto"`` (the default) falls back to vectorised numpy
(``impl="numpy"``) and says so once in the log; ``SEGDEPLOY_HEAD_IMPL=numpy|compiled|auto``
overrides the choice. Both give the same labels (tests compare them with ONNX Runtime). OpenCV's
``cv2.resize(INTER_LINEAR)`` computes its weights differently (in/out in double, fixed point for
8-bit), so it is not bitwise ONNX Runtime's Resize; it is only used, as before, by the graph-like
``Postprocessor`` path. Python 3.6 compatible.
"""

import logging
import os
import threading

import numpy as np

from ..errors import FrameError

MODES = ("half_pixel", "pytorch_half_pixel", "align_corners")
IMPLS = ("auto", "compiled", "numpy")
IMPL_ENV = "SEGDEPLOY_HEAD_IMPL"
MAX_CLASSES = 255  # label 255 marks "cell needs the C-class interpolation" internally
_MIXED = 255

# Pixels of non-uniform cells processed per step: bounds the (pixels, C) float32 scratch
# (16384 x 19 x 4 B = 1.2 MB; x 150 classes = 9.8 MB) whatever the frame.
CHUNK = 16384
# From this many classes on, a cell's mixed pixels are computed over its candidate classes only.
PRUNE_FROM = 64


def transform_for(align_corners):
    """The ONNX coordinate_transformation_mode of ``F.interpolate(align_corners=...)``."""
    return "align_corners" if align_corners else "half_pixel"


def _axis(n_in, n_out, mode):
    """Source indices and weights of one axis, as ONNX Runtime's CPU Resize computes them."""
    f = np.float32
    scale = f(n_out) / f(n_in)  # sizes input: scales[i] = float(out) / float(in)
    x = np.arange(n_out, dtype=f)
    if scale == 1:
        src = x
    elif mode == "align_corners":
        if n_out == 1:
            src = np.zeros(1, f)
        else:
            src = (x * f(n_in - 1)) / f(n_out - 1)
    elif mode == "pytorch_half_pixel" and n_out == 1:
        src = np.zeros(1, f)
    else:
        src = (x + f(0.5)) / scale - f(0.5)
    src = np.clip(src, f(0), f(n_in - 1)).astype(f)
    i1 = np.minimum(src.astype(np.int64), n_in - 1)
    i2 = np.minimum(i1 + 1, n_in - 1)
    d1 = np.abs(src - i1.astype(f)).astype(f)  # weight of i2
    d2 = np.abs(src - i2.astype(f)).astype(f)  # weight of i1
    same = i1 == i2
    d1[same] = 0.5
    d2[same] = 0.5
    # i1 is non-decreasing: output positions of source cell i are start[i] .. start[i]+count[i]
    start = np.searchsorted(i1, np.arange(n_in), "left")
    count = np.searchsorted(i1, np.arange(n_in), "right") - start
    return i1, i2, d1, d2, start.astype(np.int64), count.astype(np.int64)


class Geometry(object):
    """Per-row and per-column indices and weights for one (in size, out size, transform)."""

    def __init__(self, in_hw, out_hw, mode):
        self.in_hw = (int(in_hw[0]), int(in_hw[1]))
        self.out_hw = (int(out_hw[0]), int(out_hw[1]))
        self.mode = mode
        h, w = self.in_hw
        height, width = self.out_hw
        y1, y2, dy1, dy2, self.row_start, self.row_count = _axis(h, height, mode)
        x1, x2, dx1, dx2, self.col_start, self.col_count = _axis(w, width, mode)
        self.y1, self.x1 = y1, x1
        # flat offsets of the source rows in an (h*w, C) array
        self.y1w, self.y2w = y1 * w, y2 * w
        self.x2 = x2
        self.dy1, self.dy2, self.dx1, self.dx2 = dy1, dy2, dx1, dx2
        # the largest block of output pixels one source cell covers
        self.max_block = max(1, int(self.row_count.max()) * int(self.col_count.max()))
        for a in (self.y1, self.x1, self.x2, self.y1w, self.y2w):
            a.setflags(write=False)


def running_argmax(logits, best, labels, mask):
    """(C, h, w) -> ``labels`` (h, w uint8): the first-index argmax by a running maximum over the
    contiguous class planes, in the caller's buffers ``best`` (logits' dtype) and ``mask``."""
    np.copyto(best, logits[0])
    labels.fill(0)
    for k in range(1, logits.shape[0]):
        np.greater(logits[k], best, out=mask)
        labels[mask] = k
        np.maximum(best, logits[k], out=best)
    return labels


_GEOMETRY = {}
_GEOMETRY_LOCK = threading.Lock()
_GEOMETRY_KEEP = 16


def geometry(in_hw, out_hw, mode):
    """The cached ``Geometry`` (read-only, shared between heads and threads)."""
    key = (tuple(int(v) for v in in_hw), tuple(int(v) for v in out_hw), mode)
    with _GEOMETRY_LOCK:
        geo = _GEOMETRY.get(key)
    if geo is None:
        geo = Geometry(key[0], key[1], mode)
        with _GEOMETRY_LOCK:
            if len(_GEOMETRY) >= _GEOMETRY_KEEP:  # a stream of ever-new frame sizes
                _GEOMETRY.pop(next(iter(_GEOMETRY)))
            _GEOMETRY[key] = geo
    return geo


_LOG = logging.getLogger("segdeploy.runtime.head")
_FALLBACK_SAID = []


def _compiled_head(impl, threads):
    """(the host library's CpuHead or None, why not) for ``impl`` ("auto" or "compiled")."""
    from ..errors import MissingDependencyError
    from ..plugins.host_build import HostBuildError
    from ..plugins.seghead import host

    try:
        return host.CpuHead(threads), None
    except (HostBuildError, MissingDependencyError, OSError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if impl == "compiled":
            raise FrameError("the compiled fused head is unavailable: {}".format(why)) from None
        if not _FALLBACK_SAID:
            _FALLBACK_SAID.append(why)
            _LOG.warning("fused head: numpy (slower) instead of the compiled head: %s", why)
        return None, why


class FusedHead(object):
    """Bilinear upsample + ArgMax of (C, h, w) logits to (H, W) uint8 labels, buffers reused.

    ``head = FusedHead(align_corners=False); labels = head(logits, (H, W))``. ``mode`` names the
    ONNX coordinate transform instead (``half_pixel``, ``pytorch_half_pixel``,
    ``align_corners``). ``impl``: ``"auto"`` (default, or ``$SEGDEPLOY_HEAD_IMPL``), ``"compiled"``
    or ``"numpy"`` (module docstring); ``threads``: the compiled head's threads. ``impl`` after
    construction says which one runs. Not thread-safe on its own (its buffers are per object):
    one per thread, or serialize calls (the Runtime does). ``last_mixed`` is the share of output
    pixels the last call interpolated over all classes.
    """

    def __init__(self, align_corners=False, mode=None, chunk=CHUNK, impl=None, threads=1):
        if mode is None:
            mode = transform_for(align_corners)
        if mode not in MODES:
            raise FrameError(
                "the fused head supports the transforms {}, not {!r}".format(", ".join(MODES), mode)
            )
        if impl is None:
            impl = os.environ.get(IMPL_ENV) or "auto"
        if impl not in IMPLS:
            raise FrameError(
                "the fused head's implementation is one of {}, not {!r} (check {})".format(
                    ", ".join(IMPLS), impl, IMPL_ENV
                )
            )
        self.mode = mode
        self._compiled = None
        self.fallback = None  # why the compiled head is not used, where it was wanted
        if impl != "numpy":
            self._compiled, self.fallback = _compiled_head(impl, threads or 1)
        self.impl = "compiled" if self._compiled is not None else "numpy"
        self.chunk = int(chunk)
        # candidate classes per cell: measured 2x faster at 150 classes, 1.5x slower at 19
        # (scripts/bench_head.py --micro); None: from PRUNE_FROM classes on
        self.prune = None
        self.last_mixed = 0.0
        self._buffers = {}

    def _buffer(self, name, shape, dtype):
        """A buffer reused while its shape and dtype stay (one frame size per stream)."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != np.dtype(dtype):
            buf = np.empty(shape, dtype)
            self._buffers[name] = buf
        return buf

    def _argmax(self, logits):
        c, h, w = logits.shape
        return running_argmax(
            logits,
            self._buffer("best", (h, w), np.float32),
            self._buffer("low", (h, w), np.uint8),
            self._buffer("gt", (h, w), np.bool_),
        )

    def _mixed_cells(self, low):
        """(h, w) bool: cells whose four sources (clamped at the border) disagree."""
        h, w = low.shape
        mixed = self._buffer("mixed", (h, w), np.bool_)
        eq = self._buffer("eq", (h, w), np.bool_)
        mixed.fill(False)
        eq[:, -1] = True
        np.equal(low[:, :-1], low[:, 1:], out=eq[:, :-1])  # right neighbour
        np.logical_not(eq, out=mixed)
        eq[-1, :] = True
        np.equal(low[:-1], low[1:], out=eq[:-1])  # lower neighbour
        np.logical_not(eq, out=eq)
        np.logical_or(mixed, eq, out=mixed)
        eq[-1, :] = True
        eq[:, -1] = True
        np.equal(low[:-1, :-1], low[1:, 1:], out=eq[:-1, :-1])  # diagonal neighbour
        np.logical_not(eq, out=eq)
        np.logical_or(mixed, eq, out=mixed)
        return mixed

    def __call__(self, logits, out_size, out=None):
        logits = np.asarray(logits)
        if logits.ndim == 4 and logits.shape[0] == 1:
            logits = logits[0]
        if logits.ndim != 3:
            raise FrameError(
                "the fused head takes (C, h, w) logits, got shape {}".format(tuple(logits.shape))
            )
        c, h, w = logits.shape
        if not 1 <= c <= MAX_CLASSES:
            raise FrameError(
                "the fused head writes uint8 labels for 1..{} classes, the logits have {}".format(
                    MAX_CLASSES, c
                )
            )
        if logits.dtype != np.float32:
            cast = self._buffer("cast", logits.shape, np.float32)
            np.copyto(cast, logits, casting="unsafe")
            logits = cast
        height, width = int(out_size[0]), int(out_size[1])
        if out is None:
            out = np.empty((height, width), np.uint8)
        elif out.shape != (height, width) or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise FrameError(
                "out must be a C-contiguous ({}, {}) uint8 array, got {} {}".format(
                    height, width, out.dtype, tuple(out.shape)
                )
            )
        # the compiled head's taps are pytorch_half_pixel's: half_pixel differs at a side of 1
        if self._compiled is not None and (self.mode != "half_pixel" or min(height, width) > 1):
            if not logits.flags.c_contiguous:  # e.g. a strided view of a batch
                dense = self._buffer("cast", logits.shape, np.float32)
                np.copyto(dense, logits)
                logits = dense
            slow = self._compiled(logits, (height, width), out, self.mode == "align_corners")
            self.last_mixed = slow / float(out.size)
            return out
        geo = geometry((h, w), (height, width), self.mode)
        low = self._argmax(logits)
        mixed = self._mixed_cells(low)
        code = self._buffer("code", (h, w), np.uint8)
        np.copyto(code, low)
        np.copyto(code, _MIXED, where=mixed)
        # uniform cells: the source cell's label, gathered columns first (h x W), then rows
        wide = self._buffer("wide", (h, width), np.uint8)
        np.take(code, geo.x1, axis=1, out=wide, mode="clip")
        np.take(wide, geo.y1, axis=0, out=out, mode="clip")
        cells = np.flatnonzero(mixed)
        if cells.size:
            self.last_mixed = self._interpolate(logits, geo, cells, out) / float(out.size)
        else:
            self.last_mixed = 0.0
        return out

    def _interpolate(self, logits, geo, cells, out):
        """The C-class interpolation + ArgMax at the output pixels of ``cells``; their count.

        Measured layout (scripts/bench_head.py): a (h*w, C) table whose rows are gathered, and
        numpy's argmax along the contiguous class axis, beat gathering from the (C, h*w) planes
        with a running maximum (2x at 19 classes, more at 150).
        """
        c, h, w = logits.shape
        width = geo.out_hw[1]
        # (h*w, C): one source pixel's classes side by side
        table = self._buffer("table", (h * w, c), np.float32)
        np.copyto(table.reshape(h, w, c), logits.transpose(1, 2, 0))
        ci, cj = np.divmod(cells, w)
        cols = geo.col_count[cj]
        sizes = geo.row_count[ci] * cols
        per_step = max(1, self.chunk // geo.max_block)
        chunk = max(self.chunk, geo.max_block)
        gathered = self._buffer("gathered", (chunk, c), np.float32)
        acc = self._buffer("acc", (chunk, c), np.float32)
        lab = self._buffer("lab", (chunk,), np.intp)
        total = 0
        flat_out = out.reshape(-1)
        for lo in range(0, cells.size, per_step):
            hi = min(lo + per_step, cells.size)
            n = sizes[lo:hi]
            count = int(n.sum())
            if count == 0:
                continue
            # output pixel k of this step -> its cell, and its place inside the cell's block
            owner = np.repeat(np.arange(hi - lo), n)
            offset = np.arange(count) - (np.cumsum(n) - n)[owner]
            block_w = cols[lo:hi][owner]
            ys = geo.row_start[ci[lo:hi]][owner] + offset // block_w
            xs = geo.col_start[cj[lo:hi]][owner] + offset % block_w
            total += count
            dy1, dy2 = geo.dy1[ys], geo.dy2[ys]
            dx1, dx2 = geo.dx1[xs], geo.dx2[xs]
            if self.prune or (self.prune is None and c >= PRUNE_FROM):
                labels = self._candidates_only(
                    table, (h, w), ci[lo:hi], cj[lo:hi], owner, dx1, dx2, dy1, dy2
                )
                if labels is not None:
                    flat_out[ys * width + xs] = labels
                    continue
            g = gathered[:count]
            a = acc[:count]
            y1w, y2w = geo.y1w[ys], geo.y2w[ys]
            x1, x2 = geo.x1[xs], geo.x2[xs]
            # ((w11*X11 + w21*X21) + w12*X12) + w22*X22, each w the float32 product dx*dy:
            # the reference's order
            np.take(table, y1w + x1, axis=0, out=a, mode="clip")
            np.multiply(a, (dx2 * dy2)[:, None], out=a)
            for weight, source in (
                (dx1 * dy2, y1w + x2),
                (dx2 * dy1, y2w + x1),
                (dx1 * dy1, y2w + x2),
            ):
                np.take(table, source, axis=0, out=g, mode="clip")
                np.multiply(g, weight[:, None], out=g)
                np.add(a, g, out=a)
            np.argmax(a, axis=1, out=lab[:count])  # first index on ties, as ArgMax
            flat_out[ys * width + xs] = lab[:count]
        return total

    @staticmethod
    def _candidates_only(table, hw, ci, cj, owner, dx1, dx2, dy1, dy2):
        """Labels of one step's pixels computed over each cell's candidate classes only, or None
        when they are over a quarter of the classes (then the full computation is faster).

        Class c of a cell wins at none of its pixels when its largest value over the cell's four
        sources is below the smallest value of some class k over them: at every pixel c's
        interpolated value is then below k's (convex combinations; the margin kept, 2.4e-4 of the
        magnitudes, covers float rounding, some 1e-7 of them). The candidates are computed as in
        the full path, in ascending class order (ties: first index)."""
        h, w = hw
        c = table.shape[1]
        i2, j2 = np.minimum(ci + 1, h - 1), np.minimum(cj + 1, w - 1)
        # (cells, 4, C): the sources in the reference's term order 11, 21 (x2), 12 (y2), 22
        sources = np.stack((ci * w + cj, ci * w + j2, i2 * w + cj, i2 * w + j2), axis=1)
        values = table[sources]
        top, bottom = values.max(axis=1), values.min(axis=1)
        scale = np.maximum(np.abs(top).max(axis=1), np.abs(bottom).max(axis=1))
        floor = bottom.max(axis=1) - scale * np.float32(2.0**-12)
        candidate = top >= floor[:, None]
        k = int(candidate.sum(axis=1).max())
        if 4 * k > c:
            return None
        ids = np.argsort(~candidate, axis=1, kind="stable")[:, :k]  # candidates first, ascending
        padding = ~np.take_along_axis(candidate, ids, axis=1)
        picked = np.take_along_axis(values, ids[:, None, :], axis=2)[owner]  # (pixels, 4, k)
        acc = (dx2 * dy2)[:, None] * picked[:, 0]
        acc += (dx1 * dy2)[:, None] * picked[:, 1]
        acc += (dx2 * dy1)[:, None] * picked[:, 2]
        acc += (dx1 * dy1)[:, None] * picked[:, 3]
        acc[padding[owner]] = -np.inf
        return ids[owner, acc.argmax(axis=1)]


def fused_head(low_res_logits, out_size, align_corners=False, out=None, impl=None):
    """``labels = fused_head(logits, (H, W), align_corners)``: one call, its own buffers.

    For a stream of frames keep a ``FusedHead`` instead: it reuses its buffers.
    """
    return FusedHead(align_corners=align_corners, impl=impl)(low_res_logits, out_size, out=out)


def reference_labels(logits, out_size, align_corners=False, mode=None):
    """Resize (bilinear) + ArgMax the plain way, in ONNX Runtime's arithmetic: (H, W) int64.

    Materialises the C x H x W upsampled logits; for tests and benchmarks only.
    """
    logits = np.asarray(logits, np.float32)
    if logits.ndim == 4:
        logits = logits[0]
    c, h, w = logits.shape
    geo = geometry((h, w), out_size, mode or transform_for(align_corners))
    y1, y2 = geo.y1w // w, geo.y2w // w
    x1, x2 = geo.x1, geo.x2
    rows1, rows2 = logits[:, y1], logits[:, y2]  # (C, H, w)
    wy1, wy2 = geo.dy2[:, None], geo.dy1[:, None]  # weight of row y1, of row y2
    wx1, wx2 = geo.dx2[None, :], geo.dx1[None, :]
    up = (wx1 * wy1) * rows1[:, :, x1]
    up += (wx2 * wy1) * rows1[:, :, x2]
    up += (wx1 * wy2) * rows2[:, :, x1]
    up += (wx2 * wy2) * rows2[:, :, x2]
    return up.argmax(0)
