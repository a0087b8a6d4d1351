"""Segmentation-aware parity between an ONNX graph (ONNX Runtime, CPU) and the PyTorch model.

Besides logit errors, what matters for a label map: the share of pixels whose label agrees,
per-class IoU between the two label maps, and *where* the disagreements sit. Disagreements on
class boundaries (ties between two classes, broken by rounding) are benign; disagreements inside
regions mean the graph computes something else.
"""

import numpy as np

from .._deps import require
from ..errors import SegDeployError

# Fail thresholds of FP32 exports (DESIGN.md parity ladder: eager vs ONNX Runtime ~1e-4).
MIN_LABEL_AGREEMENT = 0.999
MAX_RELATIVE_LOGIT_ERROR = 1e-3
BOUNDARY_RADIUS = 2


def boundary_mask(labels, radius=BOUNDARY_RADIUS):
    """True where a pixel has a different label within ``radius`` pixels (Chebyshev)."""
    cv2 = require("cv2", "verification")

    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    out = np.zeros(labels.shape, dtype=bool)
    for i, plane in enumerate(labels.reshape((-1,) + labels.shape[-2:])):
        plane = plane.astype(np.uint8)
        out.reshape((-1,) + labels.shape[-2:])[i] = cv2.dilate(plane, kernel) != cv2.erode(
            plane, kernel
        )
    return out


def per_class_iou(reference, candidate, num_classes):
    """IoU of each class between two label maps; NaN for classes in neither."""
    ref = reference.reshape(-1).astype(np.int64)
    cand = candidate.reshape(-1).astype(np.int64)
    confusion = np.bincount(ref * num_classes + cand, minlength=num_classes * num_classes)
    confusion = confusion.reshape(num_classes, num_classes)
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def compare(ref_logits, ref_labels, cand_labels, cand_logits=None, num_classes=None):
    """Parity figures of one batch (numpy arrays; logits N x K x H x W, labels N x H x W)."""
    num_classes = num_classes or (ref_logits.shape[1] if ref_logits is not None else None)
    agree = cand_labels == ref_labels
    disagree = ~agree
    near_boundary = boundary_mask(ref_labels) & disagree
    iou = per_class_iou(ref_labels, cand_labels, num_classes)
    figures = {
        "pixels": int(agree.size),
        "label_agreement": float(agree.mean()),
        "disagreeing_pixels": int(disagree.sum()),
        "disagreements_near_boundary": (
            float(near_boundary.sum() / disagree.sum()) if disagree.any() else None
        ),
        "per_class_iou": [None if np.isnan(v) else round(float(v), 6) for v in iou],
        "min_class_iou": float(np.nanmin(iou)) if np.isfinite(iou).any() else None,
    }
    # NaN or infinite logits make every other figure meaningless (argmax of NaN is class 0 on
    # both sides: "100 % agreement"), so they are counted and fail the verdict.
    figures["non_finite_logits"] = {
        "reference": _non_finite(ref_logits),
        "candidate": _non_finite(cand_logits),
    }
    if cand_logits is not None and ref_logits is not None:
        err = np.abs(cand_logits.astype(np.float64) - ref_logits.astype(np.float64))
        scale = float(np.abs(ref_logits).max()) or 1.0
        figures["max_abs_logit_error"] = float(err.max())
        figures["max_rel_logit_error"] = float(err.max() / scale)
        figures["mean_abs_logit_error"] = float(err.mean())
    return figures


def _non_finite(values):
    if values is None or np.asarray(values).dtype.kind != "f":
        return 0
    return int(values.size - np.count_nonzero(np.isfinite(values)))


