"""segbuild: the device-side half of "host exports, device builds".

    segbuild out/regseg.onnx --fp16 [--plugin LIB] [--workspace MIB] [--timing-cache FILE]
             [--dynamic MINHxMINW:MAXHxMAXW] [--out out/regseg.plan]
    segbuild out/regseg.onnx --fp16 --print-trtexec [--trt-version 8.2]
    segbuild --adopt regseg.plan out/regseg.onnx        # a plan trtexec built

It turns an ONNX file exported by ``segexport`` (on any host) and its model card into a TensorRT
plan for the GPU it runs on, and writes the plan and its sidecar atomically. It imports neither
torch nor onnx: the card comes from the ONNX metadata (read by ``onnx_reader``, a protobuf reader
in plain Python) or from the sidecar JSON that segexport writes next to the ONNX. It runs under
Python 3.6 with numpy, TensorRT and pycuda or cuda-python (Jetson TX2, JetPack 4.6).

``segexport --backend tensorrt`` calls ``trtexec_line`` and ``build`` below, so both commands
build the same engine. Other options (INT8 calibration, the D-block plugin, Triton repositories)
plug in through ``add_arguments``-style groups and the ``options`` dict passed to ``build``.
Python 3.6 compatible.
"""

import argparse
import os
import sys

from .. import card as card_mod
from .._cli import QUIET, add_common_args, add_plugin, make_parser, run_main, verbosity
from ..errors import SegDeployError
from .plan_build import (  # noqa: F401  (segbuild's functions, as callers knew them)
    DEFAULT_TENSORRT,
    _sibling,
    adopt,
    adopted_engine_info,
    build,
    check_graph,
    default_plan_path,
    fp16_sibling,
    installed_tensorrt_version,
    int8_sibling,
    parse_trt_version,
    parser_max_opset,
    print_trtexec,
    read_card,
    requested_profile,
    resolve_precision,
    run_for_segexport,
    source_for,
    target_version,
    trtexec_line,
)


def _version_arg(text):
    try:
        return parse_trt_version(text)
    except SegDeployError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_source_arguments(p):
    p.add_argument(
        "onnx", nargs="?", help="ONNX file exported by segexport (card inside or in ONNX.json)"
    )
    p.add_argument(
        "--out", "-o", metavar="PLAN", help="plan to write (default: ONNX name with .plan)"
    )
    p.add_argument(
        "--adopt",
        metavar="PLAN",
        help="write the sidecar for a plan trtexec built on this machine from ONNX",
    )
    # the ONNX file is the positional argument; --onnx (its old spelling with --adopt) stays
    # accepted, out of the help
    p.add_argument("--onnx", dest="onnx_for_adopt", metavar="ONNX", help=argparse.SUPPRESS)


def _add_precision_arguments(p):
    g = p.add_argument_group("precision")
    g.add_argument(
        "--fp16", action="store_true", help="FP16 engine (TensorRT 11: from NAME.fp16.onnx)"
    )
    g.add_argument(
        "--int8",
        action="store_true",
        help="INT8 engine from the Q/DQ graph NAME.int8.onnx beside NAME.onnx (written by "
        "segexport --int8 --calib DIR; passing NAME.int8.onnx itself builds INT8 too)",
    )
    return g


def _add_build_arguments(p):
    g = p.add_argument_group("build")
    g.add_argument(
        "--res", help="HEIGHTxWIDTH: opt size of a --dynamic engine (default: the card's)"
    )
    g.add_argument(
        "--dynamic", help="input size range MINHxMINW:MAXHxMAXW (the ONNX must be dynamic)"
    )
    g.add_argument(
        "--workspace", type=int, metavar="MIB", help="builder workspace limit in MiB (default 1024)"
    )
    g.add_argument(
        "--timing-cache",
        metavar="FILE",
        help="timing cache read before and rewritten after the build",
    )
    g.add_argument(
        "--opt-level",
        type=int,
        choices=range(6),
        metavar="0-5",
        help="builder optimization level (8.6+)",
    )
    add_plugin(g, "TensorRT plugin library the network needs (repeatable)")
    # segbuild's old spelling, accepted out of the help
    g.add_argument("--plugins", action="append", dest="plugin", help=argparse.SUPPRESS)
    g.add_argument(
        "--version-compatible",
        action="store_true",
        help="plan loadable by later TensorRT of the same major (8.6+)",
    )
    g.add_argument(
        "--hardware-compatible", action="store_true", help="plan for every Ampere+ GPU (8.6+)"
    )
    g.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    g.add_argument(
        "--trt-verbose",
        action="store_true",
        help="TensorRT's own verbose log (also -vv)",
    )
    g.add_argument(
        "--dblock-plugin",
        action="store_true",
        help="fuse the split-dilation D blocks into DBlockConv plugin nodes first (writes "
        "NAME.dblock.onnx; needs the onnx package) and build that graph; pass the plugin "
        "library with --plugin",
    )
    g.add_argument(
        "--seghead-plugin",
        action="store_true",
        help="run the labels head in the SegHead plugin: its Resize + ArgMax (or, for a graph "
        "exported with --head fused, its logits) feed one SegHead node (writes "
        "NAME.seghead.onnx; needs the onnx package); after --dblock-plugin's blocks; pass the "
        "library with --plugin",
    )
    return g


def _add_trtexec_arguments(p):
    g = p.add_argument_group("trtexec")
    g.add_argument(
        "--print-trtexec",
        action="store_true",
        help="print the equivalent trtexec command and exit (needs no TensorRT or GPU)",
    )
    g.add_argument(
        "--trt-version",
        type=_version_arg,
        help="TensorRT release of the target (e.g. 8.2 for Jetson TX2); honoured even where "
        "another TensorRT is installed (default: the installed one, else 10)",
    )
    return g


