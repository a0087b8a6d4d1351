"""Post-processing (engine output -> uint8 label map at the frame's size) and visualization.

An engine returns either ``labels`` (N, h, w) integers, the argmax already in the graph, or
``logits`` (N, K, h', w') floats. Logits are reduced with a running maximum over the class planes
rather than ``np.argmax``: at 19 x 512 x 1024 the running maximum costs about 5 ms against 19 ms
for numpy's argmax (it walks the class axis with a stride of h*w) on this host. Label maps are
resized with nearest neighbour, which keeps them valid labels.

Engines exported with ``segexport --head fused`` stop at the low-resolution logits; their card's
``output.head`` says how the removed Resize upsampled them, and the fused head
(``runtime/head.py``) turns them into the labels the graph would have given: at the network's
size, then nearest-resized to the frame like any label map (``head_target="network"``), or
straight at the frame's size (``head_target="frame"``, as official evaluations upsample logits to
the original image). Python 3.6 compatible.
"""

import os

import numpy as np

from .. import datasets
from .._deps import require
from ..errors import FrameError
from .head import FusedHead, running_argmax

HEAD_TARGETS = ("network", "frame")


def default_head_threads():
    """The fused head's threads where the caller set none: the CPUs, up to 4 (the head is a few
    ms; more threads cost more to start than they save)."""
    return max(1, min(4, os.cpu_count() or 1))


class Postprocessor(object):
    """Engine output for one frame -> (H, W) uint8 label map, with scratch buffers reused.

    Not thread-safe on its own: the owner (``Runtime``) serializes calls.
    """

    def __init__(self, kind, num_classes, head=None, head_target="network", head_threads=None):
        cv2 = require("cv2", "the runtime")

        self._cv2 = cv2
        self.kind = kind
        self.num_classes = int(num_classes)
        if self.num_classes > 256:
            raise FrameError(
                "a uint8 label map holds at most 256 classes, the model has {}".format(
                    self.num_classes
                )
            )
        if head_target not in HEAD_TARGETS:
            raise FrameError(
                "head must be one of {}, got {!r}".format(", ".join(HEAD_TARGETS), head_target)
            )
        self.head_target = head_target
        # the card's output.head when the engine returns low-resolution logits, else None
        self._fused = None
        if head is not None and head.get("kind") == "fused":
            self._fused = FusedHead(
                align_corners=bool(head.get("align_corners")),
                mode=head.get("mode"),
                threads=head_threads or default_head_threads(),
            )
        # name -> one flat buffer, viewed at the shape each call needs. A video has one frame
        # size, so reuse matters; a stream of ever-new sizes must not keep a K x H x W float
        # buffer per size (200 sizes once took 1.5 GB). The buffer grows by half again when a
        # larger frame needs more (few reallocations for a slowly growing size) and shrinks when
        # a frame needs less than an eighth of it: memory stays within 1.5x the largest recent
        # frame's needs, per name.
        self._scratch = {}

    GROWTH = 1.5
    SHRINK_BELOW = 1.0 / 8

    def _buffer(self, name, shape, dtype):
        dtype = np.dtype(dtype)
        size = int(np.prod(shape))
        flat = self._scratch.get(name)
        if (
            flat is None
            or flat.dtype != dtype
            or flat.size < size
            or size < flat.size * self.SHRINK_BELOW
        ):
            grown = flat is not None and flat.dtype == dtype and flat.size < size
            flat = np.empty(int(size * self.GROWTH) if grown else size, dtype)
            self._scratch[name] = flat
        return flat[:size].reshape(shape)

    def labels_from_logits(self, logits):
        """(K, h, w) float logits -> (h, w) uint8 argmax, by a running maximum (first wins ties)."""
        _, h, w = logits.shape
        return running_argmax(
            logits,
            self._buffer("best", (h, w), logits.dtype),
            self._buffer("argmax", (h, w), np.uint8),
            self._buffer("mask", (h, w), np.bool_),
        )

    @property
    def fused(self):
        """True when this post-processing runs the fused labels head."""
        return self._fused is not None

    @property
    def head_impl(self):
        """Which fused head runs ("compiled" or "numpy"), None without one."""
        return self._fused.impl if self._fused is not None else None

    @property
    def last_mixed(self):
        """Share of output pixels the fused head last interpolated over all classes."""
        return self._fused.last_mixed if self._fused is not None else None

    def __call__(self, output, frame_hw, out=None, network_hw=None):
        """One image's output ((h, w) labels or (K, h, w) logits) -> (H, W) uint8 in ``out``.

        ``network_hw``: the network's input size, where a fused head upsamples to (default: the
        frame's size)."""
        height, width = frame_hw
        if out is None:
            out = np.empty((height, width), np.uint8)
        elif out.shape != (height, width) or out.dtype != np.uint8:
            raise FrameError(
                "out must be a ({}, {}) uint8 array, got {} {}".format(
                    height, width, out.dtype, tuple(out.shape)
                )
            )
        if self._fused is not None and output.ndim == 3:
            size = tuple(network_hw or frame_hw)
            if self.head_target == "frame" or size == (height, width):
                return self._fused(output, (height, width), out=out)
            output = self._fused(output, size, out=self._buffer("fused", size, np.uint8))
        if output.ndim == 3:  # (K, h, w) logits
            if output.shape[1:] != (height, width):
                # Logits are smooth: interpolate them to the frame, then decide per pixel.
                up = self._buffer("up", (output.shape[0], height, width), np.float32)
                for c in range(output.shape[0]):
                    self._cv2.resize(
                        np.ascontiguousarray(output[c], np.float32),
                        (width, height),
                        dst=up[c],
                        interpolation=self._cv2.INTER_LINEAR,
                    )
                output = up
            np.copyto(out, self.labels_from_logits(output))
            return out
        if output.shape == (height, width):
            np.copyto(out, output, casting="unsafe")  # int64 labels < 256 -> uint8
            return out
        small = output
        if small.dtype != np.uint8:
            small = self._buffer("labels", output.shape, np.uint8)
            np.copyto(small, output, casting="unsafe")
        self._cv2.resize(small, (width, height), dst=out, interpolation=self._cv2.INTER_NEAREST)
        return out