def merge(batches):
    """Combine per-input figures: worst errors, pixel-weighted agreement, summed counts."""
    total = sum(b["pixels"] for b in batches)
    dis = sum(b["disagreeing_pixels"] for b in batches)
    near = sum((b["disagreements_near_boundary"] or 0.0) * b["disagreeing_pixels"] for b in batches)
    out = {
        "inputs": len(batches),
        "pixels": total,
        "label_agreement": sum(b["label_agreement"] * b["pixels"] for b in batches) / total,
        "disagreeing_pixels": dis,
        "disagreements_near_boundary": near / dis if dis else None,
        "min_class_iou": min(
            (b["min_class_iou"] for b in batches if b["min_class_iou"] is not None), default=None
        ),
    }
    for key in ("max_abs_logit_error", "max_rel_logit_error"):
        if all(key in b for b in batches):
            out[key] = max(b[key] for b in batches)
    if all("mean_abs_logit_error" in b for b in batches):
        out["mean_abs_logit_error"] = float(np.mean([b["mean_abs_logit_error"] for b in batches]))
    out["non_finite_logits"] = {
        side: sum((b.get("non_finite_logits") or {}).get(side, 0) for b in batches)
        for side in ("reference", "candidate")
    }
    # per-class IoU: the worst over inputs for each class
    classes = len(batches[0]["per_class_iou"])
    out["per_class_iou"] = [
        min(
            (b["per_class_iou"][c] for b in batches if b["per_class_iou"][c] is not None),
            default=None,
        )
        for c in range(classes)
    ]
    return out


def verdict(figures, strict=True):
    """'' if the figures pass the FP32 thresholds, else the reason. A non-finite number
    anywhere (NaN logits, a NaN error) fails, whatever the agreement says."""
    reasons = []
    bad = figures.get("non_finite_logits") or {}
    for side, who in (("reference", "PyTorch"), ("candidate", "the graph")):
        if bad.get(side):
            reasons.append(
                "{} returned {} NaN or infinite logits (are the weights finite?)".format(
                    who, bad[side]
                )
            )
    nan_figures = sorted(k for k, v in figures.items() if _is_non_finite(v))
    if nan_figures:
        reasons.append("non-finite " + ", ".join(nan_figures))
    if reasons:
        return "; ".join(reasons)
    if figures["label_agreement"] < MIN_LABEL_AGREEMENT:
        reasons.append(
            "label agreement {:.4%} < {:.1%}".format(
                figures["label_agreement"], MIN_LABEL_AGREEMENT
            )
        )
    rel = figures.get("max_rel_logit_error")
    if rel is not None and rel > MAX_RELATIVE_LOGIT_ERROR:
        reasons.append("relative logit error {:.2e} > {:.0e}".format(rel, MAX_RELATIVE_LOGIT_ERROR))
    return "; ".join(reasons)


def _is_non_finite(value):
    if isinstance(value, (list, tuple)):
        return any(_is_non_finite(v) for v in value)
    return isinstance(value, float) and not np.isfinite(value)


def _session(model_proto, expose_logits):
    import copy

    import onnxruntime as ort
    from onnx import TensorProto, helper

    proto = model_proto
    names = [o.name for o in proto.graph.output]
    if expose_logits and "logits" not in names:
        proto = copy.deepcopy(model_proto)
        proto.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def labels_and_logits(session, x):
    """Run an ONNX Runtime ``session`` on ``x``; return ``(labels, logits)`` from its outputs:
    logits are the 4-D float output (N x K x H x W), labels the 3-D one (N x H x W), else the
    argmax of the logits. Either is None when the graph does not return it."""
    labels = logits = None
    for value in session.run(None, {session.get_inputs()[0].name: x}):
        if value.ndim == 4 and value.dtype.kind == "f":
            logits = value  # N x K x H x W
        elif value.ndim == 3:
            labels = value  # N x H x W
    if labels is None and logits is not None:
        labels = logits.argmax(1)
    return labels, logits


def reference_logits(reference, inputs):
    """The PyTorch model's float32 logits (numpy) for each of ``inputs``."""
    import torch

    with torch.no_grad():
        return [reference(torch.from_numpy(x)).float().numpy() for x in inputs]


