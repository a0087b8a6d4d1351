"""Where segpredict's frames come from: an image, a folder or glob of images, a video file, a camera
index, or a stream (RTSP/HTTP URL or a GStreamer pipeline such as a Jetson's CSI camera).

Each source is an iterator of ``Frame(index, name, image)`` (BGR uint8) with ``kind`` (``images``,
``video``, ``camera``, ``stream``), ``live`` (frames arrive in real time and may be dropped),
``fps``, ``size`` (H, W) when known, ``count`` when known, and ``close()``. Python 3.6 compatible.
"""

import glob
import os
from collections import namedtuple

from .._deps import require
from ..errors import SegDeployError

Frame = namedtuple("Frame", ["index", "name", "image"])

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
STREAM_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class ImageSource(object):
    """A list of image files, read one by one (a file that cannot be decoded is an error)."""

    kind = "images"
    live = False

    def __init__(self, paths):
        self.paths = paths
        self.count = len(paths)
        self.fps = None
        self.size = None
        self._cv2 = require("cv2", "segpredict")

    def __iter__(self):
        for index, path in enumerate(self.paths):
            image = self._cv2.imread(path, self._cv2.IMREAD_COLOR)
            if image is None:
                raise SegDeployError(
                    "cannot read {} as an image (corrupt, or a format OpenCV does not "
                    "decode); remove it from --source or convert it to PNG/JPEG".format(path)
                )
            yield Frame(index, os.path.splitext(os.path.basename(path))[0], image)

    def close(self):
        pass


class CaptureSource(object):
    """Frames from ``cv2.VideoCapture``: a video file, a camera index or a stream."""

    def __init__(self, capture, kind, name, description):
        cv2 = require("cv2", "segpredict")
        self._capture = capture
        self.kind = kind
        self.live = kind in ("camera", "stream")
        self.name = name
        self.description = description
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 and fps < 1000 else None
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.count = count if (count > 0 and not self.live) else None
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        self.size = (height, width) if height > 0 and width > 0 else None

    def __iter__(self):
        index = 0
        while True:
            ok, image = self._capture.read()
            if not ok or image is None:
                if index == 0:
                    raise SegDeployError(
                        "{} opened but gave no frame; check that it is a readable {}".format(
                            self.description, "video" if self.kind == "video" else self.kind
                        )
                    )
                return
            yield Frame(index, "{}_{:06d}".format(self.name, index), image)
            index += 1

    def close(self):
        self._capture.release()


def _capture(cv2, target, api=None):
    capture = cv2.VideoCapture(target) if api is None else cv2.VideoCapture(target, api)
    return capture if capture is not None and capture.isOpened() else None


def open_source(text):
    """``--source`` text -> a source, or SegDeployError saying what was expected."""
    text = str(text).strip()
    if not text:
        raise SegDeployError(
            "--source is empty; give an image, a folder, a video or a camera index"
        )
    cv2 = require("cv2", "segpredict")
    if text.isdigit():
        index = int(text)
        capture = _capture(cv2, index)
        if capture is None:
            raise SegDeployError(
                "--source {0}: no camera at index {0} on this machine (is one connected, and "
                "may this user open /dev/video{0}?)".format(index)
            )
        return CaptureSource(capture, "camera", "camera{}".format(index), "camera {}".format(index))
    if "!" in text or text.lower().startswith(STREAM_SCHEMES):
        gstreamer = "!" in text
        api = cv2.CAP_GSTREAMER if gstreamer else None
        capture = _capture(cv2, text, api)
        if capture is None:
            raise SegDeployError(
                "--source {}: the {} cannot be opened{}".format(
                    text,
                    "GStreamer pipeline" if gstreamer else "stream",
                    " (this OpenCV was built without GStreamer)"
                    if gstreamer and "GStreamer:                   YES" not in _build_info(cv2)
                    else "",
                )
            )
        return CaptureSource(capture, "stream", "stream", "the stream")
    if os.path.isdir(text):
        paths = sorted(
            os.path.join(text, f)
            for f in os.listdir(text)
            if f.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(text, f))
        )
        if not paths:
            raise SegDeployError(
                "--source {}: the folder holds no images ({})".format(
                    text, ", ".join(IMAGE_SUFFIXES)
                )
            )
        return ImageSource(paths)
    if any(c in text for c in "*?["):
        paths = sorted(p for p in glob.glob(text) if p.lower().endswith(IMAGE_SUFFIXES))
        if not paths:
            raise SegDeployError("--source {}: the pattern matches no images".format(text))
        return ImageSource(paths)
    if not os.path.exists(text):
        raise SegDeployError(
            "--source {}: no such file or folder (give an image, a folder, a glob in quotes, "
            "a video, a camera index or a stream URL)".format(text)
        )
    if text.lower().endswith(IMAGE_SUFFIXES):
        return ImageSource([text])
    capture = _capture(cv2, text)
    if capture is None:
        raise SegDeployError(
            "--source {}: OpenCV cannot open it as a video (known video suffixes: {})".format(
                text, ", ".join(VIDEO_SUFFIXES)
            )
        )
    name = os.path.splitext(os.path.basename(text))[0]
    return CaptureSource(capture, "video", name, "video {}".format(text))


def _build_info(cv2):
    try:
        return cv2.getBuildInformation()
    except Exception:  # an OpenCV without it: say nothing about GStreamer
        return "GStreamer:                   YES"