def palette_from_card(card):
    """(K, 3) uint8 RGB palette: the card's own, else its dataset's, else a generic one."""
    model = card.get("model", {})
    num_classes = int(model.get("num_classes", 0))
    palette = model.get("palette")
    if not palette:
        record = None
        if model.get("dataset"):
            try:
                record = datasets.get(model["dataset"])
            except Exception:  # an unknown dataset name: fall back on the class count
                record = None
        if record is None or len(record.palette) != num_classes:
            record = datasets.for_num_classes(num_classes)
        palette = record.palette if record is not None else datasets.generic_palette(num_classes)
    palette = np.asarray(palette, dtype=np.int64)
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.min() < 0 or palette.max() > 255:
        raise FrameError(
            "the model card's palette must be a list of [r, g, b] triples in "
            "0..255, got an array of shape {}".format(palette.shape)
        )
    return palette.astype(np.uint8)


class Visualizer(object):
    """``colorize(labels)`` and ``overlay(frame, labels, alpha)`` in the frames' channel order."""

    def __init__(self, palette_rgb, order="BGR"):
        # 256 entries so that any uint8 label indexes it; labels beyond the palette are black.
        table = np.zeros((256, 3), np.uint8)
        table[: min(len(palette_rgb), 256)] = palette_rgb[:256]
        self.order = order.upper()
        self._table = table[:, ::-1].copy() if self.order == "BGR" else table

    def colorize(self, labels):
        """(H, W) integer labels -> (H, W, 3) uint8 colour image."""
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.dtype.kind not in "ui":
            raise FrameError(
                "colorize expects an (H, W) integer label map, got {} {}".format(
                    labels.dtype, tuple(labels.shape)
                )
            )
        if labels.dtype != np.uint8:
            if labels.size and (labels.min() < 0 or labels.max() > 255):
                raise FrameError("labels must lie in 0..255 to be coloured")
            labels = labels.astype(np.uint8)
        return np.take(self._table, labels, axis=0)

    def overlay(self, frame, labels, alpha=0.5):
        """Blend the colourized ``labels`` over ``frame`` (H x W x 3 uint8); alpha in [0, 1]."""
        cv2 = require("cv2", "the runtime")

        if not 0.0 <= float(alpha) <= 1.0:
            raise FrameError("alpha must lie in [0, 1], got {}".format(alpha))
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise FrameError(
                "overlay expects an H x W x 3 uint8 frame, got {} {}".format(
                    frame.dtype, tuple(frame.shape)
                )
            )
        colours = self.colorize(labels)
        if colours.shape != frame.shape:
            raise FrameError(
                "labels of shape {} do not match the frame of shape {}".format(
                    tuple(np.shape(labels)), tuple(frame.shape)
                )
            )
        return cv2.addWeighted(
            np.ascontiguousarray(frame), 1.0 - float(alpha), colours, float(alpha), 0.0
        )
