"""segexport: from a checkpoint to a verified ONNX file and an engine for this machine.

segexport --model regseg [--checkpoint ckpt.pth] [--num-classes N] [--res 1024x2048]
          [--fp16] [--output labels|logits] [--opset 13] [--dynamic 512x1024:1024x2048]
          [--backend auto|onnxruntime|tensorrt] [--out DIR] [--name NAME]
segexport --onnx my_model.onnx ...          # bring-your-own graph: skip to verification/build
segexport --model path/to/file.py:factory   # bring-your-own nn.Module
"""

import argparse
import sys

from ..errors import SegDeployError


def _trt_version(text):
    try:
        return tuple(int(v) for v in text.split(".")[:2])
    except ValueError:
        raise argparse.ArgumentTypeError("expected a version such as 8.2 or 10.3") from None


def parser():
    p = argparse.ArgumentParser(
        prog="segexport",
        description="Export a segmentation model to a verified ONNX file and build an engine "
        "for this machine (TensorRT when present, else ONNX Runtime).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  segexport --model regseg --res 512x1024 --out out/\n"
        "  segexport --model regseg --checkpoint cityscapes.pth --fp16\n"
        "  segexport --model regseg --backend tensorrt --fp16 --print-trtexec --trt-version 8.2",
    )
    src = p.add_argument_group("what to export")
    src.add_argument("--model", help="zoo name (see segcomplexity) or path/to/file.py:factory")
    src.add_argument("--onnx", help="an existing ONNX graph: skip export, verify and build")
    src.add_argument("--checkpoint", help="weights (.pth); without it the weights are random")
    src.add_argument(
        "--unsafe-pickle",
        action="store_true",
        help="allow checkpoints that pickle Python objects (only if you trust them)",
    )
    src.add_argument("--num-classes", type=int, help="classes of the checkpoint's head")
    src.add_argument(
        "--stride", type=int, help="output stride of a bring-your-own model (default 32)"
    )
    g = p.add_argument_group("graph")
    g.add_argument("--res", help="input HEIGHTxWIDTH (default 1024x2048; with --dynamic: opt size)")
    g.add_argument("--dynamic", help="dynamic height/width range MINHxMINW:MAXHxMAXW")
    g.add_argument(
        "--output",
        choices=("labels", "logits"),
        default="labels",
        help="labels: argmax in the graph (default); logits: raw class scores",
    )
    g.add_argument(
        "--opset",
        type=int,
        default=13,
        help="ONNX opset (default 13: what TensorRT 8.2 on Jetson TX2 parses)",
    )
    g.add_argument(
        "--fp16",
        action="store_true",
        help="also write an FP16-typed ONNX and build an FP16 engine where possible",
    )
    q = p.add_argument_group("INT8 (explicit Q/DQ graph with an accuracy budget)")
    q.add_argument(
        "--int8",
        action="store_true",
        help="also write <name>.int8.onnx, calibrated on --calib and checked on held-out frames",
    )
    q.add_argument(
        "--calib",
        metavar="DIR",
        help="folder of real frames for calibration (a quarter held out for the budget); "
        "'random' calibrates on noise (speed tests only)",
    )
    q.add_argument("--calib-count", type=int, metavar="N", help="use at most N calibration frames")
    q.add_argument(
        "--budget",
        metavar="AGREE[:IOU]",
        help="accuracy budget in percent: label agreement with FP32 and IoU points any class "
        "may lose (default 99:2); over it, the most sensitive layers stay FP32",
    )
    v = p.add_argument_group("verification")
    v.add_argument("--images", help="directory of real images to verify on, besides random ones")
    v.add_argument("--verify-inputs", type=int, default=3, help="random inputs (default 3)")
    e = p.add_argument_group("engine")
    e.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto")
    e.add_argument(
        "--print-trtexec",
        action="store_true",
        help="print the equivalent trtexec command (needs no TensorRT)",
    )
    e.add_argument(
        "--trt-version",
        type=_trt_version,
        default=None,
        help="TensorRT version of the target device for --print-trtexec when "
        "TensorRT is not installed here (e.g. 8.2 for Jetson TX2; default 10)",
    )
    e.add_argument(
        "--workspace",
        type=int,
        metavar="MIB",
        help="TensorRT builder workspace limit in MiB (default 1024)",
    )
    e.add_argument(
        "--timing-cache",
        metavar="FILE",
        help="TensorRT timing cache reused across builds (default OUT/timing.cache)",
    )
    e.add_argument(
        "--opt-level",
        type=int,
        choices=range(6),
        metavar="0-5",
        help="TensorRT builder optimization level (TensorRT 8.6+)",
    )
    e.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="LIB.so",
        help="TensorRT plugin library to load (repeatable)",
    )
    e.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads of the engine")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="out", help="output directory (default: out)")
    o.add_argument("--name", help="base name of the artifacts (default: the model's name)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        if not args.model and not args.onnx:
            raise SegDeployError("give --model NAME (or file.py:factory) or --onnx FILE")
        if args.onnx is None and args.res is None and args.dynamic is None:
            args.res = "1024x2048"
        if args.verify_inputs < 1:
            raise SegDeployError("--verify-inputs must be at least 1")
        from .int8_step import check_args

        check_args(args)
        from .pipeline import run

        run(args)
    except SegDeployError as exc:
        print("segexport: error: {}".format(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("segexport: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
