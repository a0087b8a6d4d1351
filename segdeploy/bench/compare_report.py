"""The outputs of ``segbench --compare`` (``compare.run_compare``'s result): the text table, JSON,
CSV (one row per model) and a speed-against-GMACs scatter with the papers' claims beside the
measurements. Python 3.6 compatible; matplotlib only for the plot.
"""

import csv

from .._deps import require
from .._io import atomic_path

CSV_FIELDS = (
    "model",
    "params",
    "gmacs",
    "median_ms",
    "mean_ms",
    "p90_ms",
    "cv",
    "fps",
    "speed_vs_reference",
    "reference",
    "floor_ms",
    "floor_share",
    "miou",
    "paper_fps",
    "paper_device",
    "paper_resolution",
    "paper_protocol",
    "paper_precision",
    "paper_source",
    "resolution",
    "backend",
    "precision",
    "protocol",
    "device_name",
)


def _num(value, fmt, scale=1.0):
    return "-" if value is None else fmt.format(value / scale)


def _res(hw):
    return "{}x{}".format(*hw) if hw else "?"


def paper_text(paper):
    if not paper:
        return "-"
    details = [p for p in (paper.get("device"), _res(paper.get("resolution"))) if p]
    if paper.get("protocol"):
        details.append("protocol " + str(paper["protocol"]))
    return "{:.1f} ({})".format(paper["fps"], ", ".join(details))


ROW = "{:<{}} {:>9} {:>8} {:>10} {:>8} {:>9} {:>8}  {}"


def format_table(result):
    ref = result["reference"]
    width = max([18] + [len(r["model"]) for r in result["rows"]])
    head = [
        "segbench --compare at {}: {} {} on {} ({} threads), protocol {}: {} warm-up + {} "
        "rounds, {}".format(
            _res(result["resolution"]),
            result["backend"],
            result["precision"],
            result["device_name"],
            result["threads"] or "default",
            result["protocol"],
            result["warmup"],
            result["iters"],
            result["timing"],
        ),
        "engine: {} ({}); timed: {}".format(
            result["backend"], result["backend_choice"], result["scope_text"]
        ),
        "floor: 2 x multiply-adds / the device's peak ({} GFLOP/s, {})".format(
            _num(result["peak_gflops"], "{:.0f}"), result["peak_source"]
        ),
        "",
        ROW.format(
            "model",
            width,
            "params M",
            "GMACs",
            "median ms",
            "FPS",
            "x " + ref,
            "floor %",
            "paper FPS (its device, size, protocol)",
        ),
    ]
    lines = list(head)
    scored = any(r.get("miou") is not None for r in result["rows"])
    if scored:
        lines[-1] += "  mIoU %"
    for row in result["rows"]:
        lines.append(
            ROW.format(
                row["model"],
                width,
                _num(row["params"], "{:.2f}", 1e6),
                _num(row["macs"], "{:.2f}", 1e9),
                _num(row["latency_ms"]["median"], "{:.1f}"),
                _num(row["fps"], "{:.2f}"),
                _num(row["speed_vs_reference"], "{:.2f}"),
                _num(row["floor_share"], "{:.1f}", 0.01),
                paper_text(row["paper"]),
            )
            + ("  {}".format(_num(row.get("miou"), "{:.2f}", 0.01)) if scored else "")
        )
    if scored:
        lines.append(
            "mIoU: {} on {}, each model with its own checkpoint".format(
                result.get("miou_engine"), result.get("dataset")
            )
        )
    lines += [
        "",
        "x {ref}: the median over rounds of {ref}'s time over the model's (above 1: faster "
        "than {ref}, on this engine and machine).".format(ref=ref),
        "paper FPS: each paper's own device, size, software and protocol, kept beside the "
        "measurement, not compared with it: compare the ratios measured here.",
    ]
    if any((r["floor_share"] or 0) > 1 for r in result["rows"]):
        lines.append(
            "floor % above 100: the peak was measured low (a busy machine slows the matrix "
            "product that measures it); re-run on a quiet machine."
        )
    for row in result["rows"]:
        if row.get("spread_warning"):
            lines.append("{}: {}".format(row["model"], row["spread_warning"]))
    return "\n".join(lines)


def csv_rows(result):
    rows = []
    for row in result["rows"]:
        paper = row["paper"] or {}
        lat = row["latency_ms"]
        rows.append(
            {
                "model": row["model"],
                "params": row["params"],
                "gmacs": None if row["macs"] is None else row["macs"] / 1e9,
                "median_ms": lat["median"],
                "mean_ms": lat["mean"],
                "p90_ms": lat["p90"],
                "cv": lat["cv"],
                "fps": row["fps"],
                "miou": row.get("miou"),
                "speed_vs_reference": row["speed_vs_reference"],
                "reference": result["reference"],
                "floor_ms": row["floor_ms"],
                "floor_share": row["floor_share"],
                "paper_fps": paper.get("fps"),
                "paper_device": paper.get("device"),
                "paper_resolution": _res(paper.get("resolution")) if paper else None,
                "paper_protocol": paper.get("protocol"),
                "paper_precision": paper.get("precision"),
                "paper_source": paper.get("source"),
                "resolution": _res(result["resolution"]),
                "backend": result["backend"],
                "precision": result["precision"],
                "protocol": result["protocol"],
                "device_name": result["device_name"],
            }
        )
    return rows


def write_csv(path, result):
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            writer.writeheader()
            for row in csv_rows(result):
                writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def write_json(path, result):
    from .._io import write_json as write

    write(path, dict(result, schema="segdeploy.bench.compare/1"))


def write_plot(path, result):
    """FPS against GMACs, log-log: the measurements at the size timed (filled), and each
    paper's claim at its own size (open; its GMACs scaled from ours by the pixel count, which
    holds for these fully convolutional networks), joined to the model's measurement."""
    matplotlib = require("matplotlib", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = result["resolution"]
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    measured = [r for r in result["rows"] if r["macs"]]
    xs = [r["macs"] / 1e9 for r in measured]
    ys = [r["fps"] for r in measured]
    ax.scatter(xs, ys, color="tab:blue", zorder=3, label="measured here: {} {}, {}x{}".format(
        result["backend"], result["precision"], h, w))  # fmt: skip
    for x, y, r in zip(xs, ys, measured):
        ax.annotate(r["model"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    claimed = False
    for r, x, y in zip(measured, xs, ys):
        paper = r["paper"]
        if not paper or not paper.get("resolution"):
            continue
        ph, pw = paper["resolution"]
        px = x * (ph * pw) / float(h * w)
        ax.scatter([px], [paper["fps"]], facecolors="none", edgecolors="tab:orange", zorder=3,
                   label=None if claimed else "paper's claim (its device and size)")  # fmt: skip
        claimed = True
        ax.plot([x, px], [y, paper["fps"]], color="0.8", linewidth=0.8, zorder=1)
        ax.annotate(
            "{} ({}, {}x{})".format(r["model"], paper.get("device") or "?", ph, pw),
            (px, paper["fps"]),
            textcoords="offset points",
            xytext=(4, -9),
            fontsize=6,
            color="tab:orange",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.margins(0.2)  # room for the labels at the edges
    ax.set_xlabel("multiply-adds per frame (G)")
    ax.set_ylabel("frames per second")
    ax.set_title(
        "{} on {}, protocol {}".format(
            ", ".join(result["models"]), result["device_name"], result["protocol"]
        ),
        fontsize=8,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
