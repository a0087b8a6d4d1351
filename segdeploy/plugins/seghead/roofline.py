"""Bytes moved by the segmentation head, standard against fused, per device of the device table.

    python -m segdeploy.plugins.seghead.roofline [--classes 19] [--res 1024x2048] [--stride 8]

The standard head (what TensorRT builds from the graph's Resize + ArgMax): the Resize reads the
low-resolution logits and writes the full-resolution ones, the ArgMax (TopK in TensorRT) reads
those again and writes int32 labels. The fused SegHead kernel reads the low-resolution logits once
and writes the labels (uint8, or int32 as the plugin's default network output). Both are memory
bound (a handful of operations per byte), so each device's floor is bytes / memory bandwidth from
``segdeploy.engines.devices``; re-reads of the low-resolution logits are assumed to hit in the
caches, and the standard head's full-resolution round trip not to (80 MB in FP16 at 1024 x 2048
with 19 classes: larger than any target's L2).

Python 3.6 compatible; imports nothing heavy.
"""

import argparse
import io
import sys

from ..._cli import run_main
from ..._version import __version__
from ...engines import devices
from ...errors import SegDeployError

ELEMENT_BYTES = {"fp32": 4, "fp16": 2}
LABEL_BYTES = {"uint8": 1, "int32": 4}


def head_bytes(classes, height, width, stride, precision, labels="uint8"):
    """(standard bytes, fused bytes) of one frame's head at ``height`` x ``width`` (the labels'
    size) from logits at 1/``stride`` of it (rounded up, as a stride-``stride`` network's output
    is), ``precision`` 'fp32' / 'fp16' logits; the standard head writes int32 labels (TensorRT's
    ArgMax), the fused one ``labels``."""
    if precision not in ELEMENT_BYTES:
        raise SegDeployError("precision must be fp32 or fp16, got {!r}".format(precision))
    if labels not in LABEL_BYTES:
        raise SegDeployError("labels must be uint8 or int32, got {!r}".format(labels))
    if min(classes, height, width, stride) < 1:
        raise SegDeployError("classes, size and stride must be positive")
    size = ELEMENT_BYTES[precision]
    low = classes * (-(-height // stride)) * (-(-width // stride)) * size
    full = classes * height * width * size
    standard = low + 2 * full + height * width * LABEL_BYTES["int32"]
    fused = low + height * width * LABEL_BYTES[labels]
    return standard, fused


def estimate(classes=19, height=1024, width=2048, stride=8, keys=None):
    """One row per device with a known bandwidth and per precision: bytes and microseconds."""
    rows = []
    for key in keys or sorted(devices.TABLE):
        record = devices.get(key)
        if not record.bandwidth_gbs:
            continue
        for precision in ("fp32", "fp16"):
            standard, fused = head_bytes(classes, height, width, stride, precision)
            _, fused32 = head_bytes(classes, height, width, stride, precision, "int32")
            per_us = record.bandwidth_gbs * 1e3  # bytes per microsecond
            rows.append(
                {
                    "device": key,
                    "name": record.name,
                    "bandwidth_gbs": record.bandwidth_gbs,
                    "precision": precision,
                    "standard_bytes": standard,
                    "fused_bytes": fused,
                    "fused_int32_bytes": fused32,
                    "standard_us": standard / per_us,
                    "fused_us": fused / per_us,
                    "fused_int32_us": fused32 / per_us,
                    "ratio": float(standard) / fused,
                }
            )
    return rows


_ROW = "{:<20} {:>7.1f} {:<5} {:>9.1f} {:>8.2f} {:>8.2f} {:>11.1f} {:>9.1f} {:>10.1f} {:>7.1f}x\n"


def format_estimate(rows, classes=19, height=1024, width=2048, stride=8):
    """The table as text."""
    out = io.StringIO()
    out.write(
        "Head traffic at {}x{} from 1/{} logits, {} classes (memory floor = bytes / bandwidth;\n"
        "standard: Resize writes and ArgMax reads the full-resolution logits, int32 labels;\n"
        "fused: SegHead reads the low-resolution logits once, uint8 labels [int32 in brackets]):\n"
        "".format(height, width, stride, classes)
    )
    out.write(
        "{:<20} {:>7} {:<5} {:>9} {:>8} {:>8} {:>11} {:>9} {:>10} {:>8}\n".format(
            "device",
            "GB/s",
            "I/O",
            "std MB",
            "fused MB",
            "[int32]",
            "std us",
            "fused us",
            "[int32] us",
            "ratio",
        )
    )
    for r in rows:
        out.write(
            _ROW.format(
                r["name"],
                r["bandwidth_gbs"],
                r["precision"],
                r["standard_bytes"] / 1e6,
                r["fused_bytes"] / 1e6,
                r["fused_int32_bytes"] / 1e6,
                r["standard_us"],
                r["fused_us"],
                r["fused_int32_us"],
                r["ratio"],
            )
        )
    return out.getvalue()


def _size(text):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected HxW like 1024x2048, got {!r}".format(text)
        ) from None
    return h, w


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m segdeploy.plugins.seghead.roofline",
        description="Bytes moved by the standard Resize + ArgMax head against the fused SegHead "
        "kernel, and each device's memory floor for both.",
    )
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    parser.add_argument("--classes", type=int, default=19, help="classes (default 19)")
    parser.add_argument("--res", type=_size, default=(1024, 2048), help="labels' HxW")
    parser.add_argument("--stride", type=int, default=8, help="logits' stride (default 8)")
    args = parser.parse_args(argv)

    def body():
        h, w = args.res
        rows = estimate(args.classes, h, w, args.stride)
        sys.stdout.write(format_estimate(rows, args.classes, h, w, args.stride))

    return run_main(parser.prog, body, "nothing computed")


if __name__ == "__main__":
    sys.exit(main())
