"""One export = one consistent set of files, and a way for every reader to check it.

An export folder holds artifacts (``regseg.onnx``, ``regseg.onnx.json``, ``regseg.ort``, ...) and
``report.json``, whose ``manifest`` section lists each artifact's size and SHA-256:

    {"manifest": {"schema": "segdeploy.manifest/1",
                  "files": {"regseg.onnx": {"bytes": 123, "sha256": "..."}, ...}}, ...}

Writers (segexport, segbuild) hold ``lock_directory(out)`` for the whole run, write everything
into a private ``Staging`` folder inside ``out`` and ``commit`` at the end: each artifact is moved
into place with ``os.replace`` and the manifest goes last, with SIGINT/SIGTERM held back while
the files move. Readers (Runtime, segbench, segbuild) call ``verify_artifact(path)``, which says
in one line when a file disagrees with the manifest beside it (a half-copied folder, a file from
another export) and is silent when there is no manifest.

Why the staging folder is inside ``out`` and not beside it: ``out`` is often a mount point (a
container volume), and ``os.replace`` cannot move a file across file systems.

Python 3.6 compatible (device side).
"""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading

from . import _io
from .errors import ManifestError, SegDeployError

MANIFEST_NAME = "report.json"
SCHEMA = "segdeploy.manifest/1"
STAGING_PREFIX = ".segexport-staging-"


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path):
    return {"bytes": os.path.getsize(path), "sha256": sha256_file(path)}


def make_manifest(folder, names):
    """The manifest section for the files ``names`` inside ``folder``."""
    return {
        "schema": SCHEMA,
        "files": {name: file_record(os.path.join(folder, name)) for name in names},
    }


def read_manifest(folder):
    """``{name: {'bytes', 'sha256'}}`` from ``folder/report.json``, or None without a manifest.

    A ``report.json`` that is not a segdeploy manifest (another tool's, or one written before
    manifests existed) counts as no manifest.
    """
    path = os.path.join(folder, MANIFEST_NAME)
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_MANIFEST_BYTES + 1)
    except OSError:
        return None
    if len(data) > _MAX_MANIFEST_BYTES:
        return None
    try:
        report = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    manifest = report.get("manifest") if isinstance(report, dict) else None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        return None
    files = manifest.get("files")
    if not isinstance(files, dict):
        return None
    return {
        k: v
        for k, v in files.items()
        if isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("sha256"), str)
    }


_MAX_MANIFEST_BYTES = 64 << 20


