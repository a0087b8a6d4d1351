"""The INT8 accuracy budget and the frames it is judged on: parse ``--budget``, load calibration
and held-out frames from a folder (with the Runtime's own pre-processing), and compare a
candidate's labels with the FP32 graph's (agreement, per-class IoU drop, the verdict's figures).
"""

import collections
import glob
import os
import sys

import numpy as np

from .._deps import require
from ..errors import SegDeployError

Budget = collections.namedtuple("Budget", ["min_agreement", "max_iou_drop"])
Budget.__doc__ = """Label agreement at least ``min_agreement`` (0..1) and no class's IoU against the
FP32 labels below 1 - ``max_iou_drop`` (0..1)."""

DEFAULT_BUDGET = Budget(0.99, 0.02)
# Classes covering less of the held-out pixels than this are reported but not judged: a class of
# a few hundred pixels loses IoU points to a one-pixel boundary shift (measured: a tiny RegSeg at
# 128x256 with 99.2 % agreement had a 0.3 %-share class at 46 IoU points lost).
MIN_CLASS_SHARE = 0.01
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "bmp")


def parse_budget(text):
    """``"99:2"`` -> Budget(0.99, 0.02): percent agreement, IoU points a class may lose."""
    if text is None:
        return DEFAULT_BUDGET
    parts = str(text).split(":")
    try:
        agreement = float(parts[0])
        iou = float(parts[1]) if len(parts) > 1 and parts[1] != "" else DEFAULT_BUDGET[1] * 100
    except ValueError:
        agreement = iou = None
    if len(parts) > 2 or agreement is None or not 0 < agreement <= 100 or not 0 <= iou <= 100:
        raise SegDeployError(
            "--budget takes AGREEMENT[:IOU] in percent, e.g. 99:2 (at least 99 % of labels agree "
            "with FP32 and no class loses more than 2 IoU points), got {!r}".format(text)
        )
    return Budget(agreement / 100.0, iou / 100.0)


def describe_budget(budget):
    return ">= {:g} % label agreement, no class losing more than {:g} IoU points".format(
        budget.min_agreement * 100, budget.max_iou_drop * 100
    )


# --- calibration frames --------------------------------------------------------------------


def _preprocessor(card):
    from ..runtime.preprocess import Preprocessor

    cin = card["input"]
    return Preprocessor(
        cin["height"], cin["width"], cin["scale"], cin["mean"], cin["std"], cin["channel_order"]
    )


def list_images(directory):
    if not os.path.isdir(directory):
        raise SegDeployError(
            "--calib {} is not a directory; pass a folder of images from the deployment camera "
            "(or --calib random, which is only good for speed measurements)".format(directory)
        )
    paths = sorted(
        p
        for ext in IMAGE_EXTENSIONS
        for p in glob.glob(os.path.join(directory, "*." + ext))
        + glob.glob(os.path.join(directory, "*." + ext.upper()))
    )
    if len(paths) < 3:
        raise SegDeployError(
            "--calib {} holds {} images; INT8 calibration needs at least 3 (some are held out "
            "to check the accuracy budget), ideally 32 or more frames like the ones you "
            "deploy on".format(directory, len(paths))
        )
    return paths


