"""Confusion matrices and the scores read from them (IoU, mIoU, accuracies, fwIoU).

The matrix is accumulated exactly, as integers: rows are ground-truth classes, columns predicted
classes. One image costs one pass that packs (target, prediction) into a uint16 code and one
``np.bincount`` of the codes, with no floating point until the scores are read off. Ground-truth
values >= K (255: ignored) fall outside the K x K block and are dropped, as the official
Cityscapes script drops rows whose label is ``ignoreInEval``.

Scores follow the official definition: IoU_c = TP / (TP + FP + FN) over non-ignored pixels; a
class with TP + FP + FN = 0 (absent from the ground truth and never predicted) has no IoU (NaN)
and is left out of the mean. Python 3.6 compatible; numpy only.
"""

import numpy as np

_CODES = 256 * 256


def pair_codes(target, prediction, out=None):
    """(H, W) uint8 target and prediction -> (H*W,) uint16 codes target * 256 + prediction."""
    if out is None:
        out = np.empty(target.size, np.uint16)
    codes = out[: target.size]
    np.copyto(codes, target.ravel())
    np.left_shift(codes, 8, out=codes)
    np.bitwise_or(codes, prediction.ravel(), out=codes)
    return codes


class ConfusionMatrix(object):
    """K x K int64 counts; ``update(target, prediction)`` per image, scores as properties."""

    def __init__(self, num_classes):
        self.num_classes = int(num_classes)
        if not 1 <= self.num_classes <= 255:
            raise ValueError("num_classes must lie in 1..255, got {}".format(num_classes))
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        self._codes = None

    def update(self, target, prediction):
        """Add one image: (H, W) uint8 training ids (>= K ignored) and (H, W) uint8 predictions.

        Returns the image's own K x K counts. Predictions must lie in 0..K-1 (an engine with K
        classes guarantees it); a prediction >= K on a valid pixel raises ValueError.
        """
        target = np.asarray(target)
        prediction = np.asarray(prediction)
        if target.shape != prediction.shape:
            raise ValueError(
                "target {} and prediction {} differ in shape".format(target.shape, prediction.shape)
            )
        if target.dtype != np.uint8 or prediction.dtype != np.uint8:
            raise ValueError("target and prediction must be uint8 label maps")
        if self._codes is None or self._codes.size < target.size:
            self._codes = np.empty(target.size, np.uint16)
        codes = pair_codes(target, prediction, self._codes)
        counts = np.bincount(codes, minlength=_CODES).reshape(256, 256)
        k = self.num_classes
        image = counts[:k, :k]
        if counts[:k, k:].any():
            raise ValueError("the prediction holds class ids >= {} on labelled pixels".format(k))
        self.matrix += image
        return image

    def merge(self, other):
        self.matrix += other.matrix
        return self

    # --- scores (all from self.matrix) ------------------------------------------------------
    @property
    def true_positives(self):
        return np.diag(self.matrix)

    @property
    def iou(self):
        """(K,) float64 IoU per class; NaN for a class neither in the labels nor predicted."""
        return iou_from_matrix(self.matrix)

    @property
    def miou(self):
        return mean_ignoring_nan(self.iou)

    @property
    def pixel_accuracy(self):
        total = self.matrix.sum()
        return float(np.trace(self.matrix)) / total if total else float("nan")

    @property
    def class_accuracy(self):
        """(K,) recall per class: TP / pixels of the class; NaN for classes not in the labels."""
        support = self.matrix.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(support > 0, self.true_positives / np.maximum(support, 1), np.nan)

    @property
    def mean_accuracy(self):
        return mean_ignoring_nan(self.class_accuracy)

    @property
    def fwiou(self):
        """Frequency-weighted IoU: sum over classes of (class pixels / all pixels) * IoU."""
        support = self.matrix.sum(axis=1).astype(np.float64)
        total = support.sum()
        if not total:
            return float("nan")
        iou = np.nan_to_num(self.iou)  # NaN only where support is 0: weight 0 anyway
        return float((support / total * iou).sum())

    @property
    def labelled_pixels(self):
        return int(self.matrix.sum())


def iou_from_matrix(matrix):
    matrix = np.asarray(matrix, np.int64)
    tp = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp  # TP + FP + FN
    iou = np.full(len(tp), np.nan)
    present = union > 0
    iou[present] = tp[present] / union[present].astype(np.float64)
    return iou


def mean_ignoring_nan(values):
    """Mean of the non-NaN values as the official script forms it (a running sum), NaN if none."""
    total = 0.0
    count = 0
    for v in np.asarray(values, np.float64).tolist():
        if v == v:  # not NaN
            total += v
            count += 1
    return total / count if count else float("nan")