def verify_artifact(path):
    """ManifestError if ``path`` (or its sidecar ``path.json``) disagrees with the manifest in
    its folder. Silent when there is no manifest or the manifest does not list the file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    files = read_manifest(folder)
    if not files:
        return None
    checked = None
    for candidate in (path, path + ".json"):
        record = files.get(os.path.basename(candidate))
        if record is None or not os.path.isfile(candidate):
            continue
        size = os.path.getsize(candidate)
        if size != record.get("bytes") or sha256_file(candidate) != record["sha256"]:
            raise ManifestError(
                "{} does not belong to the export described by {}: its SHA-256 differs from "
                "the manifest's (a later export, an interrupted copy or an edit changed it); "
                "re-run the export, or copy the whole folder again".format(
                    candidate, os.path.join(folder, MANIFEST_NAME)
                )
            )
        checked = record if checked is None else checked
    return checked


# --- writers ------------------------------------------------------------------------------------


@contextlib.contextmanager
def lock_directory(path, prog="segexport"):
    """Hold an exclusive lock on the folder ``path`` (flock on the folder itself, so nothing is
    left behind); a second writer is refused in one line instead of mixing its files in."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking, as before
        yield
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SegDeployError(
                "{} is being written by another {} (or segbuild) right now; wait for it to "
                "finish or pass another --out".format(path, prog)
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class Interrupted(KeyboardInterrupt):
    """SIGTERM turned into an exception, so that ``finally`` blocks clean up."""

    def __init__(self, signum):
        KeyboardInterrupt.__init__(self, signum)
        self.signum = signum


@contextlib.contextmanager
def terminate_as_interrupt():
    """While inside, SIGTERM raises ``Interrupted`` (SIGINT already raises KeyboardInterrupt).

    Only in the main thread: elsewhere Python cannot install handlers, and nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_held():
    """Hold SIGINT and SIGTERM back while inside; deliver one afterwards as ``Interrupted``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []

    def handler(signum, frame):
        pending.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
    if pending:
        raise Interrupted(pending[0])


class Staging(object):
    """A private folder inside ``out`` that collects one export until ``commit``.

    Use inside ``lock_directory(out)``. Leftovers of a writer killed by SIGKILL (which no process
    can catch) are removed by the next writer, which holds the lock, so they cannot be in use.
    """

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.path = None
        self.removed_stale = []

    def __enter__(self):
        for entry in sorted(os.listdir(self.out_dir)):
            if entry.startswith(STAGING_PREFIX):
                shutil.rmtree(os.path.join(self.out_dir, entry), ignore_errors=True)
                self.removed_stale.append(entry)
        try:
            self.path = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.out_dir)  # mode 0700
        except OSError as exc:
            raise _io.output_error(self.out_dir, exc, "staging folder in") from None
        return self

    def __exit__(self, *exc):
        self.discard()
        return False

    def discard(self):
        if self.path is not None and os.path.isdir(self.path):
            shutil.rmtree(self.path, ignore_errors=True)

    def join(self, name):
        return os.path.join(self.path, name)

    def final(self, name):
        return os.path.join(self.out_dir, name)

    def move_out(self, name):
        """Move one staged file into ``out`` now (for files outside the set, e.g. a failed
        graph kept for inspection)."""
        os.replace(self.join(name), self.final(name))
        return self.final(name)

    def commit(self, names, report):
        """Move the staged ``names`` into ``out``, then ``report`` (with the manifest of those
        files) as ``report.json``, last; files of the previous export that this one does not
        replace are removed afterwards. Returns the report written."""
        old = read_manifest(self.out_dir) or {}
        report = dict(report)
        report["manifest"] = make_manifest(self.path, names)
        _io.write_json(self.join(MANIFEST_NAME), report)
        with signals_held():
            try:
                for name in names:
                    os.replace(self.join(name), self.final(name))
                os.replace(self.join(MANIFEST_NAME), self.final(MANIFEST_NAME))
            except OSError as exc:
                raise _io.output_error(self.out_dir, exc, "export into") from None
            _remove_replaced(self.out_dir, old, list(names) + [MANIFEST_NAME])
        self.discard()
        return report


def _remove_replaced(folder, old_names, written):
    """Remove the previous export's files that this one did not write. Never one it wrote: an
    old manifest may list anything (``report.json`` itself, a name that reaches a written file
    on a case-insensitive file system or through a link)."""
    written_paths = [os.path.join(folder, name) for name in written]
    for name in old_names:
        if name in written or not _plain_name(name):
            continue
        path = os.path.join(folder, name)
        if any(_same_file(path, other) for other in written_paths):
            continue
        try:
            os.remove(path)
        except OSError:
            pass


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is not there: not the same file
        return False


def _plain_name(name):
    return (
        bool(name)
        and name not in (".", "..")
        and os.path.basename(name) == name
        and "/" not in name
        and "\\" not in name
    )


def check_plain_name(name, flag="--name"):
    """SegDeployError unless ``name`` is a file name with no folder part (so that artifacts
    cannot land outside ``--out``)."""
    if not _plain_name(name) or name.startswith(".") or "\x00" in name:
        raise SegDeployError(
            "{} must be a plain file name (no folders, not starting with '.'), got {!r}; "
            "choose the folder with --out".format(flag, name)
        )
    return name
