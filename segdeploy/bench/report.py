"""Reports of harness records: a text block per run, one side-by-side table, JSON, CSV, a plot.

Every artifact goes through ``segdeploy._io`` (atomic writes). matplotlib is imported only when a
plot is asked for, with the Agg backend (no display needed). Python 3.6 compatible.
"""

import csv
import io

from .. import _io
from .._deps import require
from . import references

CSV_FIELDS = (
    "model",
    "backend",
    "protocol",
    "height",
    "width",
    "device",
    "mean_ms",
    "median_ms",
    "p90_ms",
    "p99_ms",
    "min_ms",
    "max_ms",
    "std_ms",
    "fps",
    "params",
    "macs",
    "peak_memory_mb",
    "floor_ms",
    "floor_share",
    "scope",
    "engine_path",
    "precision",
    "cv",
    "device_memory_mb",
)


def _fmt(value, spec="{:.2f}"):
    return "-" if value is None else spec.format(value)


def _count(n):
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return "{:.2f} {}".format(n / scale, unit)
    return str(n)


def _pct(fraction):
    return None if fraction is None else 100.0 * fraction


def describe_memory(mem):
    """The memory line of a run: the engine's own figures, the process peak beside them."""
    text = "  memory:   engine {} MiB ({}".format(
        _fmt(mem.get("peak_mb"), "{:.0f}"), mem.get("kind", "?")
    )
    if mem.get("open_mb") is not None:  # known where the probe started before opening
        text += "; {} MiB once opened".format(_fmt(mem["open_mb"], "{:.0f}"))
    text += ")"
    if mem.get("device_mb") is not None:
        text += "; device {} MiB ({})".format(
            _fmt(mem["device_mb"], "{:.0f}"), mem.get("device_kind", "device")
        )
    if mem.get("process_peak_mb") is not None:
        text += "; whole process peaked at {} MiB".format(_fmt(mem["process_peak_mb"], "{:.0f}"))
    return text


def format_run(rec):
    """A text block for one record."""
    lat = rec["latency_ms"]
    precision = _precision(rec)
    lines = [
        "{} / {} / protocol {} at {}x{} (batch {}, {} warm-up, {} timed)".format(
            rec["model"],
            rec["backend"] + (" " + precision if precision else ""),
            rec["protocol"],
            rec["resolution"][0],
            rec["resolution"][1],
            rec["batch"],
            rec["warmup"],
            rec["iters"],
        ),
        "  device:   {} ({})".format(rec["device_name"], rec["device"]),
    ]
    engine = rec.get("engine") or {}
    if engine.get("path"):
        lines.append(
            "  engine:   {} ({} {})".format(engine["path"], engine["backend"], engine["precision"])
        )
    lines += [
        "  timer:    {}".format(rec["timer"]),
        "  scope:    {}".format(rec["scope_text"]),
        "  latency:  mean {} ms, median {}, p90 {}, p99 {}, min {}, max {}, std {} "
        "(spread {} of the mean){}".format(
            *(_fmt(lat[k]) for k in ("mean", "median", "p90", "p99", "min", "max", "std")),
            _fmt(_pct(lat.get("cv")), "{:.1f} %"),
            "; WARNING: unstable" if rec.get("spread_warning") else "",
        ),
        "  fps:      {} (1000 / mean){}".format(
            _fmt(rec["fps"], "{:.1f}"),
            "; loop {:.1f} (n / loop time, as the protocol)".format(rec["loop_fps"])
            if rec["protocol"] == "swiftnet"
            else "",
        ),
    ]
    if rec["params"] is not None or rec["macs"] is not None:  # unknown: no line of dashes
        lines.append(
            "  model:    {} params, {} multiply-adds".format(
                _count(rec["params"]), _count(rec["macs"])
            )
        )
    lines.append(describe_memory(rec["memory"]))
    if rec["floor_ms"] is not None:
        lines.append(
            "  floor:    {} ms at {} GFLOP/s ({}); median reaches {} of it".format(
                _fmt(rec["floor_ms"]),
                _fmt(rec["peak_gflops"], "{:.0f}"),
                rec["peak_source"],
                _fmt(None if rec["floor_share"] is None else 100 * rec["floor_share"], "{:.0f} %"),
            )
            + (
                " (over 100 %: the peak was measured during a slow phase of the host; re-run on "
                "a quiet machine)"
                if (rec["floor_share"] or 0) > 1.0
                else ""
            )
        )
    lines += [
        "  versions: {}".format(
            ", ".join(
                "{} {}".format(k, v)
                for k, v in sorted(rec["versions"].items())
                if k not in ("platform", "cpu", "cpu_count")
            )
        ),
    ]
    for fig in references.matching(rec["model"] or "", rec["protocol"], *rec["resolution"]):
        lines.append("  " + references.describe(fig, rec["device_name"]))
    return "\n".join(lines)


