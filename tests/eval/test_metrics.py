"""Confusion matrix and scores: a known confusion computed by hand, and exactness at scale."""

import math
import subprocess
import sys
import time

import numpy as np
import pytest

from segdeploy.eval.metrics import ConfusionMatrix, iou_from_matrix, mean_ignoring_nan


def _pixels(pairs):
    """[(target, prediction, count), ...] -> (1, N) uint8 target and prediction maps."""
    target = np.concatenate([np.full(n, t, np.uint8) for t, p, n in pairs])[None]
    prediction = np.concatenate([np.full(n, p, np.uint8) for t, p, n in pairs])[None]
    return target, prediction


def test_known_confusion_by_hand():
    # Four classes. Ground truth 0: 5 right, 1 taken for class 1. Ground truth 1: 3 right,
    # 2 taken for 0, 1 for 2. Class 2 is predicted once but never in the labels; class 3 is
    # neither (no IoU). 255 pixels are ignored whatever was predicted.
    target, prediction = _pixels(
        [(0, 0, 5), (0, 1, 1), (1, 1, 3), (1, 0, 2), (1, 2, 1), (255, 0, 7), (255, 3, 4)]
    )
    confusion = ConfusionMatrix(4)
    confusion.update(target, prediction)
    expected = np.array([[5, 1, 0, 0], [2, 3, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert (confusion.matrix == expected).all()
    # IoU = TP / (TP + FP + FN): class 0: 5 / (5 + 2 + 1); class 1: 3 / (3 + 1 + 3);
    # class 2: 0 / (0 + 1 + 0); class 3: undefined.
    iou = confusion.iou
    assert iou[0] == pytest.approx(5 / 8, abs=1e-15)
    assert iou[1] == pytest.approx(3 / 7, abs=1e-15)
    assert iou[2] == 0.0 and math.isnan(iou[3])
    assert confusion.miou == pytest.approx((5 / 8 + 3 / 7 + 0) / 3, abs=1e-15)
    assert confusion.pixel_accuracy == pytest.approx(8 / 12, abs=1e-15)
    assert confusion.mean_accuracy == pytest.approx((5 / 6 + 3 / 6) / 2, abs=1e-15)
    assert confusion.fwiou == pytest.approx(6 / 12 * 5 / 8 + 6 / 12 * 3 / 7, abs=1e-15)
    assert confusion.labelled_pixels == 12


def test_matches_a_pixel_loop_and_accumulates(tmp_path):
    rng = np.random.default_rng(0)
    k = 19
    confusion = ConfusionMatrix(k)
    naive = np.zeros((k, k), np.int64)
    for _ in range(3):
        target = rng.integers(0, k, size=(37, 53)).astype(np.uint8)
        target[rng.random(target.shape) < 0.2] = 255
        prediction = rng.integers(0, k, size=target.shape).astype(np.uint8)
        for t, p in zip(target.ravel().tolist(), prediction.ravel().tolist()):
            if t < k:
                naive[t, p] += 1
        confusion.update(target, prediction)
    assert (confusion.matrix == naive).all()
    assert confusion.matrix.sum() > 0.7 * 3 * 37 * 53


def test_counts_do_not_overflow_at_full_resolution():
    # 1024x2048 of one class repeated: int64 counts stay exact far past 2**32 pixels.
    confusion = ConfusionMatrix(2)
    target = np.ones((1024, 2048), np.uint8)
    confusion.update(target, target)
    confusion.matrix *= 3000  # as after 3000 images
    assert confusion.matrix[1, 1] == 3000 * 1024 * 2048
    assert confusion.iou[1] == 1.0 and math.isnan(confusion.iou[0])


def test_prediction_outside_the_classes_is_refused():
    confusion = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=">= 3"):
        confusion.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 5, np.uint8))


def test_mean_skips_nan_as_the_official_average_does():
    assert mean_ignoring_nan([0.5, float("nan"), 0.25]) == pytest.approx(0.375)
    assert math.isnan(mean_ignoring_nan([float("nan")]))
    assert math.isnan(iou_from_matrix(np.zeros((2, 2), np.int64))[0])


def test_import_is_light():
    code = "import sys, segdeploy.eval; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    heavy = set(out.stdout.split()) & {"torch", "onnx", "onnxruntime", "cv2", "matplotlib"}
    assert not heavy, heavy


class _Stream(object):
    def __init__(self, tty):
        self.tty = tty
        self.text = []

    def isatty(self):
        return self.tty

    def write(self, text):
        self.text.append(text)

    def flush(self):
        pass


def test_progress_lines_in_logs_and_a_bar_on_terminals():
    from segdeploy.eval.evaluate import Progress

    log = _Stream(tty=False)
    progress = Progress(40, ["a", "b"], True, log)
    for done in range(1, 41):
        progress.update(done, [0.5, float("nan")])
    progress.close()
    lines = "".join(log.text).splitlines()
    assert len(lines) == 10  # about ten lines per run, whatever the length
    assert lines[-1].startswith("segeval: 40/40 images, ") and "images/s" in lines[-1]
    assert lines[-1].endswith("running mIoU 50.00 / -")

    pytest.importorskip("tqdm")
    terminal = _Stream(tty=True)
    progress = Progress(3, ["a"], True, terminal)
    for done in range(1, 4):
        time.sleep(0.12)  # past tqdm's minimum redraw interval
        progress.update(done, [0.25])
    progress.close()
    text = "".join(terminal.text)
    assert "3/3" in text and "img/s" in text and "mIoU 25.00" in text
    quiet = _Stream(tty=False)
    Progress(3, ["a"], False, quiet).update(3, [0.25])
    assert quiet.text == []
