"""segeval results for people: a text table, JSON, CSV, and the confusion matrix as a PNG.

The CSV has one row per class and one IoU column per engine (percent), then the summary rows
(mIoU, pixel accuracy, mean accuracy, fwIoU); spreadsheets and pandas read it as is. The JSON
holds everything, the confusion matrices as integer counts included. Python 3.6 compatible;
matplotlib is imported only for the PNG.
"""

import csv
import io

import numpy as np

from .._cli import plural
from .._deps import require
from .._io import write_bytes, write_json


def _pct(value, width=7):
    if value is None or value != value:
        return "{:>{}}".format("-", width)
    return "{:>{}.2f}".format(100.0 * value, width)


SUMMARY = (
    ("mIoU", "miou"),
    ("pixel accuracy", "pixel_accuracy"),
    ("mean accuracy", "mean_accuracy"),
    ("fwIoU", "fwiou"),
)


def dataset_line(info):
    """'cityscapes split 'val': 500 images (ROOT)'; a folder dataset has no split to name."""
    return "{}{}: {} ({})".format(
        info["name"],
        "" if info["split"] is None else " split {!r}".format(info["split"]),
        plural(info["images"], "image"),
        info["root"],
    )


def table(comparison, top=5):
    """The text printed by segeval: per-class IoU per engine, scores, differences, agreement."""
    reports = comparison.reports
    info = comparison.dataset
    width = max(9, max(len(r.name) for r in reports) + 1)
    name_w = max(len(n) for n in info["class_names"] + ["pixel accuracy"]) + 1
    lines = [
        dataset_line(info),
        "{:<{}}".format("IoU %", name_w) + "".join("{:>{}}".format(r.name, width) for r in reports),
    ]
    ious = [r.iou for r in reports]
    for c, cls in enumerate(info["class_names"]):
        lines.append("{:<{}}".format(cls, name_w) + "".join(_pct(iou[c], width) for iou in ious))
    lines.append("-" * (name_w + width * len(reports)))
    for label, attr in SUMMARY:
        lines.append(
            "{:<{}}".format(label, name_w) + "".join(_pct(getattr(r, attr), width) for r in reports)
        )
    for r in reports:
        lines.append(
            "{}: {} {} mIoU {:.2f} % ({:.1f} ms/image inference)".format(
                r.name,
                r.engine["backend"],
                r.engine["precision"],
                100.0 * r.miou,
                r.timing["infer_ms_per_image"],
            )
        )
    for pair in comparison.pairs:
        a, b = reports[pair.a], reports[pair.b]
        lines.append(
            "{} vs {}: mIoU difference {:+.2f} points; labels agree on {:.3f} % of pixels "
            "({:.3f} % of labelled ones)".format(
                b.name,
                a.name,
                100.0 * (b.miou - a.miou),
                100.0 * pair.agreement,
                100.0 * pair.agreement_labelled,
            )
        )
        worst = pair.most_disagreeing(top)
        if worst:
            lines.append(
                "  disagree most on: "
                + ", ".join("{} ({:.2f} %)".format(n, 100.0 * d) for n, d in worst)
            )
    t = comparison.timing
    lines.append(
        "{:.2f} images/s; inference {:.1f} s, outside inference {:.1f} s ({:.1f} % of "
        "inference; loading {:.1f} s in {} worker thread(s))".format(
            t["images_per_s"] or 0.0,
            t["infer_s"],
            t["wall_s"] - t["infer_s"],
            100.0 * (t["overhead_of_inference"] or 0.0),
            t["load_s"],
            t["workers"],
        )
    )
    return "\n".join(lines)


def write_report_json(path, comparison, extra=None):
    data = comparison.to_dict()
    if extra:
        data.update(extra)
    write_json(path, data)


def csv_text(comparison):
    reports = comparison.reports
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["class"] + [r.name + " IoU %" for r in reports])
    for c, cls in enumerate(comparison.dataset["class_names"]):
        writer.writerow([cls] + [_cell(r.iou[c]) for r in reports])
    for label, attr in SUMMARY:
        writer.writerow([label] + [_cell(getattr(r, attr)) for r in reports])
    return buf.getvalue()


def _cell(value):
    value = float(value)
    return "" if value != value else "{:.6f}".format(100.0 * value)


def write_csv(path, comparison):
    write_bytes(path, csv_text(comparison).encode("utf-8"))


def confusion_png(comparison):
    """PNG bytes: one panel per engine, rows normalized to 1 (recall), class names on the axes."""
    matplotlib = require("matplotlib", "--confusion")
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    reports = comparison.reports
    names = comparison.dataset["class_names"]
    k = len(names)
    size = max(5.0, 0.42 * k + 2.5)
    fig, axes = plt.subplots(1, len(reports), figsize=(size * len(reports), size), squeeze=False)
    try:
        for ax, report in zip(axes[0], reports):
            counts = report.matrix.astype(np.float64)
            rows = counts.sum(axis=1, keepdims=True)
            norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
            ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks(range(k))
            ax.set_yticks(range(k))
            ax.set_xticklabels(names, rotation=90, fontsize=8)
            ax.set_yticklabels(names, fontsize=8)
            ax.set_xlabel("predicted")
            ax.set_ylabel("ground truth")
            ax.set_title(
                "{} ({}) mIoU {:.2f} %".format(
                    report.name, report.engine["precision"], 100.0 * report.miou
                ),
                fontsize=10,
            )
            if k <= 40:
                for i in range(k):
                    for j in range(k):
                        if norm[i, j] >= 0.005:
                            ax.text(
                                j,
                                i,
                                "{:.0f}".format(100 * norm[i, j]),
                                ha="center",
                                va="center",
                                fontsize=6,
                                color="white" if norm[i, j] > 0.5 else "black",
                            )
        fig.suptitle(
            "{}{}: confusion, rows normalized (% of each class's pixels)".format(
                comparison.dataset["name"],
                "" if comparison.dataset["split"] is None else " " + comparison.dataset["split"],
            )
        )
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buf.getvalue()


def write_confusion_png(path, comparison):
    write_bytes(path, confusion_png(comparison))
