"""segdeploy.manifest: staging, commit, the lock and verify_artifact, without a model."""

import json
import os

import pytest

from segdeploy import manifest
from segdeploy.errors import ManifestError, SegDeployError


def _stage(out, files, report=None):
    with manifest.lock_directory(str(out)), manifest.Staging(str(out)) as stage:
        for name, data in files.items():
            with open(stage.join(name), "wb") as f:
                f.write(data)
        return stage.commit(sorted(files), report or {"command": "test"})


def test_commit_moves_the_set_in_and_the_manifest_describes_it(tmp_path):
    report = _stage(tmp_path, {"m.onnx": b"graph", "m.onnx.json": b"{}"})
    assert sorted(os.listdir(str(tmp_path))) == ["m.onnx", "m.onnx.json", "report.json"]
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["manifest"] == report["manifest"]
    assert on_disk["manifest"]["files"]["m.onnx"]["bytes"] == 5
    assert manifest.verify_artifact(str(tmp_path / "m.onnx"))["bytes"] == 5


def test_a_new_set_removes_files_only_the_old_set_had(tmp_path):
    _stage(tmp_path, {"m.onnx": b"a", "m.fp16.onnx": b"b"})
    (tmp_path / "notes.txt").write_text("mine")  # not segexport's: kept
    _stage(tmp_path, {"m.onnx": b"c"})
    assert sorted(os.listdir(str(tmp_path))) == ["m.onnx", "notes.txt", "report.json"]


def test_verify_artifact_names_the_file_that_differs(tmp_path):
    _stage(tmp_path, {"m.ort": b"engine", "m.ort.json": b"{}"})
    manifest.verify_artifact(str(tmp_path / "m.ort"))
    (tmp_path / "m.ort.json").write_bytes(b"{ }")
    with pytest.raises(ManifestError, match="m.ort.json does not belong"):
        manifest.verify_artifact(str(tmp_path / "m.ort"))
    (tmp_path / "m.ort.json").write_bytes(b"{}")
    (tmp_path / "m.ort").write_bytes(b"enginE")  # same size, other bytes
    with pytest.raises(ManifestError, match="m.ort does not belong"):
        manifest.verify_artifact(str(tmp_path / "m.ort"))


@pytest.mark.parametrize("report", [None, b"not json", b'{"command": "old, no manifest"}', b"[1]"])
def test_no_manifest_is_silent(tmp_path, report):
    (tmp_path / "m.onnx").write_bytes(b"x")
    if report is not None:
        (tmp_path / "report.json").write_bytes(report)
    assert manifest.verify_artifact(str(tmp_path / "m.onnx")) is None


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    with manifest.lock_directory(str(tmp_path)):
        with pytest.raises(SegDeployError, match="being written by another segexport"):
            with manifest.lock_directory(str(tmp_path)):
                pass
    with manifest.lock_directory(str(tmp_path)):  # released: free again
        pass
    assert not os.listdir(str(tmp_path))  # the lock leaves no file behind


def test_an_error_discards_the_staging_folder_and_keeps_the_old_set(tmp_path):
    _stage(tmp_path, {"m.onnx": b"old"})
    with pytest.raises(RuntimeError):
        with manifest.lock_directory(str(tmp_path)), manifest.Staging(str(tmp_path)) as stage:
            with open(stage.join("m.onnx"), "wb") as f:
                f.write(b"new")
            raise RuntimeError("the build failed")
    assert sorted(os.listdir(str(tmp_path))) == ["m.onnx", "report.json"]
    assert (tmp_path / "m.onnx").read_bytes() == b"old"
    manifest.verify_artifact(str(tmp_path / "m.onnx"))


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "", ".hidden", "a\\b"])
def test_names_must_be_plain(name):
    with pytest.raises(SegDeployError, match="plain file name"):
        manifest.check_plain_name(name)


def test_plain_names_pass():
    assert manifest.check_plain_name("regseg-512x1024_v2") == "regseg-512x1024_v2"