def _engine_path(rec):
    return (rec.get("engine") or {}).get("path")


def _precision(rec):
    """The precision a record ran at (``--precisions`` sets it; an engine's card says it)."""
    return rec.get("precision") or (rec.get("engine") or {}).get("precision")


def _column_name(rec, records):
    """What tells this record apart from the others: its file where each file ran once per
    size and protocol, else its backend and precision (an .onnx in two backends and at two
    precisions), then its size and protocol where those differ."""
    names = []

    def varies(key):
        return len({key(r) for r in records}) > 1

    runs = {(_engine_path(r), tuple(r["resolution"]), r["protocol"]) for r in records}
    if varies(_engine_path) and _engine_path(rec) and len(runs) == len(records):
        import os

        names.append(os.path.basename(_engine_path(rec)))  # several engine files: by file
    else:
        if varies(lambda r: r["backend"]):
            names.append(rec["backend"])
        if varies(_precision) and _precision(rec):
            names.append(_precision(rec))
    if len({tuple(r["resolution"]) for r in records}) > 1:
        names.append("{}x{}".format(*rec["resolution"]))
    if len({r["protocol"] for r in records}) > 1:
        names.append(rec["protocol"])
    return " ".join(names) or rec["backend"]


def _like(rec):
    """What must be equal for a speed-up to mean something: the work done and what is timed."""
    return (
        tuple(rec["resolution"]),
        tuple(rec.get("frame") or rec["resolution"]),
        rec["protocol"],
        rec.get("batch", 1),
    )


def speedups(records):
    """Speed-up of each record's median over the first record doing the same work (same
    resolution, frame size, protocol and batch); None for the first of each group and for a
    record alone at its resolution. Speed-ups across resolutions would mix two effects."""
    base = {}
    for r in records:
        base.setdefault(_like(r), r)
    out = []
    for r in records:
        first = base[_like(r)]
        if first is r:
            out.append(1.0 if sum(1 for x in records if _like(x) == _like(r)) > 1 else None)
        else:
            out.append(first["latency_ms"]["median"] / r["latency_ms"]["median"])
    return out


def format_table(records):
    """One side-by-side table, a column per record; speed-ups are against the first column."""
    if not records:
        return ""
    heads = [_column_name(r, records) for r in records]
    rows = [("", heads)]
    for label, key in (
        ("mean ms", "mean"),
        ("median ms", "median"),
        ("p90 ms", "p90"),
        ("p99 ms", "p99"),
        ("min ms", "min"),
        ("max ms", "max"),
        ("std ms", "std"),
    ):
        rows.append((label, [_fmt(r["latency_ms"][key]) for r in records]))
    rows.append(
        (
            "spread (CV)",
            [
                _fmt(_pct(r["latency_ms"].get("cv")), "{:.1f} %")
                + ("!" if r.get("spread_warning") else "")
                for r in records
            ],
        )
    )
    rows.append(("FPS", [_fmt(r["fps"], "{:.1f}") for r in records]))
    rows.append(("speed-up (median)", [_fmt(x, "{:.2f}x") for x in speedups(records)]))
    if any(r["macs"] is not None for r in records):
        rows.append(("multiply-adds", [_count(r["macs"]) for r in records]))
    rows.append(("engine memory MiB", [_fmt(r["memory"]["peak_mb"], "{:.0f}") for r in records]))
    if any(r["memory"].get("device_mb") is not None for r in records):
        rows.append(
            (
                "device memory MiB",
                [_fmt(r["memory"].get("device_mb"), "{:.0f}") for r in records],
            )
        )
    if any(r["floor_share"] is not None for r in records):
        rows.append(
            (
                "floor share",
                [
                    _fmt(None if r["floor_share"] is None else 100 * r["floor_share"], "{:.0f} %")
                    for r in records
                ],
            )
        )
    width0 = max(len(label) for label, _ in rows)
    widths = [max(len(cells[i]) for _, cells in rows) for i in range(len(records))]
    lines = []
    for label, cells in rows:
        lines.append("  ".join([label.ljust(width0)] + [c.rjust(w) for c, w in zip(cells, widths)]))
    first = records[0]
    lines.append(
        "scope: {} | device: {} | speed-ups against the first column at the same resolution "
        "and protocol (none across resolutions)".format(first["scope_text"], first["device_name"])
    )
    if any(r.get("spread_warning") for r in records):
        lines.append("!: spread above {:.0f} % of the mean; unstable figures".format(_spread_pct()))
    return "\n".join(lines)


