"""The fused head's algorithm in PyTorch, for a GPU without TensorRT (and the CPU).

``fused_head(logits, out_size, align_corners)`` gives the labels of ONNX Runtime's Resize +
ArgMax without the full-resolution logits, the way the CUDA kernel does: the safe label of every
source pixel (``seghead_common.cuh``: the leader ahead of the runner-up by more than the rounding
of the four-term sum), the four sources' labels gathered per output pixel, and all C classes
interpolated only where they disagree. Every float operation is a separate, correctly rounded
float32 tensor operation (eager PyTorch fuses nothing), in the kernel's order, and the taps are
computed in numpy float32 with the kernel's formulas, so the labels equal the host build's (the
tests show it on the CPU). ``standard_head`` is what a PyTorch model does: ``F.interpolate`` +
``argmax`` (PyTorch's own bilinear weights, which may round differently from ONNX Runtime's).

torch is imported inside the functions (the device side stays importable without it).
"""

import numpy as np

_MARGIN = np.float32(2.0**-20)


def axis_taps(in_len, out_len, scale=None, align_corners=False):
    """(i1, i2, d1, d2) arrays of one axis, as ``axis_tap`` in seghead_common.cuh computes them
    (float32 throughout); ``scale`` defaults to float32(out) / float32(in)."""
    f = np.float32
    scale = f(out_len) / f(in_len) if scale is None else f(scale)
    o = np.arange(out_len, dtype=np.float32)
    top = f(in_len - 1)
    if scale == f(1):
        x = o
    elif align_corners:
        x = (o * top) / f(out_len - 1) if out_len > 1 else np.zeros(1, np.float32)
    else:
        x = (o + f(0.5)) / scale - f(0.5) if out_len > 1 else np.zeros(1, np.float32)
    x = np.where(x < top, x, top).astype(np.float32)
    x = np.where(f(0) < x, x, f(0)).astype(np.float32)
    i1 = np.minimum(x.astype(np.int64), in_len - 1)
    i2 = np.minimum(i1 + 1, in_len - 1)
    d1 = np.abs(x - i1.astype(np.float32)).astype(np.float32)
    d2 = np.abs(x - i2.astype(np.float32)).astype(np.float32)
    same = i1 == i2
    d1[same] = 0.5
    d2[same] = 0.5
    return i1, i2, d1, d2


def standard_head(logits, out_size, align_corners=False):
    """``F.interpolate`` (bilinear) + ``argmax``: the full-resolution logits, then the labels."""
    import torch.nn.functional as F

    up = F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=align_corners)
    return up.argmax(1)


def source_labels(logits):
    """Per source pixel: the argmax where it is safely ahead, else -1 (N x h x w, int64)."""
    import torch

    if logits.shape[1] == 1:
        return torch.zeros(logits.shape[:1] + logits.shape[2:], dtype=torch.int64,
                           device=logits.device)  # fmt: skip
    x = logits.float()
    top = x.topk(2, dim=1).values  # a later equal maximum gives top2 == top1: unsafe
    t1, t2 = top[:, 0], top[:, 1]
    safe = (t1 - t2) > (t1.abs() + t2.abs()) * float(_MARGIN)
    label = x.argmax(1)  # the first of equal maxima, as ONNX ArgMax
    return torch.where(safe, label, torch.full_like(label, -1))


class Taps(object):
    """The two axes' taps as tensors on ``device``."""

    def __init__(self, in_hw, out_hw, scales, align_corners, device):
        import torch

        sh, sw = scales if scales is not None else (None, None)
        ty = axis_taps(in_hw[0], out_hw[0], sh, align_corners)
        tx = axis_taps(in_hw[1], out_hw[1], sw, align_corners)
        self.y1, self.y2 = (torch.from_numpy(a).to(device) for a in ty[:2])
        self.x1, self.x2 = (torch.from_numpy(a).to(device) for a in tx[:2])
        self.dy1, self.dy2 = (torch.from_numpy(a).to(device) for a in ty[2:])
        self.dx1, self.dx2 = (torch.from_numpy(a).to(device) for a in tx[2:])


def fused_head(logits, out_size, align_corners=False, scales=None, taps=None, return_slow=False):
    """Labels (N x out_h x out_w, int64) = ArgMax(Resize(logits)) without the full-resolution
    logits; ``logits`` a float32 or float16 N x C x h x w tensor on any device. ``taps`` (a
    ``Taps``) may be given to reuse them across calls of the same sizes."""
    import torch

    n, c, h, w = logits.shape
    t = taps or Taps((h, w), out_size, scales, align_corners, logits.device)
    src = source_labels(logits)
    rows1, rows2 = src[:, t.y1], src[:, t.y2]  # N x out_h x w
    l11, l21 = rows1[:, :, t.x1], rows1[:, :, t.x2]
    l12, l22 = rows2[:, :, t.x1], rows2[:, :, t.x2]
    agree = (l11 >= 0) & (l11 == l21) & (l11 == l12) & (l11 == l22)
    labels = torch.where(agree, l11, torch.zeros_like(l11))
    b, yy, xx = torch.nonzero(~agree, as_tuple=True)
    if b.numel():
        x = logits.float().permute(0, 2, 3, 1).contiguous()  # N x h x w x C: a pixel's classes
        y1, y2, x1, x2 = t.y1[yy], t.y2[yy], t.x1[xx], t.x2[xx]
        w11 = t.dx2[xx] * t.dy2[yy]
        w21 = t.dx1[xx] * t.dy2[yy]
        w12 = t.dx2[xx] * t.dy1[yy]
        w22 = t.dx1[xx] * t.dy1[yy]
        # P x C each: the four sources' class vectors of the P disagreeing pixels.
        v = w11[:, None] * x[b, y1, x1]
        v = v + w21[:, None] * x[b, y1, x2]
        v = v + w12[:, None] * x[b, y2, x1]
        v = v + w22[:, None] * x[b, y2, x2]
        labels[b, yy, xx] = v.argmax(1)
    return (labels, int(b.numel())) if return_slow else labels