def build_parser():
    p = make_parser(
        "segbuild",
        "Build a TensorRT engine for this machine from an ONNX file exported by segexport; "
        "writes the plan and its model card (sidecar) atomically.",
        examples=(
            "segbuild out/regseg.onnx --fp16 --timing-cache trt.cache",
            "segbuild out/regseg.onnx --fp16 --print-trtexec --trt-version 8.2",
            "segbuild out/regseg.int8.onnx          # INT8 (GTX 1080 Ti, T4; not the TX2)",
            "segbuild --adopt out/regseg.plan out/regseg.onnx   # a plan trtexec built",
            "segbuild out/regseg.onnx --fp16 --dblock-plugin \\",
            "         --plugin build/dblock/libdblock_plugin.so",
            "segbuild out/regseg.onnx --fp16 --seghead-plugin \\",
            "         --plugin build/seghead/libseghead_plugin.so",
        ),
    )
    add_common_args(p, plugin=False)  # --plugin sits with the build options
    _add_source_arguments(p)
    _add_precision_arguments(p)
    _add_build_arguments(p)
    _add_trtexec_arguments(p)
    return p


def options_from_args(args, card):
    """The keyword arguments of ``build`` / ``trtexec_line`` for parsed ``args``."""
    options = {
        "plugins": tuple(args.plugin or ()),
        "opt_level": args.opt_level,
        "timing_cache": args.timing_cache,
    }
    if args.workspace is not None:
        if args.workspace < 1:
            raise SegDeployError("--workspace must be a positive number of MiB")
        options["workspace_mib"] = args.workspace
    options["profile"] = requested_profile(card, args.res, args.dynamic)
    return options


def _run(args, out=None):
    out = out or sys.stdout
    if args.adopt:
        source = args.onnx or args.onnx_for_adopt
        if not source:
            raise SegDeployError(
                "--adopt PLAN needs the ONNX file the plan was built from: segbuild --adopt "
                "{} out/regseg.onnx".format(args.adopt)
            )
        adopt(
            args.adopt,
            source,
            precision="fp16" if args.fp16 else "fp32",
            plugins=args.plugin or [],
            version_compatible=args.version_compatible,
            device=args.device,
        )
        return args.adopt
    onnx_path = args.onnx or args.onnx_for_adopt
    if not onnx_path:
        raise SegDeployError("give the ONNX file to build from: segbuild out/regseg.onnx")
    if args.seghead_plugin:
        from .seghead_graph import check_plugin_args

        check_plugin_args(args)  # before the D blocks are written
    if args.dblock_plugin:
        onnx_path = _fuse_dblocks(onnx_path, args, out or sys.stdout)
    if args.seghead_plugin:
        from .seghead_graph import segbuild_step

        onnx_path = segbuild_step(onnx_path, args, out or sys.stdout)
    onnx_path, card, precision = resolve_precision(
        onnx_path, read_card(onnx_path), args.fp16, args.int8
    )
    if card_mod.fused_head(card) is not None:
        print(
            "segbuild: note: {}'s head is fused: the plan returns the low-resolution logits and "
            "the runtime runs the head on the host (--seghead-plugin runs it on the GPU)".format(
                onnx_path
            ),
            file=sys.stderr,
        )
    plan = args.out or default_plan_path(onnx_path)
    options = options_from_args(args, card)
    if args.print_trtexec:
        version = target_version(args.trt_version)
        print_trtexec(onnx_path, plan, card, precision, version, options, out)
        return
    if args.trt_version is not None:
        installed = installed_tensorrt_version()
        if installed is not None and installed != tuple(args.trt_version):
            print(
                "segbuild: note: --trt-version {} is for --print-trtexec; building with the "
                "installed TensorRT {}".format(
                    ".".join(map(str, args.trt_version)), ".".join(map(str, installed))
                ),
                file=sys.stderr,
            )
    options.update(
        device=args.device,
        version_compatible=args.version_compatible,
        hardware_compatible=args.hardware_compatible,
        verbose=args.trt_verbose or verbosity(args) >= 2,
    )
    if options.get("workspace_mib") is None:
        options.pop("workspace_mib", None)
    build(onnx_path, plan, card, precision, options)
    return plan


def _fuse_dblocks(onnx_path, args, out):
    """segbuild --dblock-plugin: the D-block graph (and its FP16-typed twin, when segexport
    wrote one) beside the standard graph; returns the graph to build from."""
    if not args.plugin and not args.print_trtexec:
        raise SegDeployError(
            "--dblock-plugin builds DBlockConv plugin layers: pass the plugin library with "
            "--plugin build/dblock/libdblock_plugin.so (build it on this device with "
            "python -m segdeploy.plugins.dblock.build --out build/dblock)"
        )
    from .dblock_graph import fuse_file  # onnx is needed here, and said so if missing

    fused, summary = fuse_file(onnx_path)
    print(
        "segbuild: {} D blocks fused into DBlockConv nodes: {}".format(
            len(summary["fused"]), fused
        ),
        file=out,
    )
    typed = fp16_sibling(onnx_path)
    if args.fp16 and typed != os.fspath(onnx_path) and os.path.isfile(typed):
        fuse_file(typed, out_path=fp16_sibling(fused))  # TensorRT 11 builds FP16 from it
    return fused


def main(argv=None):
    args = build_parser().parse_args(argv)

    def work():  # its result is for callers in Python; the command exits 0
        if verbosity(args) == QUIET and not args.print_trtexec:
            import contextlib
            import os as _os

            with open(_os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                written = _run(args)
            print(written)  # -q: the plan written, alone
            return
        _run(args)

    return run_main("segbuild", work, "nothing half-written was left behind")


if __name__ == "__main__":
    sys.exit(main())