def _spread_pct():
    from .stats import SPREAD_WARN_CV

    return 100 * SPREAD_WARN_CV


def result_line(rec, records):
    """One line per run for ``segbench -q``: what ran and its median, FPS and spread."""
    return "{}: median {} ms, {} FPS, spread {}{}".format(
        _column_name(rec, records) if len(records) > 1 else _engine_path(rec) or rec["backend"],
        _fmt(rec["latency_ms"]["median"]),
        _fmt(rec["fps"], "{:.1f}"),
        _fmt(_pct(rec["latency_ms"].get("cv")), "{:.1f} %"),
        " (unstable)" if rec.get("spread_warning") else "",
    )


def csv_rows(records):
    for r in records:
        lat = r["latency_ms"]
        yield [
            r["model"],
            r["backend"],
            r["protocol"],
            r["resolution"][0],
            r["resolution"][1],
            r["device_name"],
            lat["mean"],
            lat["median"],
            lat["p90"],
            lat["p99"],
            lat["min"],
            lat["max"],
            lat["std"],
            r["fps"],
            r["params"],
            r["macs"],
            r["memory"]["peak_mb"],
            r["floor_ms"],
            r["floor_share"],
            r["scope_text"],
            _engine_path(r),
            (r.get("engine") or {}).get("precision"),
            r["latency_ms"].get("cv"),
            r["memory"].get("device_mb"),
        ]


def write_csv(path, records):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in csv_rows(records):
        writer.writerow(["" if v is None else v for v in row])
    _io.write_bytes(path, buf.getvalue().encode("utf-8"))


def write_json(path, records, command=None):
    """``{"schema", "command", "runs"}``; every run also names its engine and command."""
    _io.write_json(path, {"schema": "segdeploy.bench/1", "command": command, "runs": list(records)})


def write_plot(path, records, metric="latency"):
    """Latency (median, with p10-p90 whiskers) or FPS against resolution, a line per backend."""
    matplotlib = require("matplotlib", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    backends = []
    for r in records:
        if r["backend"] not in backends:
            backends.append(r["backend"])
    for backend in backends:
        runs = sorted(
            (r for r in records if r["backend"] == backend),
            key=lambda r: r["resolution"][0] * r["resolution"][1],
        )
        mpx = [r["resolution"][0] * r["resolution"][1] / 1e6 for r in runs]
        if metric == "fps":
            ys = [r["fps"] for r in runs]
            ax.plot(mpx, ys, marker="o", label=backend)
        else:
            ys = [r["latency_ms"]["median"] for r in runs]
            low = [r["latency_ms"]["median"] - r["latency_ms"]["min"] for r in runs]
            high = [r["latency_ms"]["p90"] - r["latency_ms"]["median"] for r in runs]
            ax.errorbar(mpx, ys, yerr=[low, high], marker="o", capsize=3, label=backend)
        for x, y, r in zip(mpx, ys, runs):
            ax.annotate(
                "{}x{}".format(*r["resolution"]),
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
    first = records[0]
    ax.set_xlabel("input size (megapixels)")
    ax.set_ylabel(
        "frames per second" if metric == "fps" else "median latency, ms (bars: min to p90)"
    )
    ax.set_title(
        "{} on {} - protocol {}".format(first["model"], first["device_name"], first["protocol"]),
        fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.text(0.01, 0.01, "timer scope: " + first["scope_text"], fontsize=6)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    with _io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
