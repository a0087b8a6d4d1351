"""Frame checking and pre-processing: an OpenCV frame in, the engine's normalized input out.

A frame is what ``cv2.imread`` / ``cv2.VideoCapture.read`` return: H x W x 3 uint8 in BGR order
(RGB when the runtime is opened with ``rgb=True``). ``check_frame`` either converts a frame in a
documented way or raises ``FrameError`` saying what was expected and what came:

================================  ==============================================================
frame                             what happens
================================  ==============================================================
H x W x 3 uint8                   used as is
H x W (grayscale), H x W x 1      the one plane is fed to all three input channels
H x W x 4 uint8 (BGRA / RGBA)     the alpha plane is ignored
1 x H x W x C                     the leading batch axis of one is dropped (``infer`` only)
non-contiguous (a crop, a flip)   copied to a contiguous array once (OpenCV needs one)
float, uint16, bool, ...          FrameError: convert to uint8 yourself (the scale is yours)
empty, other channel counts       FrameError
N x H x W x C with N > 1          FrameError from ``infer``: use ``infer_batch``
================================  ==============================================================

``Preprocessor`` writes into buffers allocated once. Normalization ``(p * scale - mean) / std``
of a uint8 pixel has only 256 possible values per channel, so it is a 256-entry look-up table per
channel (``cv2.LUT``): one pass per plane, no float arithmetic, measured 0.55 ms at 512x1024 on
this 2-core host against 0.94 ms for numpy multiply-subtract and 4.7 ms for ``blobFromImage``.
Python 3.6 compatible.
"""

import numpy as np

from .._deps import require
from ..errors import FrameError

INTERPOLATIONS = ("linear", "area", "nearest", "cubic")


def _describe(frame):
    return "{} array of shape {}".format(frame.dtype, tuple(frame.shape))


def read_frame(path):
    """An image file -> H x W x 3 uint8 BGR (as cv2.imread), or FrameError saying why not."""
    import os

    cv2 = require("cv2", "reading frames from files")
    text = os.fspath(path)
    if not os.path.isfile(text):
        raise FrameError("cannot read the frame {}: no such file".format(text))
    frame = cv2.imread(text, cv2.IMREAD_COLOR)
    if frame is None:
        raise FrameError(
            "cannot read the frame {}: not an image OpenCV can decode (corrupt, or an "
            "unsupported format)".format(text)
        )
    return frame


def check_frame(frame, order="BGR", allow_batch_of_one=True):
    """Return ``frame`` as a contiguous uint8 H x W or H x W x {3,4} array, or raise FrameError."""
    expected = "an H x W x 3 uint8 {} image (as cv2.imread returns)".format(order)
    if not isinstance(frame, np.ndarray):
        raise FrameError("expected {}, got {}".format(expected, type(frame).__name__))
    if frame.ndim == 4 and allow_batch_of_one:
        if frame.shape[0] != 1:
            raise FrameError(
                "expected one frame ({}), got a batch of {} frames (shape {}); use "
                "infer_batch for batches".format(expected, frame.shape[0], tuple(frame.shape))
            )
        frame = frame[0]
    if frame.size == 0:
        raise FrameError("expected {}, got an empty {}".format(expected, _describe(frame)))
    if frame.dtype != np.uint8:
        if frame.dtype.kind == "f":
            hint = (
                "float frames are ambiguous (0..1 or 0..255?): convert with "
                "np.clip(frame * 255, 0, 255).astype(np.uint8) or frame.astype(np.uint8)"
            )
        else:
            hint = "convert it to uint8 first (e.g. cv2.convertScaleAbs or frame.astype(np.uint8))"
        raise FrameError("expected {}, got a {}; {}".format(expected, _describe(frame), hint))
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (3, 4))):
        raise FrameError(
            "expected {} (grayscale H x W and 4-channel images are converted), got a {}".format(
                expected, _describe(frame)
            )
        )
    if not frame.flags.c_contiguous:
        frame = np.ascontiguousarray(frame)
    return frame


