"""Resident memory of a ``--output logits`` Runtime fed many distinct frame sizes.

    python scripts/soak_logits.py --sizes 200 [--json out/soak.json]

Exports regseg_tiny (random weights, logits output) at 32x64 into a temporary folder, then runs
``Runtime.infer`` on frames of N distinct sizes (0.07 to 0.3 megapixels for 200) and prints the RSS
before and after and its growth. The post-processor interpolates K x H x W float logits to each
frame's size; a buffer kept per size would grow without bound.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "runtime")
)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="soak_logits", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, default=200, help="distinct frame sizes (default 200)")
    parser.add_argument("--json", help="write the figures as JSON")
    args = parser.parse_args(argv)

    import psutil
    from runtime_support import tiny_card, tiny_model

    import segdeploy
    from segdeploy.export import export_onnx
    from segdeploy.runtime import Runtime

    sizes = [(200 + i, 360 + 2 * i) for i in range(args.sizes)]
    rng = np.random.RandomState(0)
    process = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tiny_logits.onnx")
        card = tiny_card(32, 64)
        card["output"] = {
            "name": "logits",
            "kind": "logits",
            "dtype": "float32",
            "resolution": "input",
        }
        export_onnx(tiny_model(), path, height=32, width=64, output="logits", card=card)
        with Runtime(path, threads=1) as runtime:
            for h, w in sizes[:3]:
                runtime.infer(rng.randint(0, 256, (h, w, 3), np.uint8))
            before = process.memory_info().rss
            for h, w in sizes:
                runtime.infer(rng.randint(0, 256, (h, w, 3), np.uint8))
            after = process.memory_info().rss
    result = {
        "segdeploy": segdeploy.__version__,
        "sizes": len(sizes),
        "rss_before_mb": round(before / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "growth_mb": round((after - before) / 2**20, 1),
    }
    print(
        "{sizes} frame sizes: RSS {rss_before_mb} MB -> {rss_after_mb} MB "
        "(growth {growth_mb} MB)".format(**result)
    )
    if args.json:
        from segdeploy._io import write_json

        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
