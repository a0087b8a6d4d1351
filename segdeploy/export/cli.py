"""segexport: from a checkpoint to a verified ONNX file and an engine for this machine.

segexport --model regseg [--checkpoint ckpt.pth] [--num-classes N] [--res 1024x2048]
          [--fp16] [--output labels|logits] [--head fused|graph] [--opset 13]
          [--dynamic 512x1024:1024x2048]
          [--backend auto|onnxruntime|tensorrt] [--out DIR] [--name NAME]
segexport --onnx my_model.onnx ...          # bring-your-own graph: skip to verification/build
segexport --model path/to/file.py:factory   # bring-your-own nn.Module (runs that file's code)
"""

import argparse
import sys

from .._cli import (
    QUIET,
    VERBOSE,
    add_common_args,
    add_plugin,
    make_parser,
    run_main,
    verbosity,
)
from ..errors import SegDeployError


def _trt_version(text):
    try:
        return tuple(int(v) for v in text.split(".")[:2])
    except ValueError:
        raise argparse.ArgumentTypeError("expected a version such as 8.2 or 10.3") from None


def parser():
    p = make_parser(
        "segexport",
        "Export a segmentation model to a verified ONNX file and build an engine for this "
        "machine: TensorRT where TensorRT and a GPU are present; on a CPU ONNX Runtime (.ort), "
        "or OpenVINO (.xml) when it is installed and measurably faster here.",
        examples=(
            "segexport --model regseg --res 512x1024 --out out/",
            "segexport --model regseg --checkpoint cityscapes.pth --fp16",
            "segexport --model regseg --backend tensorrt --fp16 --print-trtexec \\",
            "          --trt-version 8.2",
            "segexport --onnx my_model.onnx --classes names.txt --out out/",
        ),
    )
    add_common_args(p, plugin=False)
    src = p.add_argument_group("what to export")
    src.add_argument(
        "--model",
        help="zoo name (see segcomplexity) or path/to/file.py:factory; a .py file is "
        "IMPORTED AND RUN as Python code (like `python file.py`): only pass files you trust",
    )
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
        "--head",
        choices=("fused", "graph"),
        default=None,
        help="where bilinear upsample + argmax run: fused = the engine stops at the "
        "low-resolution logits and the runtime's exact fused head decides the labels (default "
        "for CPU engines); graph = Resize + ArgMax inside the engine (default for TensorRT and "
        "--output logits)",
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
    pl = p.add_argument_group("plugins")
    pl.add_argument(
        "--dblock-plugin",
        action="store_true",
        help="also write NAME.dblock.onnx: every split-dilation D block (Split, 2 Conv, Concat, "
        "Relu) fused into one DBlockConv node for the TensorRT plugin, checked against the "
        "standard graph in ONNX Runtime with the kernel's host build",
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
    e.add_argument(
        "--backend",
        choices=("auto", "onnxruntime", "openvino", "tensorrt"),
        default="auto",
        help="auto (default): TensorRT with a GPU; on a CPU ONNX Runtime (NAME.ort), and with "
        "OpenVINO installed also its IR (NAME.xml) when timing shows it clearly faster; "
        "onnxruntime: NAME.ort; openvino: NAME.xml; tensorrt: NAME.plan (with --print-trtexec: "
        "the trtexec line for the device, no TensorRT needed)",
    )
    e.add_argument(
        "--print-trtexec",
        action="store_true",
        help="print the equivalent trtexec command (needs no TensorRT)",
    )
    e.add_argument(
        "--trt-version",
        type=_trt_version,
        default=None,
        help="TensorRT version of the target device (e.g. 8.2 for Jetson TX2): the graph is "
        "rewritten and checked for its ONNX parser, and --print-trtexec prints its trtexec "
        "line (default: the installed TensorRT, else 10)",
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
    add_plugin(e)
    e.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads of the engine")
    s = p.add_argument_group("serving (uint8 frames into the graph, Triton Inference Server)")
    s.add_argument(
        "--input",
        choices=("float", "uint8"),
        default="float",
        help="float: the graph takes normalized float32 NCHW (default); uint8: it takes the "
        "frame as uint8 NxHxWx3 BGR and casts, normalizes and transposes it itself",
    )
    s.add_argument(
        "--triton",
        metavar="DIR",
        help="also write a Triton Inference Server model repository DIR/<name>/",
    )
    s.add_argument(
        "--triton-backend",
        choices=("auto", "tensorrt_plan", "onnxruntime", "python"),
        default="auto",
        help="auto: the TensorRT plan when one was built, else the ONNX file with ONNX "
        "Runtime; python: ONNX Runtime inside Triton's Python backend (CPU-only servers)",
    )
    s.add_argument(
        "--max-batch",
        type=int,
        metavar="N",
        help="a dynamic batch axis 1..N in the graph, Triton's max_batch_size "
        "(default 8 with --triton, else batch 1)",
    )
    s.add_argument(
        "--instances", type=int, default=1, help="Triton model instances per device (default 1)"
    )
    s.add_argument(
        "--triton-device",
        choices=("gpu", "cpu"),
        help="Triton instance kind (default: gpu when this machine has one, else cpu; cpu "
        "for --triton-backend python, gpu for a plan); ONNX "
        "Runtime gets the TensorRT accelerator on gpu, OpenVINO on cpu",
    )
    s.add_argument(
        "--queue-delay-us",
        type=int,
        default=100,
        metavar="US",
        help="Triton dynamic batching: longest wait for a fuller batch (default 100 us)",
    )
    b = p.add_argument_group(
        "bring-your-own model",
        "pre-processing and classes of --model file.py:factory or --onnx (they\n"
        "override a zoo model's too); without them ImageNet RGB and class_N are\n"
        "assumed, and said so",
    )
    b.add_argument(
        "--factory-args",
        action="append",
        metavar="ARGS",
        help="keyword arguments of the factory: JSON ('{\"num_classes\": 5}') or key=value "
        "pairs (num_classes=5,pretrained=false); parsed, never evaluated; repeatable",
    )
    b.add_argument("--mean", metavar="R,G,B", help="per-channel mean (0..1 or 0..255 units)")
    b.add_argument("--std", metavar="R,G,B", help="per-channel std (same units as --mean)")
    b.add_argument(
        "--input-range",
        choices=("0-1", "0-255"),
        help="units of --mean/--std: pixels / 255, or raw 0..255 (default: 0-255 when a "
        "value is above 1)",
    )
    order = b.add_mutually_exclusive_group()
    order.add_argument(
        "--rgb",
        dest="channel_order",
        action="store_const",
        const="RGB",
        help="the model takes RGB channels (the default)",
    )
    order.add_argument(
        "--bgr",
        dest="channel_order",
        action="store_const",
        const="BGR",
        help="the model takes BGR channels (OpenCV / Caffe-trained)",
    )
    b.add_argument(
        "--classes",
        metavar="N|FILE",
        help="number of classes, or a text file with one class name a line",
    )
    o = p.add_argument_group("output")
    o.add_argument("--out", default="out", help="output directory (default: out)")
    o.add_argument("--name", help="base name of the artifacts (default: the model's name)")
    return p


def _print_result(result, level):
    """-q: only the result line (the engine, else the ONNX file); -v: the card and parity."""
    artifacts = result.get("artifacts") or {}
    parity = result.get("parity_fp32") or {}
    if level >= VERBOSE:
        import json

        card = result.get("card") or {}
        for section in ("model", "input", "output"):
            print("{}: {}".format(section, json.dumps(card.get(section), sort_keys=True)))
        for key in ("parity_fp32", "parity_fp16"):
            if result.get(key):
                print("{}: {}".format(key, json.dumps(result[key], sort_keys=True, default=str)))
    if level == QUIET:
        print(
            "{}{}".format(
                artifacts.get("engine") or artifacts.get("onnx"),
                "  (label agreement with PyTorch {:.4%})".format(parity["label_agreement"])
                if parity.get("label_agreement") is not None
                else "",
            )
        )


def main(argv=None):
    args = parser().parse_args(argv)
    # On Ctrl-C or SIGTERM the staging folder is gone and --out holds the previous export.
    return run_main(
        "segexport",
        lambda: _run(args),
        "{} was left as it was (no new file was moved in)".format(args.out),
        first_line=True,
        signal_exit=True,
    )


def _run(args):
    if not args.model and not args.onnx:
        raise SegDeployError("give --model NAME (or file.py:factory) or --onnx FILE")
    if args.onnx is None and args.res is None and args.dynamic is None:
        args.res = "1024x2048"
    if args.verify_inputs < 1:
        raise SegDeployError("--verify-inputs must be at least 1")
    check_arguments(args)
    if args.model and ".py:" not in args.model:
        from ..models import get_spec

        get_spec(args.model)  # an unknown name: one line before any step is printed
    from .int8_step import check_args as check_int8_args

    check_int8_args(args)
    from .pipeline import run
    from .user_model import resolve_flags

    resolve_flags(args)
    level = verbosity(args)
    if level == QUIET:
        import os

        with open(os.devnull, "w") as sink:
            result = run(args, stream=sink)
    else:
        result = run(args)
    _print_result(result, level)


def check_arguments(args):
    """One-line SegDeployErrors for numbers out of range, before any work is done."""
    from ..card import MAX_CLASSES

    if args.num_classes is not None and not 1 <= args.num_classes <= MAX_CLASSES:
        raise SegDeployError(
            "--num-classes must be between 1 and {} (label maps are uint8), got {}".format(
                MAX_CLASSES, args.num_classes
            )
        )
    for flag, value in (
        ("--threads", args.threads),
        ("--workspace", args.workspace),
        ("--stride", args.stride),
    ):
        if value is not None and value < 1:
            raise SegDeployError("{} must be a positive integer, got {}".format(flag, value))


if __name__ == "__main__":
    sys.exit(main())