def normalization_tables(scale, mean, std):
    """(3, 256) float32: table[c][p] = (p * scale - mean[c]) / std[c] for every uint8 p."""
    pixels = np.arange(256, dtype=np.float64) * float(scale)
    mean = np.asarray(mean, dtype=np.float64).reshape(3, 1)
    std = np.asarray(std, dtype=np.float64).reshape(3, 1)
    return ((pixels[None, :] - mean) / std).astype(np.float32)


def interpolation_flag(cv2, interpolation):
    """'linear' | 'area' | 'nearest' | 'cubic' -> the OpenCV flag, or FrameError."""
    if interpolation not in INTERPOLATIONS:
        raise FrameError(
            "interpolation must be one of {}, got {!r}".format(
                ", ".join(INTERPOLATIONS), interpolation
            )
        )
    return {
        "linear": cv2.INTER_LINEAR,
        "area": cv2.INTER_AREA,
        "nearest": cv2.INTER_NEAREST,
        "cubic": cv2.INTER_CUBIC,
    }[interpolation]


class _FrameBatch(object):
    """Batching shared by the host-side input makers: a subclass provides ``buffer(batch)``
    (the reused input array for ``batch`` frames) and ``fill(frame, out)`` (one frame into one
    slice of it): Preprocessor (N, 3, h, w) float32, FramePacker (N, h, w, 3) uint8."""

    def __call__(self, frames):
        """Checked frames -> the (len(frames), ...) buffer filled with them."""
        buf = self.buffer(len(frames))
        for i, frame in enumerate(frames):
            self.fill(frame, buf[i])
        return buf

    def one(self, frame):
        """One checked frame -> the (1, ...) buffer filled with it."""
        buf = self.buffer(1)
        self.fill(frame, buf[0])
        return buf


class Preprocessor(_FrameBatch):
    """uint8 frames -> float32 (N, 3, height, width) normalized input, into one reused buffer.

    ``frame_order`` is the frames' channel order ("BGR" or "RGB"); ``channel_order`` the model's.
    Not thread-safe on its own: the owner (``Runtime``) serializes calls.
    """

    def __init__(
        self,
        height,
        width,
        scale,
        mean,
        std,
        channel_order="RGB",
        frame_order="BGR",
        interpolation="linear",
    ):
        cv2 = require("cv2", "the runtime")

        self._cv2 = cv2
        if interpolation not in INTERPOLATIONS:
            raise FrameError(
                "interpolation must be one of {}, got {!r}".format(
                    ", ".join(INTERPOLATIONS), interpolation
                )
            )
        self._interp = {
            "linear": cv2.INTER_LINEAR,
            "area": cv2.INTER_AREA,
            "nearest": cv2.INTER_NEAREST,
            "cubic": cv2.INTER_CUBIC,
        }[interpolation]
        self.height = int(height)
        self.width = int(width)
        self.frame_order = frame_order.upper()
        channel_order = channel_order.upper()
        tables = normalization_tables(scale, mean, std)  # (3, 256), model channel order
        # Model channel c reads frame plane _source[c]: BGR frames into an RGB model swap 0 and 2.
        self._source = (0, 1, 2) if channel_order == self.frame_order else (2, 1, 0)
        self._tables = [np.ascontiguousarray(tables[c]).reshape(256, 1) for c in range(3)]
        self._plane = np.empty((self.height, self.width), np.uint8)
        self._resized = {}  # channel count -> (h, w[, c]) uint8 resize target
        self._buffers = {}  # batch size -> (N, 3, h, w) float32 input buffer

    def buffer(self, batch=1):
        """The (batch, 3, h, w) float32 input buffer, allocated on first use of that batch size."""
        buf = self._buffers.get(batch)
        if buf is None:
            # Bounded: single frames' buffer and the last batch size (infer_batch on a dynamic
            # batch axis may see every size from 1 to N).
            for key in [k for k in self._buffers if k != 1]:
                del self._buffers[key]
            buf = np.empty((batch, 3, self.height, self.width), np.float32)
            self._buffers[batch] = buf
        return buf

    def _resize(self, frame):
        if frame.shape[:2] == (self.height, self.width):
            return frame
        channels = 1 if frame.ndim == 2 else frame.shape[2]
        target = self._resized.get(channels)
        if target is None:
            shape = (self.height, self.width) + (() if channels == 1 else (channels,))
            target = self._resized[channels] = np.empty(shape, np.uint8)
        self._cv2.resize(frame, (self.width, self.height), dst=target, interpolation=self._interp)
        return target

    def fill(self, frame, out):
        """Write one checked frame into ``out`` ((3, h, w) float32, a slice of the buffer)."""
        cv2 = self._cv2
        image = self._resize(frame)  # (h, w) or (h, w, 3|4) uint8
        for c in range(3):
            if image.ndim == 2:
                plane = image
            else:
                cv2.extractChannel(image, self._source[c], dst=self._plane)
                plane = self._plane
            cv2.LUT(plane, self._tables[c], dst=out[c])


