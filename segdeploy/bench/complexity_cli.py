"""segcomplexity: parameters and multiply-adds of zoo models as a readable table."""

import argparse
import sys

from ..errors import SegDeployError


def _parse_res(text):
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SegDeployError(
            "--res must be HEIGHTxWIDTH such as 1024x2048, got {!r}".format(text)
        ) from None
    return height, width


def complexity_rows(names, input_hw):
    """One dict per model: name, params, macs, flops_fvcore, and the paper's figures if given."""
    from ..models import build, get_spec
    from .complexity import complexity

    rows = []
    for name in names:
        spec = get_spec(name)
        c = complexity(build(name), input_hw)
        paper = spec.paper if tuple(spec.paper.get("resolution", ())) == tuple(input_hw) else {}
        rows.append(
            {
                "model": name,
                "params": c.params,
                "macs": c.macs,
                "flops_fvcore": c.flops_fvcore,
                "paper_params": spec.paper.get("params"),
                "paper_macs": paper.get("macs"),
                "paper_flops": paper.get("flops_fvcore"),
                "source": spec.paper.get("source", ""),
            }
        )
    return rows


def format_table(rows, input_hw):
    def g(value, scale, digits=2):
        return "-" if value is None else "{:.{}f}".format(value / scale, digits)

    header = (
        "model",
        "params (M)",
        "MACs (G)",
        "FLOPs fvcore (G)",
        "paper params (M)",
        "paper MACs (G)",
        "paper FLOPs (G)",
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
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="segcomplexity", description=__doc__)
    parser.add_argument(
        "--model", action="append", help="zoo model (repeatable; default: every non-tiny model)"
    )
    parser.add_argument("--res", default="1024x2048", help="input HEIGHTxWIDTH (default 1024x2048)")
    args = parser.parse_args(argv)
    try:
        from ..models import list_models

        input_hw = _parse_res(args.res)
        names = args.model or list_models(include_tiny=False)
        print(format_table(complexity_rows(names, input_hw), input_hw))
    except SegDeployError as exc:
        print("segcomplexity: error: {}".format(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
