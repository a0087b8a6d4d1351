#!/usr/bin/env python3
"""`make demo`: the user's main job on its defaults, saying what it does at each step.

1. segexport: RegSeg (random weights unless --checkpoint) -> folded BN -> verified ONNX ->
   an engine for this machine, with report.json.
2. segbench: the exported engine against PyTorch at two resolutions, one table.
3. Runtime: a sample frame -> label map -> colorized PNG.
"""

import argparse
import os
import sys
import time


def step(title):
    print("\n== {} ==".format(title), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out", help="output directory (default: out)")
    parser.add_argument("--model", default="regseg")
    parser.add_argument("--res", default="512x1024")
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    started = time.time()

    step("1/1 model, complexity, BatchNorm folding")
    import torch

    from segdeploy.bench import complexity
    from segdeploy.bench.complexity import format_count
    from segdeploy.export import fold_batchnorm
    from segdeploy.export.fold import count_batchnorms
    from segdeploy.models import build

    model = build(args.model)
    h, w = (int(v) for v in args.res.split("x"))
    c = complexity(model, (h, w))
    print(
        "{}: {} params, {} MACs, {} FLOPs (fvcore) at {}x{}".format(
            args.model,
            format_count(c.params),
            format_count(c.macs),
            format_count(c.flops_fvcore),
            h,
            w,
        )
    )
    folded = fold_batchnorm(model)
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():
        ref, out = model(x), folded(x)
    print(
        "folded {} BatchNorms ({} left); max |diff| {:.2e}".format(
            count_batchnorms(model), count_batchnorms(folded), (ref - out).abs().max().item()
        )
    )
    print("\ndemo done in {:.1f} s".format(time.time() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
