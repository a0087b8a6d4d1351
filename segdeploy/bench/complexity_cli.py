"""The zoo table: params and multiply-adds of zoo models beside the papers' figures.

``segcomplexity`` and ``segbench --zoo`` print it; ``complexity_rows`` gives the records.
"""

import sys

from .._cli import QUIET, add_common_args, make_parser, run_main, verbosity


def _parse_res(text):
    from ..engines.profiles import parse_hw

    return parse_hw(text, "--res")


def complexity_rows(names, input_hw):
    """One dict per model: our counts, and the paper's figures where given at this size."""
    from ..models import build, get_spec
    from .counting import complexity

    rows = []
    for name in names:
        spec = get_spec(name)
        c = complexity(build(name), input_hw)
        same_size = tuple(spec.paper.get("resolution", ())) == tuple(input_hw)
        paper = spec.paper if same_size else {}
        rows.append(
            {
                "model": name,
                "input_hw": list(input_hw),
                "params": c.params,
                "macs": c.macs,
                "flops_fvcore": c.flops_fvcore,
                "paper_params": spec.paper.get("params"),
                "paper_macs": paper.get("macs"),
                "paper_flops": paper.get("flops_fvcore"),
                "paper_fps": paper.get("fps"),
                "paper_fps_device": paper.get("fps_device"),
                "source": spec.paper.get("source", ""),
                # where the paper's figures were published (Seg50/Seg75), whose code it is, its
                # licence, where the official evaluation's final resize lives, how the paper
                # counted ("GFLOPs" that are multiply-adds, fvcore, ...)
                "paper_resolution": _resolutions(spec.paper),
                "implementation": spec.paper.get("implementation"),
                "license": spec.paper.get("license"),
                "upsample": spec.paper.get("upsample"),
                "counting": spec.paper.get("counting"),
            }
        )
    return rows


def _resolutions(paper):
    """'512x1024' or, for a network published at several input scales, 'Seg50 512x1024, ...'."""
    named = paper.get("resolutions")
    if named:
        return ", ".join("{} {}x{}".format(k, *hw) for k, hw in sorted(named.items()))
    hw = paper.get("resolution")
    return "{}x{}".format(*hw) if hw else None


# the zoo's notes per model, printed under its source line where the paper dict has them
_NOTES = (
    ("paper_resolution", "published at"),
    ("implementation", "implementation"),
    ("license", "licence"),
    ("upsample", "upsampling"),
    ("counting", "counting"),
)


def format_table(rows, input_hw):
    def g(value, scale, digits=2):
        return "-" if value is None else "{:.{}f}".format(value / scale, digits)

    def fps(row):
        if row["paper_fps"] is None:
            return "-"
        return "{:.1f} ({})".format(row["paper_fps"], row["paper_fps_device"])

    header = (
        "model",
        "params (M)",
        "MACs (G)",
        "FLOPs fvcore (G)",
        "paper params (M)",
        "paper MACs (G)",
        "paper FLOPs (G)",
        "paper FPS",
    )
    lines = [
        [
            r["model"],
            g(r["params"], 1e6, 3),
            g(r["macs"], 1e9),
            g(r["flops_fvcore"], 1e9),
            g(r["paper_params"], 1e6),
            g(r["paper_macs"], 1e9),
            g(r["paper_flops"], 1e9),
            fps(r),
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    out = [
        "complexity at {}x{} (batch 1); MACs = conv/linear multiply-adds; FLOPs fvcore = MACs "
        "+ BatchNorm, upsampling, adaptive pooling".format(*input_hw)
    ]
    for row in [header] + lines:
        out.append(
            "  ".join(
                str(x).rjust(w) if i else str(x).ljust(w)
                for i, (x, w) in enumerate(zip(row, widths))
            )
        )
    sources = []
    for r in rows:
        if r["source"]:
            sources.append("  {}: {}".format(r["model"], r["source"]))
        notes = ["    {}: {}".format(label, r[k]) for k, label in _NOTES if r[k]]
        if notes and not r["source"]:
            sources.append("  {}:".format(r["model"]))
        sources.extend(notes)
    if sources:
        out.append("paper figures (shown only where the paper gives them at this size):")
        out.extend(sources)
    return "\n".join(out)


def write_rows(path, rows):
    """Write the zoo rows as CSV (``.csv``) or JSON (anything else), atomically."""
    import csv
    import io

    from .._io import write_bytes, write_json

    if not str(path).lower().endswith(".csv"):
        write_json(path, rows)
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow(dict(row, input_hw="x".join(str(v) for v in row["input_hw"])))
    write_bytes(path, buffer.getvalue().encode("utf-8"))


def zoo_table(res="1024x2048", names=None):
    """(rows, text) of the zoo table at ``res`` for ``names`` (default: every full model)."""
    from ..models import list_models

    input_hw = _parse_res(res)
    rows = complexity_rows(names or list_models(include_tiny=False), input_hw)
    return rows, format_table(rows, input_hw)


def main(argv=None):
    parser = make_parser(
        "segcomplexity",
        "Print the parameters and multiply-adds of zoo models at an input size, beside the "
        "figures their papers give at that size.",
        examples=(
            "segcomplexity                        # every full zoo model at 1024x2048",
            "segcomplexity --model regseg --model swiftnet --res 512x1024",
        ),
    )
    add_common_args(parser, plugin=False)  # counts a PyTorch model: no engine, no plugin
    parser.add_argument(
        "--model", action="append", help="zoo model (repeatable; default: every non-tiny model)"
    )
    parser.add_argument("--res", default="1024x2048", help="input HEIGHTxWIDTH (default 1024x2048)")
    args = parser.parse_args(argv)

    def body():
        text = zoo_table(args.res, args.model)[1]
        if verbosity(args) == QUIET:  # the table alone: no heading, no sources
            text = "\n".join(text.splitlines()[1 : 2 + len(args.model or _full_models())])
        print(text)

    return run_main(parser.prog, body, "no table")


def _full_models():
    from ..models import list_models

    return list_models(include_tiny=False)


if __name__ == "__main__":
    sys.exit(main())
