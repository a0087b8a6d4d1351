"""Native libraries' own stderr kept from the user: OpenCV, FFmpeg, libpng and GStreamer print
straight to file descriptor 2 when a decode or an open fails ("moov atom not found", "libpng
error: Read Error", "[ WARN:0@0.1] global cap.cpp ..."), before segdeploy's one line says the
same thing in words. ``native_stderr_kept`` sends descriptor 2 to a temporary file for the
duration of a command while Python's own ``sys.stderr`` keeps writing to the terminal; with
``show`` (``-v``) nothing is redirected and those lines appear as they happen.

Python 3.6 compatible (device side).
"""

import contextlib
import io
import os
import sys
import tempfile


class Kept(object):
    """What the native libraries printed while kept: ``text()`` after the block."""

    def __init__(self, capture=None):
        self._capture = capture
        self._text = ""

    def _finish(self):
        if self._capture is None:
            return
        try:
            self._capture.seek(0)
            self._text = self._capture.read().decode("utf-8", "replace")
        finally:
            self._capture.close()
            self._capture = None

    def text(self):
        return self._text


def _stderr_is_fd2():
    try:
        return sys.stderr is not None and sys.stderr.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False  # replaced by a test harness or an IDE: not descriptor 2


@contextlib.contextmanager
def native_stderr_kept(show=False):
    """Inside, whatever native code writes to descriptor 2 goes to a temporary file (see
    ``Kept.text()``); ``sys.stderr`` still reaches the terminal. ``show``: nothing changes."""
    if show:
        yield Kept()
        return
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError):
        pass
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a daemon): nothing to keep
        yield Kept()
        return
    capture = tempfile.TemporaryFile()
    kept = Kept(capture)
    python_stderr = sys.stderr
    replaced = _stderr_is_fd2()
    if replaced:  # Python's own lines keep going where descriptor 2 went before
        sys.stderr = io.TextIOWrapper(
            io.FileIO(os.dup(saved), "w"),
            encoding=getattr(python_stderr, "encoding", None) or "utf-8",
            errors="backslashreplace",
            line_buffering=True,
        )
    os.dup2(capture.fileno(), 2)
    try:
        yield kept
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if replaced:
            try:
                sys.stderr.flush()
                sys.stderr.close()
            finally:
                sys.stderr = python_stderr
        kept._finish()