def load_frames(source, card, count=None, seed=0, stream=None):
    """(calibration inputs, held-out inputs, description): 1x3xHxW float32 arrays.

    ``source`` is a directory of images (read with OpenCV as BGR and pre-processed exactly as the
    Runtime does) or ``"random"`` (uniform noise; loudly warned about). A quarter of the images
    (at least 2, at most 16) is held out for the budget; ``count`` caps the calibration frames.
    """
    pre = _preprocessor(card)
    stream = stream or sys.stdout
    if source == "random":
        print(
            "      WARNING: --calib random: calibrating INT8 on uniform NOISE. Activation ranges "
            "seen on noise differ from real frames; the INT8 graph will be fast and its accuracy "
            "on real frames is unknown. Use a folder of real frames for anything but speed tests.",
            file=stream,
            flush=True,
        )
        rng = np.random.RandomState(seed)
        h, w = card["input"]["height"], card["input"]["width"]
        n = count or 16
        frames = [rng.randint(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n + 4)]
        inputs = [pre([f]).copy() for f in frames]
        return inputs[:n], inputs[n:], "random noise ({} frames)".format(n)
    cv2 = require("cv2", "INT8 calibration")
    paths = list_images(source)
    held = min(16, max(2, len(paths) // 4))
    calib_paths, held_paths = paths[:-held], paths[-held:]
    if count:
        calib_paths = calib_paths[: int(count)]
    inputs = []
    for path in calib_paths + held_paths:
        frame = cv2.imread(path, cv2.IMREAD_COLOR)
        if frame is None:
            raise SegDeployError("cannot read image {}; remove it from --calib".format(path))
        inputs.append(pre([frame]).copy())
    n = len(calib_paths)
    return (
        inputs[:n],
        inputs[n:],
        "{} images from {} ({} calibration, {} held out)".format(
            len(inputs), source, n, len(held_paths)
        ),
    )


# --- accuracy ------------------------------------------------------------------------------


def _session(path_or_proto, threads=None):
    ort = require("onnxruntime", "INT8 quantization")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    source = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def labels_of(session, inputs):
    """Label maps (N x H x W int64) of ``inputs`` from a graph with a labels or logits output."""
    name = session.get_inputs()[0].name
    out = []
    for x in inputs:
        value = session.run(None, {name: x})[0]
        out.append(value.argmax(1) if value.ndim == 4 else value)
    return out


def budget_figures(ref_labels, cand_labels, num_classes, budget):
    """Agreement, per-class IoU drop and where disagreements sit; ``within_budget``."""
    from .verify import compare

    ref = np.concatenate(ref_labels)
    cand = np.concatenate(cand_labels)
    figures = compare(None, ref, cand, None, num_classes)
    counts = np.bincount(ref.reshape(-1).astype(np.int64), minlength=num_classes)
    share = counts / float(ref.size)
    drops = []
    for c, iou in enumerate(figures["per_class_iou"]):
        if iou is None or counts[c] == 0:
            drops.append(None)
        else:
            drops.append(round(1.0 - iou, 6))
    judged = [c for c in range(num_classes) if share[c] >= MIN_CLASS_SHARE]
    worst = max(judged, key=lambda c: drops[c] or 0.0) if judged else None
    figures.update(
        {
            "classes_present": int((counts > 0).sum()),
            "iou_drop": drops,
            "judged_classes": judged,
            "worst_class": worst,
            "max_iou_drop": (drops[worst] or 0.0) if worst is not None else 0.0,
            "budget": {"min_agreement": budget.min_agreement, "max_iou_drop": budget.max_iou_drop},
        }
    )
    reasons = []
    if figures["label_agreement"] < budget.min_agreement:
        reasons.append(
            "label agreement {:.3f} % < {:g} %".format(
                figures["label_agreement"] * 100, budget.min_agreement * 100
            )
        )
    if figures["max_iou_drop"] > budget.max_iou_drop:
        reasons.append(
            "class {} loses {:.2f} IoU points > {:g}".format(
                worst, figures["max_iou_drop"] * 100, budget.max_iou_drop * 100
            )
        )
    figures["within_budget"] = not reasons
    figures["over_budget_because"] = "; ".join(reasons)
    return figures


def describe_figures(f):
    near = f.get("disagreements_near_boundary")
    text = "agreement {:.3f} %, worst class IoU drop {:.2f} points (class {})".format(
        f["label_agreement"] * 100, f["max_iou_drop"] * 100, f["worst_class"]
    )
    if near is not None:
        text += ", {:.0%} of disagreements within 2 px of a boundary".format(near)
    return text


# --- the graph -----------------------------------------------------------------------------
