"""Atomic file writes: an artifact is either complete at its final name or absent.

Python 3.6 compatible (used on the device side).
"""

import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
    )
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_bytes(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_json(path, obj):
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    write_bytes(path, text.encode("utf-8"))


def read_json(path):
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def _json_default(obj):
    # numpy scalars and arrays, tuples inside dataclasses, paths
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "__fspath__"):
        return os.fspath(obj)
    raise TypeError("not JSON serializable: {!r}".format(type(obj)))


def check_writable_dir(path):
    """Create ``path`` if needed; raise SegDeployError if it cannot be written."""
    from .errors import SegDeployError

    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise SegDeployError(
            "cannot create output directory {}: {}".format(path, exc.strerror or exc)
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SegDeployError(
            "output directory {} is not writable; pass --out with a directory "
            "you can write to".format(path)
        )
    return path
