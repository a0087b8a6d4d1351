"""segeval end to end: two engines side by side, the written files, other datasets, the API."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from eval_support import make_camvid, make_folder

import segdeploy
from segdeploy.datasets import CITYSCAPES
from segdeploy.eval import compare, evaluate, open_dataset
from segdeploy.eval.cli import main as segeval


def _run(capsys, *argv):
    code = segeval([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_fp32_and_fp16_side_by_side(tmp_path, capsys, engines, cityscapes):
    fp32, fp16 = engines
    root, count = cityscapes
    files = {k: tmp_path / ("eval." + k) for k in ("json", "csv", "png")}
    code, out, err = _run(
        capsys,
        *("--engine", fp32, "--engine", fp16, "--dataset", "cityscapes", "--root", root),
        *("--json", files["json"], "--csv", files["csv"], "--confusion", files["png"]),
        *("--save-predictions", tmp_path / "pred"),
    )
    assert code == 0, err
    # One prediction folder per engine, each complete for the official script.
    for name in ("regseg_tiny.onnx", "regseg_tiny.fp16.onnx"):
        assert len(list((tmp_path / "pred" / name).rglob("*_pred_labelIds.png"))) == count
    data = json.loads(files["json"].read_text())
    a, b = data["engines"]
    assert [a["engine"]["precision"], b["engine"]["precision"]] == ["fp32", "fp16"]
    assert a["images"] == b["images"] == count == data["dataset"]["images"]
    assert 0.05 < a["miou"] < 0.95 and 0.05 < b["miou"] < 0.95
    # Both mIoUs and their difference are printed, as the JSON has them.
    assert "regseg_tiny.onnx: onnxruntime fp32 mIoU {:.2f} %".format(100 * a["miou"]) in out
    assert "regseg_tiny.fp16.onnx: onnxruntime fp16 mIoU {:.2f} %".format(100 * b["miou"]) in out
    pair = data["comparisons"][0]
    assert pair["miou_difference"] == pytest.approx(b["miou"] - a["miou"], abs=1e-12)
    assert "mIoU difference {:+.2f} points".format(100 * pair["miou_difference"]) in out
    # FP16 changes some labels, not many: the agreement is high and below 1, and the images
    # where the engines disagree most are named in order.
    assert 0.97 < pair["agreement"] < 1.0
    worst = [w["disagreement"] for w in pair["most_disagreeing"]]
    assert worst and worst == sorted(worst, reverse=True) and worst[0] > 0
    assert "disagree most on: " + pair["most_disagreeing"][0]["image"] in out
    # The JSON's confusion matrix gives back its own scores.
    matrix = np.array(a["confusion"])
    tp = np.diag(matrix)
    assert a["pixel_accuracy"] == pytest.approx(tp.sum() / matrix.sum(), abs=1e-12)
    # CSV: one row per class, one column per engine, then the summary rows.
    rows = list(csv.reader(files["csv"].open()))
    assert rows[0] == ["class", "regseg_tiny.onnx IoU %", "regseg_tiny.fp16.onnx IoU %"]
    assert [r[0] for r in rows[1:20]] == list(CITYSCAPES.class_names)
    summary = {r[0]: r[1:] for r in rows[20:]}
    assert float(summary["mIoU"][1]) == pytest.approx(100 * b["miou"], abs=1e-5)
    # PNG: a readable image, one panel per engine (wider than tall).
    cv2 = pytest.importorskip("cv2")
    image = cv2.imread(str(files["png"]))
    assert image is not None and image.shape[1] > 1.5 * image.shape[0] > 500
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20


def test_api_report_and_worker_counts_agree(engines, cityscapes):
    root, count = cityscapes
    dataset = open_dataset("cityscapes", root)
    threaded = evaluate(engines[0], dataset, progress=False, workers=3)
    with segdeploy.Runtime(engines[0]) as runtime:
        serial = evaluate(runtime, "cityscapes", root=root, progress=False, workers=0, limit=2)
        assert not runtime._closed  # a Runtime passed in stays the caller's to close
    assert threaded.images == count and serial.images == 2
    assert 0 < threaded.miou < 1 and len(threaded.class_iou()) == 19
    # The first two images alone, counted again, are a part of the whole.
    assert (serial.matrix <= threaded.matrix).all() and serial.matrix.sum() > 0
    again = compare([engines[0]], dataset, progress=False, workers=1, limit=2).reports[0]
    assert (again.matrix == serial.matrix).all()


def test_folder_dataset(tmp_path, capsys, engines):
    with segdeploy.Runtime(engines[0]) as runtime:
        make_folder(str(tmp_path / "mine"), runtime, CITYSCAPES.class_names, split="val")
    code, out, err = _run(
        capsys,
        *("--engine", engines[0], "--dataset", "folder", "--root", tmp_path / "mine"),
        *("--split", "val", "--save-predictions", tmp_path / "pred", "--no-progress"),
    )
    assert code == 0, err
    assert "folder split 'val': 4 images" in out
    assert "warning" not in err  # the classes file names the engine's classes
    names = list(CITYSCAPES.class_names)
    names[2] = "house"
    (tmp_path / "mine" / "classes.txt").write_text("\n".join(names) + "\n")
    code, out, err = _run(
        capsys,
        *("--engine", engines[0], "--dataset", "folder", "--root", tmp_path / "mine"),
        *("--split", "val", "--no-progress"),
    )
    assert code == 0 and "segeval: warning: " in err and "building (house here)" in err
    assert "house" in out
    saved = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert saved == ["img{}.png".format(i) for i in range(4)]


def test_camvid_dataset(tmp_path, camvid_engine):
    with segdeploy.Runtime(camvid_engine) as runtime:
        make_camvid(str(tmp_path / "camvid"), runtime)
    report = evaluate(camvid_engine, "camvid", root=str(tmp_path / "camvid"), progress=False)
    assert report.images == 3 and report.dataset["split"] == "test"
    assert len(report.iou) == 11 and 0 < report.miou < 1


def test_user_mistakes_are_one_line(tmp_path, capsys, engines, cityscapes, camvid_engine):
    root, _ = cityscapes
    base = ("--dataset", "cityscapes", "--root", root, "--no-progress")
    # Cityscapes' test split ships labels without any evaluated class: nothing to score.
    test_split = tmp_path / "withheld"
    _withheld(root, test_split)
    withheld = ("--dataset", "cityscapes", "--root", test_split, "--split", "test")
    cases = [
        (("--engine", engines[0], "--no-progress") + withheld, "Cityscapes test labels"),
        (("--engine", camvid_engine) + base, "predicts 11 classes"),
        (("--engine", tmp_path / "missing.onnx") + base, "missing.onnx"),
        (("--engine", engines[0], "--res", "64by128") + base, "HEIGHTxWIDTH"),
        (("--engine", engines[0], "--limit", "0") + base, "--limit"),
        (("--engine", engines[0], "--json", tmp_path) + base, "is a directory"),
    ]
    for argv, words in cases:
        code, out, err = _run(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith("segeval: error: ") and words in lines[0], lines[0]


def _withheld(root, target):
    """A copy of the dataset as its test split, every label pixel 'unlabeled' (id 0)."""
    import shutil

    cv2 = pytest.importorskip("cv2")
    shutil.copytree(os.path.join(root, "leftImg8bit", "val"), target / "leftImg8bit" / "test")
    for path in Path(root, "gtFine", "val").rglob("*_labelIds.png"):
        out = target / "gtFine" / "test" / path.parent.name / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), np.zeros_like(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)))


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        segeval(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == "segeval " + segdeploy.__version__
