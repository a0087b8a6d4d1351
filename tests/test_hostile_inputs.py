"""Bad input that slipped through (issue 23, item 11), fixed by class: a non-finite number
anywhere in verification fails it; no manifest commit removes a file it wrote; every text a user
hands in is decoded with a one-line error."""

import json
import os

import numpy as np
import pytest

from segdeploy import manifest
from segdeploy._io import read_text
from segdeploy.errors import SegDeployError


def test_verdict_fails_on_any_non_finite_figure():
    from segdeploy.export import verify

    ref = np.zeros((1, 5, 8, 8), np.float32)
    ref[0, :, :4] = np.arange(5)[:, None, None]  # labels vary: class 4 then class 0
    figures = verify.merge([verify.compare(ref, ref.argmax(1), ref.argmax(1), ref.copy(), 5)])
    assert verify.verdict(figures) == ""
    nan = np.full_like(ref, np.nan)
    # NaN on both sides: argmax says class 0 everywhere, "100 % agreement"; still a failure
    figures = verify.merge([verify.compare(nan, nan.argmax(1), nan.argmax(1), nan.copy(), 5)])
    assert figures["label_agreement"] == 1.0
    reason = verify.verdict(figures)
    assert "PyTorch returned 320 NaN or infinite logits" in reason
    assert "the graph returned 320" in reason
    cand = ref.copy()
    cand[0, 0, 0, 0] = np.inf
    figures = verify.merge([verify.compare(ref, ref.argmax(1), ref.argmax(1), cand, 5)])
    assert "the graph returned 1 NaN or infinite" in verify.verdict(figures)
    assert "non-finite max_abs_logit_error" in verify.verdict(figures)


def test_a_checkpoint_of_nan_weights_does_not_verify(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from segdeploy import models
    from segdeploy.export.cli import main as segexport

    model = models.build("regseg_tiny")
    state = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }
    ckpt = tmp_path / "nan.pth"
    torch.save(state, str(ckpt))
    out = tmp_path / "out"
    argv = ["--model", "regseg_tiny", "--checkpoint", str(ckpt), "--res", "64x128"]
    code = segexport(argv + ["--out", str(out), "--verify-inputs", "1", "--backend", "onnxruntime"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "NaN or infinite logits" in err and err.count("\n") == 1, err
    assert not (out / "regseg_tiny.ort").exists() and not (out / "report.json").exists()


def _stage(out, files, report=None):
    with manifest.lock_directory(str(out)), manifest.Staging(str(out)) as stage:
        for name, data in files.items():
            with open(stage.join(name), "wb") as f:
                f.write(data)
        return stage.commit(sorted(files), report or {"command": "test"})


def test_no_commit_removes_a_file_it_wrote(tmp_path):
    # an old report.json whose manifest lists report.json itself and the new set's files
    files = {name: {"bytes": 1, "sha256": "0" * 64} for name in ("report.json", "m.onnx", "x")}
    (tmp_path / "report.json").write_text(
        json.dumps({"manifest": {"schema": manifest.SCHEMA, "files": files}})
    )
    (tmp_path / "x").write_text("old")
    os.symlink("m.onnx", str(tmp_path / "alias"))  # reaches a written file through a link
    files["alias"] = files["x"]
    (tmp_path / "report.json").write_text(
        json.dumps({"manifest": {"schema": manifest.SCHEMA, "files": files}})
    )
    _stage(tmp_path, {"m.onnx": b"new"})
    assert (tmp_path / "report.json").is_file()  # the manifest just written is there
    assert (tmp_path / "m.onnx").read_bytes() == b"new"
    assert not (tmp_path / "x").exists()  # only the old set had it
    assert manifest.read_manifest(str(tmp_path))["m.onnx"]["bytes"] == 3


def test_user_text_is_utf8_or_one_line(tmp_path):
    good = tmp_path / "good.txt"
    good.write_bytes("\ufeffroad\nsidewalk\n".encode("utf-8"))  # a BOM is dropped
    assert read_text(str(good), "classes").splitlines() == ["road", "sidewalk"]
    bad = tmp_path / "bad.txt"
    bad.write_bytes("road\ntrottoir pi\xe9ton\n".encode("latin-1"))
    with pytest.raises(SegDeployError) as info:
        read_text(str(bad), "the classes file")
    assert str(info.value) == (
        "the classes file {} is not UTF-8 text (byte 16 is 0xe9); save it as UTF-8".format(bad)
    )
    with pytest.raises(SegDeployError):
        read_text(str(tmp_path / "missing.txt"))


def _folder_dataset(root, classes_bytes):
    import cv2

    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "masks"))
    cv2.imwrite(os.path.join(root, "images", "a.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(os.path.join(root, "masks", "a.png"), np.zeros((8, 8), np.uint8))
    with open(os.path.join(root, "classes.txt"), "wb") as f:
        f.write(classes_bytes)


def test_segeval_classes_file_not_utf8_is_one_line(tmp_path, capsys):
    pytest.importorskip("cv2")
    from segdeploy.eval.cli import main as segeval

    root = str(tmp_path / "data")
    _folder_dataset(root, "route\n\xe9l\xe9ment\n".encode("latin-1"))
    engine = tmp_path / "e.onnx"
    engine.write_bytes(b"not opened: the dataset is read first")
    code = segeval(["--engine", str(engine), "--dataset", "folder", "--root", root])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is not UTF-8 text" in err, err


def test_segexport_classes_file_not_utf8_is_one_line(tmp_path, capsys):
    from segdeploy.export.cli import main as segexport

    names = tmp_path / "names.txt"
    names.write_bytes(b"a\n\xff\xfe\n")
    argv = ["--model", "regseg_tiny", "--classes", str(names), "--out", str(tmp_path / "o")]
    code = segexport(argv + ["--res", "64x128"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not UTF-8" in err, err