def verify_onnx(model_proto, reference, inputs, num_classes):
    """Run ``model_proto`` in ONNX Runtime (CPU) on each of ``inputs`` (float32 N x 3 x H x W
    arrays) and compare with ``reference``: a torch module returning logits, or the list of its
    logits from ``reference_logits`` (computed once when several graphs are verified).
    Returns the merged figures."""
    if not isinstance(reference, (list, tuple)):
        reference = reference_logits(reference, inputs)
    has_logits_tensor = any("logits" in n.output for n in model_proto.graph.node) or any(
        o.name == "logits" for o in model_proto.graph.output
    )
    session = _session(model_proto, expose_logits=has_logits_tensor)
    batches = []
    for x, ref_logits in zip(inputs, reference):
        ref_labels = ref_logits.argmax(1)
        cand_labels, cand_logits = labels_and_logits(session, x)
        if cand_labels is None:
            raise SegDeployError("the ONNX graph returns neither labels nor logits")
        batches.append(compare(ref_logits, ref_labels, cand_labels, cand_logits, num_classes))
    return merge(batches)


def random_inputs(card, count, seed=0):
    """``count`` random frames (uniform uint8 pixels) normalized as the card says."""
    rng = np.random.RandomState(seed)
    h, w = card["input"]["height"], card["input"]["width"]
    frames = [rng.randint(0, 256, size=(h, w, 3), dtype=np.uint8) for _ in range(count)]
    return [normalize(f, card) for f in frames]


def normalize(rgb_frame, card):
    """An H x W x 3 uint8 frame in the card's channel order -> 1 x 3 x H x W float32."""
    spec = card["input"]
    x = rgb_frame.astype(np.float32) * np.float32(spec["scale"])
    x = (x - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def to_uint8_frame(x, card):
    """A normalized float32 1 x 3 x H x W input (what ``normalize`` makes) back to the frame a
    ``segexport --input uint8`` graph of ``card`` takes: uint8 1 x H x W x 3 in its order (BGR)."""
    if x.dtype == np.uint8:
        return x
    cin = card["input"]
    hwc = x[0].transpose(1, 2, 0) * np.asarray(cin["std"], np.float32)
    hwc = (hwc + np.asarray(cin["mean"], np.float32)) / np.float32(cin["scale"])
    model_order = str(cin.get("model_channel_order", cin["channel_order"])).upper()
    if model_order != str(cin["channel_order"]).upper():
        hwc = hwc[:, :, ::-1]  # the model's RGB -> the frame's BGR
    return np.ascontiguousarray(np.clip(np.rint(hwc), 0, 255).astype(np.uint8)[None])


def float_view(card):
    """The card a float32 N x 3 x H x W input of the model is normalized by: ``card`` itself, or
    for a ``--input uint8`` card the model's own channel order (its frames come in BGR)."""
    cin = card["input"]
    if "model_channel_order" not in cin:
        return card
    out = dict(card)
    out["input"] = dict(cin, channel_order=cin["model_channel_order"])
    return out


def graph_inputs(inputs, card):
    """``inputs`` (normalized float32, in the model's channel order: see ``float_view``) as the
    graph of ``card`` takes them: as they are, or uint8 frames."""
    from ..card import takes_uint8_frames

    if takes_uint8_frames(card):
        return [to_uint8_frame(x, card) for x in inputs]
    return inputs


def image_inputs(directory, card, limit=8):
    """Up to ``limit`` images from ``directory``, resized to the card's size and normalized."""
    import glob
    import os

    cv2 = require("cv2", "verification")

    paths = sorted(
        p
        for ext in ("png", "jpg", "jpeg", "bmp")
        for p in glob.glob(os.path.join(directory, "*." + ext))
    )[:limit]
    if not paths:
        raise SegDeployError("--images {} holds no .png/.jpg/.bmp images".format(directory))
    h, w = card["input"]["height"], card["input"]["width"]
    out = []
    for path in paths:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise SegDeployError("cannot read image {}".format(path))
        frame = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)
        if card["input"]["channel_order"] == "RGB":
            frame = frame[:, :, ::-1]
        out.append(normalize(frame, card))
    return out, paths
