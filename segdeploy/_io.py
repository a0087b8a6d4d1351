"""Atomic file writes: an artifact is either complete at its final name or absent.

Every write failure (full disk, read-only target, a path that is a directory, no permission) is
an ``OutputError``: one line naming the file and what to do, never a traceback. Files follow the
process umask like any ``open()`` would (``mkstemp`` alone would leave them 0600).

Python 3.6 compatible (used on the device side).
"""

import contextlib
import errno
import json
import os
import tempfile

# errno values that mean "this output cannot be written here", as opposed to a bug
_WRITE_ERRNOS = {
    getattr(errno, name)
    for name in (
        "ENOSPC",
        "EDQUOT",
        "EROFS",
        "EACCES",
        "EPERM",
        "EISDIR",
        "ENOTDIR",
        "ENOENT",
        "EFBIG",
        "ENAMETOOLONG",
        "EEXIST",
        "EXDEV",
        "EIO",
    )
    if hasattr(errno, name)
}


def current_umask():
    """The process umask, read without changing it where Linux allows (``/proc``)."""
    try:
        with open("/proc/self/status", "r") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # the portable way sets it; put it straight back
    os.umask(mask)
    return mask


def file_mode():
    """The mode ``open(path, 'w')`` would give a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def describe_os_error(exc):
    """'No space left on device' and friends, without Python's '[Errno 28]' prefix."""
    return exc.strerror or str(exc) or type(exc).__name__


def output_error(path, exc, what="output file"):
    """The OutputError for an OSError raised while writing ``path``."""
    from .errors import OutputError

    reason = describe_os_error(exc)
    hint = "free some space or write elsewhere"
    if getattr(exc, "errno", None) in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "choose a location you can write to"
    elif getattr(exc, "errno", None) == errno.EISDIR or os.path.isdir(path):
        hint = "give a file name, not a directory"
    elif getattr(exc, "errno", None) in (errno.ENOENT, errno.ENOTDIR):
        hint = "create its directory first"
    return OutputError("cannot write {} {}: {}; {}".format(what, path, reason, hint))


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched; an OSError
    that means the output cannot be written becomes a one-line ``OutputError``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise output_error(path, OSError(errno.EISDIR, os.strerror(errno.EISDIR)))
    try:
        fd, tmp = tempfile.mkstemp(
            prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
        )
        os.close(fd)
    except OSError as exc:
        raise output_error(path, exc) from None
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            try:
                os.remove(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise output_error(path, exc) from None
        raise


def write_bytes(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_json(path, obj):
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    write_bytes(path, text.encode("utf-8"))


def read_json(path, what="JSON file"):
    text = read_text(path, what)
    try:
        return json.loads(text)
    except ValueError as exc:
        from .errors import SegDeployError

        raise SegDeployError("{} {} is not valid JSON: {}".format(what, path, exc)) from None


MAX_TEXT_BYTES = 16 << 20


def read_text(path, what="text file", error=None, limit=MAX_TEXT_BYTES):
    """The text of a file a user hands in (a classes list, a sidecar), decoded as UTF-8 (a BOM
    is dropped). Anything else is ``error`` (default SegDeployError) in one line: unreadable,
    too large, or not UTF-8, naming the byte where decoding failed."""
    from .errors import SegDeployError

    error = error or SegDeployError
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise error("cannot read {} {}: {}".format(what, path, exc.strerror or exc)) from None
    if len(data) > limit:
        raise error(
            "{} {} is larger than {} MiB; is it the right file?".format(what, path, limit >> 20)
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(
            "{} {} is not UTF-8 text (byte {} is 0x{:02x}); save it as UTF-8".format(
                what, path, exc.start, data[exc.start]
            )
        ) from None


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

    if os.path.exists(path) and not os.path.isdir(path):
        raise SegDeployError(
            "output directory {} is a file; pass --out with a directory".format(path)
        )
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
    _probe(path, path, "output directory")
    return path


def check_writable_file(path, flag="output"):
    """OutputError unless a file can be written at ``path`` (checked before any work is done).

    The file itself is not created; its directory must exist and take a new file (a probe is
    written and removed, which also catches read-only mounts and a full disk's inode table).
    """
    from .errors import OutputError

    path = os.fspath(path)
    if os.path.isdir(path):
        raise OutputError("{} {} is a directory; give a file name".format(flag, path))
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OutputError(
            "{} {}: directory {} does not exist; create it first".format(flag, path, directory)
        )
    _probe(directory, path, flag)
    return path


def _probe(directory, path, what):
    try:
        fd, probe = tempfile.mkstemp(prefix=".segdeploy-probe-", dir=directory)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise output_error(path, exc, what) from None


def missing_file(path, what):
    """The one-line reason ``path`` is not a readable file: a directory, or not there at all."""
    if os.path.isdir(path):
        return "{} {} is a directory, not a file".format(what, path)
    return "{} {} does not exist".format(what, path)
