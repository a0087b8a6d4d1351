"""One export = one consistent set: kill segexport at every step, run two at once.

Each export runs in a child process forked from a forkserver that imported torch, onnx and
segdeploy once, so a run costs the pipeline's own time, not an interpreter start. The parent
reads the child's progress lines and sends the signal as step k starts. Afterwards ``--out``
must hold either the previous export or the complete new one, each file matching the manifest
in ``report.json``; no ``.tmp`` file anywhere; after SIGINT/SIGTERM no staging folder either
(after SIGKILL, which no process can catch, the next export sweeps it: checked too).
"""

import multiprocessing
import os
import shutil
import signal
import sys
import time

import pytest

from segdeploy import manifest

STEPS = 7  # regseg_tiny, no --fp16: build, fold, export, verify, write, labels head, engine
NEW = ("--model", "regseg_tiny", "--res", "32x64", "--verify-inputs", "1")
OLD = ("--model", "regseg_tiny", "--res", "64x64", "--verify-inputs", "1")  # other bytes


def _child(argv, log_path):
    # stdout/stderr into one file the parent can read while we run
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from segdeploy.export.cli import main

    code = main(list(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@pytest.fixture(scope="module")
def ctx():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        ["torch", "onnx", "onnxruntime", "onnxslim", "segdeploy.export.pipeline"]
    )
    return context


def _start(ctx, argv, log_path):
    proc = ctx.Process(target=_child, args=(argv, str(log_path)))
    proc.start()
    return proc


def _wait_for(log_path, needle, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(log_path):
            with open(log_path) as f:
                if needle in f.read():
                    return True
        if not proc.is_alive():
            return False
        time.sleep(0.005)
    raise AssertionError("{} never printed {!r}".format(log_path, needle))


def _set(folder):
    """(manifest files, visible files, leftovers) of an export folder."""
    files = manifest.read_manifest(str(folder)) or {}
    visible = sorted(p for p in os.listdir(str(folder)) if not p.startswith("."))
    hidden = sorted(p for p in os.listdir(str(folder)) if p.startswith("."))
    return files, visible, hidden


def _assert_consistent(folder):
    files, visible, _ = _set(folder)
    if not visible:
        return {}
    assert visible == sorted(list(files) + ["report.json"]), visible
    for name in files:
        manifest.verify_artifact(os.path.join(str(folder), name))  # raises on a mismatch
    return files


def _no_tmp(folder):
    for root, _, names in os.walk(str(folder)):
        tmp = [n for n in names if n.endswith(".tmp")]
        assert not tmp, (root, tmp)


@pytest.fixture(scope="module")
def old_export(ctx, tmp_path_factory):
    base = tmp_path_factory.mktemp("old")
    out = base / "out"
    proc = _start(ctx, OLD + ("--out", str(out)), base / "log")
    proc.join(180)
    assert proc.exitcode == 0, (base / "log").read_text()
    files = _assert_consistent(out)
    assert {"regseg_tiny.onnx", "regseg_tiny.ort"} <= set(files)
    return out, files


@pytest.mark.parametrize("start", ["empty", "old"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_kill_at_every_step_leaves_the_old_set_or_the_new_one(
    ctx, tmp_path, old_export, sig, start
):
    outcomes = []
    for step in range(1, STEPS + 1):
        out = tmp_path / "out{}".format(step)
        if start == "old":
            shutil.copytree(str(old_export[0]), str(out))
        log = tmp_path / "log{}".format(step)
        proc = _start(ctx, NEW + ("--out", str(out)), log)
        assert _wait_for(str(log), "[{}/{}]".format(step, STEPS), proc), log.read_text()
        os.kill(proc.pid, sig)
        proc.join(120)
        text = log.read_text()
        assert "Traceback" not in text, text
        files, visible, hidden = _set(out)
        if sig == signal.SIGINT:
            if proc.exitcode != 0:  # the signal landed before the export finished
                assert proc.exitcode == 130, text
                assert text.strip().splitlines()[-1].startswith("segexport: interrupted;")
            assert not hidden, hidden  # the staging folder is removed
        else:
            assert proc.exitcode == -signal.SIGKILL
            assert all(h.startswith(manifest.STAGING_PREFIX) for h in hidden), hidden
            with manifest.lock_directory(str(out)), manifest.Staging(str(out)) as stage:
                assert sorted(stage.removed_stale) == hidden  # the next writer sweeps them
            assert not _set(out)[2]
        _no_tmp(out)
        files = _assert_consistent(out)
        if start == "old" and files == old_export[1]:
            outcomes.append("old")
        elif files:
            assert set(files) == set(old_export[1])  # the complete new set
            assert files != old_export[1]
            outcomes.append("new")
        else:
            assert start == "empty" and not visible
            outcomes.append("empty")
    # the signal lands while the step runs, so every step but the last leaves the old state
    assert outcomes[:-1] == ["old" if start == "old" else "empty"] * (STEPS - 1), outcomes


def test_sigterm_removes_the_staging_folder(ctx, tmp_path, old_export):
    out = tmp_path / "out"
    shutil.copytree(str(old_export[0]), str(out))
    log = tmp_path / "log"
    proc = _start(ctx, NEW + ("--out", str(out)), log)
    assert _wait_for(str(log), "[3/{}]".format(STEPS), proc)
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(120)
    text = log.read_text()
    assert proc.exitcode == 128 + signal.SIGTERM, text
    assert "Traceback" not in text and "segexport: interrupted;" in text
    assert not _set(out)[2]
    _no_tmp(out)
    assert _assert_consistent(out) == old_export[1]


def test_two_exports_into_one_folder_one_refused_the_other_consistent(ctx, tmp_path):
    out = tmp_path / "out"
    first = _start(ctx, NEW + ("--out", str(out)), tmp_path / "a.log")
    assert _wait_for(str(tmp_path / "a.log"), "[1/", first)  # it holds the lock from here
    second = _start(ctx, OLD + ("--out", str(out)), tmp_path / "b.log")
    second.join(120)
    first.join(180)
    refused = (tmp_path / "b.log").read_text().strip().splitlines()
    assert second.exitcode == 2, refused
    assert len(refused) == 1 and refused[0].startswith("segexport: error: "), refused
    assert "being written by another segexport" in refused[0]
    assert first.exitcode == 0, (tmp_path / "a.log").read_text()
    files = _assert_consistent(out)
    assert {"regseg_tiny.onnx", "regseg_tiny.ort"} <= set(files)
    assert not _set(out)[2]