class FramePacker(_FrameBatch):
    """uint8 frames -> the (N, h, w, 3) uint8 input of a graph that normalizes in itself
    (``segexport --input uint8``): only the resize, and a channel swap or a grey/alpha
    conversion where the frame needs one, stay on the host. A frame of the network size in the
    graph's channel order goes to the engine as it is, without a copy.

    ``frame_order`` is the frames' channel order, ``graph_order`` the order the graph takes.
    Not thread-safe on its own: the owner (``Runtime``) serializes calls.
    """

    def __init__(self, height, width, graph_order="BGR", frame_order="BGR", interpolation="linear"):
        cv2 = require("cv2", "the runtime")

        self._cv2 = cv2
        self._interp = interpolation_flag(cv2, interpolation)
        self.height = int(height)
        self.width = int(width)
        self.swap = graph_order.upper() != frame_order.upper()
        self._buffers = {}
        self._resized = {}

    def buffer(self, batch=1):
        """The (batch, h, w, 3) uint8 input buffer, allocated on first use of that batch size."""
        buf = self._buffers.get(batch)
        if buf is None:
            buf = self._buffers[batch] = np.empty((batch, self.height, self.width, 3), np.uint8)
        return buf

    def fill(self, frame, out):
        """Write one checked frame into ``out`` ((h, w, 3) uint8, a slice of the buffer)."""
        cv2 = self._cv2
        image = frame
        sized = frame.shape[:2] == (self.height, self.width)
        if image.ndim == 3 and image.shape[2] == 3 and not self.swap:
            if sized:
                np.copyto(out, image)
            else:
                cv2.resize(image, (self.width, self.height), dst=out, interpolation=self._interp)
            return
        if not sized:
            channels = 1 if image.ndim == 2 else image.shape[2]
            target = self._resized.get(channels)
            if target is None:
                shape = (self.height, self.width) + (() if channels == 1 else (channels,))
                target = self._resized[channels] = np.empty(shape, np.uint8)
            cv2.resize(image, (self.width, self.height), dst=target, interpolation=self._interp)
            image = target
        if image.ndim == 2:
            cv2.cvtColor(image, cv2.COLOR_GRAY2BGR, dst=out)
        elif image.shape[2] == 4:
            cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if self.swap else cv2.COLOR_BGRA2BGR, dst=out)
        else:
            cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=out)

    def one(self, frame):
        """One checked frame -> a (1, h, w, 3) array: a view of the frame when it is already
        what the graph takes, else the filled buffer."""
        if (
            frame.shape == (self.height, self.width, 3)
            and not self.swap
            and frame.flags.c_contiguous
        ):
            return frame[None]
        return _FrameBatch.one(self, frame)
