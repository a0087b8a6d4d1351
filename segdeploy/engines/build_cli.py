"""segbuild: the device-side half of "host exports, device builds".

    segbuild out/regseg.onnx --fp16 [--plugins LIB] [--workspace MIB] [--timing-cache FILE]
             [--dynamic MINHxMINW:MAXHxMAXW] [--out out/regseg.plan]
    segbuild out/regseg.onnx --fp16 --print-trtexec [--trt-version 8.2]
    segbuild --adopt regseg.plan --onnx out/regseg.onnx        # a plan trtexec built

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
import importlib.util
import os
import sys

from .. import card as card_mod
from .._cli import run_main
from .._version import __version__
from ..errors import EngineError, SegDeployError

DEFAULT_TENSORRT = (10,)

# The newest ONNX opset each TensorRT release's ONNX parser imports (onnx-tensorrt's
# docs/operators.md per release branch: 8.2 -> 13, 8.4 to 8.6 -> 17, 10.x -> 20 and newer).
_PARSER_OPSETS = (((8, 4), 13), ((10, 0), 17))


def parser_max_opset(trt_version):
    """The newest opset the ONNX parser of ``trt_version`` (a tuple) imports; None: no limit
    known (10.x and newer parse what the exporter writes)."""
    for below, top in _PARSER_OPSETS:
        if tuple(trt_version) < below:
            return top
    return None


def parse_trt_version(text):
    """'8.2' / '10.3.0' -> (8, 2) / (10, 3); SegDeployError for anything else."""
    parts = str(text).strip().split(".")
    if not parts or not all(p.isdigit() for p in parts[:2]) or not parts[0]:
        raise SegDeployError("TensorRT version must look like 8.2 or 10.3, got {!r}".format(text))
    return tuple(int(p) for p in parts[:2])


def installed_tensorrt_version():
    """(major, minor) of the importable tensorrt module, or None. Never raises: a tensorrt
    whose libraries are missing counts as not installed."""
    try:
        if importlib.util.find_spec("tensorrt") is None:
            return None
        import tensorrt

        return parse_trt_version(tensorrt.__version__)
    except Exception:  # a broken install (missing libnvinfer) is "not installed" here
        return None


def target_version(requested=None):
    """The TensorRT release a trtexec line or a graph check is for: ``requested`` (the user's
    --trt-version) wins over the installed one; with neither, 10.x."""
    if requested is not None:
        return tuple(requested)
    return installed_tensorrt_version() or DEFAULT_TENSORRT


# --- the model card -------------------------------------------------------------------------------


def read_card(onnx_path):
    """The model card of ``onnx_path``: its metadata (``segdeploy.card``) when the protobuf reader
    is available, else the sidecar ``<onnx>.json`` segexport wrote. EngineError when neither has
    one."""
    path = os.fspath(onnx_path)
    if not os.path.isfile(path):
        raise EngineError(
            "ONNX file {} does not exist; export it with segexport first".format(path)
        )
    text = None
    try:
        from . import onnx_reader
    except ImportError:
        onnx_reader = None
    if onnx_reader is not None:
        text = onnx_reader.read_metadata(path).get(card_mod.METADATA_KEY)
        if text is not None:
            return card_mod.from_json(text, "{} metadata".format(path))
    sidecar = card_mod.sidecar_path(path)
    if os.path.isfile(sidecar):
        with open(sidecar, "r", encoding="utf-8") as f:
            return card_mod.from_json(f.read(), sidecar)
    raise EngineError(
        "{} has no segdeploy model card (no {!r} metadata and no {}); export it with "
        "segexport, or run segexport --onnx {} on the host to add one".format(
            path, card_mod.METADATA_KEY, sidecar, path
        )
    )


def default_plan_path(onnx_path):
    """out/regseg.onnx and out/regseg.fp16.onnx -> out/regseg.plan (precision is in the sidecar)."""
    base = os.fspath(onnx_path)
    if base.endswith(".onnx"):
        base = base[: -len(".onnx")]
    for variant in (".fp16", ".int8"):
        if base.endswith(variant):
            base = base[: -len(variant)]
    return base + ".plan"


def _sibling(onnx_path, variant):
    """out/regseg.onnx -> out/regseg.<variant>.onnx; a path already naming it is returned."""
    path = os.fspath(onnx_path)
    if path.endswith(variant + ".onnx"):
        return path
    stem = path[: -len(".onnx")] if path.endswith(".onnx") else path
    return stem + variant + ".onnx"


def int8_sibling(onnx_path):
    """out/regseg.onnx -> out/regseg.int8.onnx (what segexport --int8 --calib DIR writes)."""
    return _sibling(onnx_path, ".int8")


def resolve_precision(onnx_path, card, fp16=False, int8=False):
    """(ONNX to build from, its card, precision). An INT8 engine comes from the Q/DQ graph only:
    that graph's card says precision int8, and ``int8`` picks NAME.int8.onnx beside NAME.onnx.
    Quantizing needs onnx and onnxruntime (the export side), so segbuild does not calibrate:
    ``segexport --onnx NAME.onnx --int8 --calib DIR`` does, on any host."""
    if int8 and card.get("precision") != "int8":
        sibling = int8_sibling(onnx_path)
        if not os.path.isfile(sibling):
            raise SegDeployError(
                "--int8 builds from the Q/DQ graph {}, which is not there; write it where onnx "
                "and onnxruntime are installed: segexport --onnx {} --int8 --calib DIR".format(
                    sibling, onnx_path
                )
            )
        onnx_path, card = sibling, read_card(sibling)
    if card.get("precision") == "int8":
        if fp16:
            raise SegDeployError(
                "{} is an INT8 Q/DQ graph: its precision comes from the graph; drop --fp16".format(
                    onnx_path
                )
            )
        return onnx_path, card, "int8"
    return onnx_path, card, "fp16" if fp16 or card.get("precision") == "fp16" else "fp32"


def fp16_sibling(onnx_path):
    """out/regseg.onnx -> out/regseg.fp16.onnx (what segexport --fp16 writes)."""
    return _sibling(onnx_path, ".fp16")


def source_for(onnx_path, precision, trt_version, must_exist=True):
    """The ONNX to build from: TensorRT 11 has no FP16 builder flag and builds FP16 only from the
    FP16-typed graph, so an FP16 build for 11+ uses ``<name>.fp16.onnx``."""
    if precision != "fp16" or tuple(trt_version) < (11,):
        return os.fspath(onnx_path)
    typed = fp16_sibling(onnx_path)
    if must_exist and not os.path.isfile(typed):
        raise EngineError(
            "TensorRT {} builds FP16 only from an FP16-typed ONNX and {} does not exist; "
            "export it with segexport --fp16".format(".".join(map(str, trt_version)), typed)
        )
    return typed


def check_graph(onnx_path, card, trt_version, precision):
    """Refuse what the target release's ONNX parser cannot take, before minutes of building.

    The opset against the release's parser, then the per-release node rules of
    ``parser_rules.check_graph`` where that module is present. Returns one-line notes.
    """
    version = tuple(trt_version)
    opset = (card.get("provenance") or {}).get("opset")
    top = parser_max_opset(version)
    if opset and top is not None and int(opset) > top:
        raise EngineError(
            "{} has opset {} but TensorRT {}'s ONNX parser imports at most opset {}; "
            "re-export on the host with segexport --opset {}".format(
                onnx_path, opset, ".".join(map(str, version)), top, top
            )
        )
    try:
        from . import parser_rules
    except ImportError:
        return []
    check = getattr(parser_rules, "check_graph", None)
    if check is None:
        return []
    return list(check(os.fspath(onnx_path), version, precision) or [])


# --- the two things segexport shares ------------------------------------------------------------


def trtexec_line(onnx_path, plan_path, card, precision, trt_version, options):
    """The trtexec command for ``trt_version`` (a tuple) that builds what ``build`` builds."""
    from .trtexec import trtexec_command

    source = source_for(onnx_path, precision, trt_version, must_exist=False)
    return trtexec_command(
        source,
        plan_path,
        precision,
        profile=options.get("profile"),
        input_name=card["input"]["name"],
        timing_cache=options.get("timing_cache"),
        workspace_mib=options.get("workspace_mib"),
        plugins=tuple(options.get("plugins") or ()),
        opt_level=options.get("opt_level"),
        tensorrt_version=trt_version,
        layout=card["input"].get("layout", "NCHW"),  # NHWC: a uint8 input graph
        max_batch=card["input"].get("max_batch"),
    )


def build(onnx_path, plan_path, card, precision="fp32", options=None, log=print):
    """Check the graph for the installed TensorRT, then build ``plan_path`` + sidecar.

    ``options``: keyword arguments of ``tensorrt_builder.build_tensorrt_engine`` (profile,
    workspace_mib, timing_cache, opt_level, plugins, device, version_compatible, ...).
    """
    from .tensorrt_builder import build_tensorrt_engine

    installed = installed_tensorrt_version()
    if installed is None:
        from .tensorrt_builder import tensorrt_status

        raise EngineError("cannot build here: {}".format(tensorrt_status()[1]))
    source = source_for(onnx_path, precision, installed)
    for note in check_graph(source, card, installed, precision):
        log("note: " + note)
    return build_tensorrt_engine(
        source, plan_path, card, precision=precision, log=log, **dict(options or {})
    )


def run_for_segexport(args, backend, reason, stream=None):
    """``segexport --onnx FILE`` where the onnx package is missing (a device): nothing can be
    verified or re-written there, so do what segbuild does with the file as it is: print the
    trtexec line and/or build the TensorRT engine. Returns segexport's report dict."""
    stream = stream or sys.stdout
    if backend != "tensorrt" and not args.print_trtexec:
        raise SegDeployError(
            "segexport --onnx needs the onnx package to verify and re-write the graph "
            "(pip install 'segdeploy[export]'); on a device build from it with segbuild {}".format(
                args.onnx
            )
        )
    onnx_path, card, precision = resolve_precision(args.onnx, read_card(args.onnx), args.fp16)
    name = args.name or os.path.basename(default_plan_path(args.onnx))[: -len(".plan")]
    plan = os.path.join(args.out, name + ".plan")
    options = {
        "profile": requested_profile(card, args.res, args.dynamic),
        "timing_cache": args.timing_cache or os.path.join(args.out, "timing.cache"),
        "opt_level": args.opt_level,
        "plugins": tuple(args.plugin),
    }
    if args.workspace:
        options["workspace_mib"] = args.workspace
    print(
        "segexport: no onnx package here; using {} as it is, like segbuild".format(args.onnx),
        file=stream,
    )
    report = {"card": card, "artifacts": {"onnx": onnx_path, "engine": None}}
    if args.print_trtexec:
        version = target_version(args.trt_version)
        _print_trtexec(onnx_path, plan, card, precision, version, options, stream, "segexport")
    if backend == "tensorrt":
        sidecar = build(onnx_path, plan, card, precision, options)
        report["artifacts"]["engine"] = plan
        report["engine"] = sidecar.get("engine")
    elif backend is None:
        print("no TensorRT engine built here: {}".format(reason), file=stream)
    return report


# --- adopting a plan that trtexec built --------------------------------------------------------


def adopted_engine_info(plan, trt_version, api, device, tensors, profiles_, precision, flags):
    """The sidecar's ``engine`` section for a plan built elsewhere (trtexec) on this machine.

    ``tensors``: trt_compat.IOTensor list read from the deserialized plan; ``profiles_``:
    {input name: (min, opt, max)} for its dynamic inputs; ``device``: this machine's
    fingerprint.device_section. Pure data, so it is tested without a GPU.
    """
    from . import fingerprint

    return {
        "backend": "tensorrt",
        "tensorrt": trt_version,
        "api": api,
        "device": device,
        "precision": precision,
        "profiles": [
            {"input": name, "min": list(lo), "opt": list(opt), "max": list(hi)}
            for name, (lo, opt, hi) in sorted(profiles_.items())
        ],
        "plugins": [],
        "build_flags": dict(flags, adopted=True),
        "outputs": [{"name": t.name, "dtype": t.dtype.name} for t in tensors if not t.is_input],
        "plan_bytes": len(plan),
        "plan_sha256": fingerprint.sha256_bytes(plan),
        "build_seconds": None,
        "built_at": None,
    }


def adopt(
    plan_path,
    onnx_path,
    precision="fp32",
    plugins=(),
    version_compatible=False,
    device=0,
    log=print,
):
    """Write ``<plan>.json`` for a plan that trtexec built on this machine from ``onnx_path``.

    The card comes from the ONNX; the fingerprint from this GPU, this TensorRT and the plan
    itself, which is deserialized here (so a plan from another GPU or TensorRT is refused now,
    not at the first inference). Returns the sidecar.
    """
    plan_path = os.fspath(plan_path)
    if not os.path.isfile(plan_path):
        raise EngineError("--adopt {}: no such plan file".format(plan_path))
    card = read_card(onnx_path)
    from .._deps import require
    from . import trt_compat
    from .tensorrt_builder import current_device, load_plugins, make_logger

    trt = require("tensorrt", "adopting a TensorRT plan")
    device_info, _ = current_device(device)
    plugin_records = load_plugins(plugins)
    logger = make_logger(trt)
    trt.init_libnvinfer_plugins(logger, "")
    with open(plan_path, "rb") as f:
        plan = f.read()
    runtime = trt.Runtime(logger)
    if version_compatible:
        trt_compat.allow_engine_host_code(runtime)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineError(
            "TensorRT {} on {} cannot load {}: it was built by another TensorRT or for another "
            "GPU, or is damaged; build it here with segbuild {}".format(
                trt.__version__, device_info["name"], plan_path, onnx_path
            )
        )
    tensors = trt_compat.io_tensors(trt, engine)
    dynamic = {}
    for tensor in tensors:
        if tensor.is_input and any(d < 0 for d in tensor.shape):
            dynamic[tensor.name] = trt_compat.profile_shapes(engine, tensor)
    flags = {"trtexec": True, "version_compatible": bool(version_compatible)}
    info = adopted_engine_info(
        plan,
        trt.__version__,
        trt_compat.api_generation(trt),
        device_info,
        tensors,
        dynamic,
        precision,
        flags,
    )
    info["plugins"] = plugin_records
    sidecar = card_mod.with_engine(card, info)
    if dynamic:
        lo, opt, hi = next(iter(dynamic.values()))
        sidecar["input"]["dynamic"] = {
            "min": list(lo[2:]),
            "opt": list(opt[2:]),
            "max": list(hi[2:]),
        }
        sidecar["input"]["height"], sidecar["input"]["width"] = list(opt[2:])
    card_mod.write_sidecar(plan_path, sidecar)
    log(
        "wrote {} for {} (TensorRT {} on {})".format(
            card_mod.sidecar_path(plan_path), plan_path, trt.__version__, device_info["name"]
        )
    )
    return sidecar


# --- the command line -------------------------------------------------------------------------


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
        help="write the sidecar for a plan trtexec built on this machine (needs --onnx)",
    )
    p.add_argument(
        "--onnx",
        dest="onnx_for_adopt",
        metavar="ONNX",
        help="the ONNX --adopt's plan was built from",
    )


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
    g.add_argument(
        "--plugins",
        action="append",
        default=[],
        metavar="LIB",
        help="plugin library to load (repeatable)",
    )
    g.add_argument(
        "--version-compatible",
        action="store_true",
        help="plan loadable by later TensorRT of the same major (8.6+)",
    )
    g.add_argument(
        "--hardware-compatible", action="store_true", help="plan for every Ampere+ GPU (8.6+)"
    )
    g.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    g.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    g.add_argument(
        "--dblock-plugin",
        action="store_true",
        help="fuse the split-dilation D blocks into DBlockConv plugin nodes first (writes "
        "NAME.dblock.onnx; needs the onnx package) and build that graph; pass the plugin "
        "library with --plugins",
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
    p = argparse.ArgumentParser(
        prog="segbuild",
        description="Build a TensorRT engine for this machine from an ONNX file exported by "
        "segexport; writes the plan and its model card (sidecar) atomically.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  segbuild out/regseg.onnx --fp16 --timing-cache trt.cache\n"
        "  segbuild out/regseg.onnx --fp16 --print-trtexec --trt-version 8.2\n"
        "  segbuild out/regseg.int8.onnx          # INT8 (GTX 1080 Ti, T4; not the TX2)\n"
        "  segbuild --adopt out/regseg.plan --onnx out/regseg.onnx",
    )
    p.add_argument("--version", action="version", version="%(prog)s " + __version__)
    _add_source_arguments(p)
    _add_precision_arguments(p)
    _add_build_arguments(p)
    _add_trtexec_arguments(p)
    return p


def options_from_args(args, card):
    """The keyword arguments of ``build`` / ``trtexec_line`` for parsed ``args``."""
    options = {
        "plugins": tuple(args.plugins),
        "opt_level": args.opt_level,
        "timing_cache": args.timing_cache,
    }
    if args.workspace is not None:
        if args.workspace < 1:
            raise SegDeployError("--workspace must be a positive number of MiB")
        options["workspace_mib"] = args.workspace
    options["profile"] = requested_profile(card, args.res, args.dynamic)
    return options


def requested_profile(card, res=None, dynamic=None):
    """The shape profile to build: ``--res`` / ``--dynamic`` checked against what the ONNX takes,
    else the card's own size or range."""
    from .profiles import derive_profile, profile_from_card

    if not (res or dynamic):
        return profile_from_card(card)
    profile = derive_profile(
        res or "{}x{}".format(card["input"]["height"], card["input"]["width"]),
        dynamic,
        int(card["input"].get("stride") or 1),
    )
    if not card["input"].get("dynamic") and profile != profile_from_card(card):
        raise EngineError(
            "the ONNX has the fixed input size {}x{}; re-export it with segexport --dynamic "
            "(or build it at {}x{})".format(
                card["input"]["height"],
                card["input"]["width"],
                card["input"]["height"],
                card["input"]["width"],
            )
        )
    return profile


def _print_trtexec(onnx_path, plan, card, precision, version, options, out, prog="segbuild"):
    """The trtexec line alone on stdout (so ``$(segbuild ... --print-trtexec)`` works); the
    parser check's notes on stderr."""
    source = source_for(onnx_path, precision, version, must_exist=False)
    checked = source if os.path.isfile(source) else onnx_path
    if checked != source:
        print(
            "{}: note: {} is not here; copy it to the device with the line below (segexport "
            "--fp16 writes it)".format(prog, source),
            file=sys.stderr,
        )
    for note in check_graph(checked, card, version, precision):
        print("{}: note: {}".format(prog, note), file=sys.stderr)
    print(trtexec_line(onnx_path, plan, card, precision, version, options), file=out)


def _run(args, out=None):
    out = out or sys.stdout
    if args.adopt:
        if not args.onnx_for_adopt:
            raise SegDeployError("--adopt PLAN needs --onnx ONNX, the file the plan was built from")
        adopt(
            args.adopt,
            args.onnx_for_adopt,
            precision="fp16" if args.fp16 else "fp32",
            plugins=args.plugins,
            version_compatible=args.version_compatible,
            device=args.device,
        )
        return
    onnx_path = args.onnx or args.onnx_for_adopt
    if not onnx_path:
        raise SegDeployError("give the ONNX file to build from: segbuild out/regseg.onnx")
    if args.dblock_plugin:
        onnx_path = _fuse_dblocks(onnx_path, args, out or sys.stdout)
    onnx_path, card, precision = resolve_precision(
        onnx_path, read_card(onnx_path), args.fp16, args.int8
    )
    plan = args.out or default_plan_path(onnx_path)
    options = options_from_args(args, card)
    if args.print_trtexec:
        version = target_version(args.trt_version)
        _print_trtexec(onnx_path, plan, card, precision, version, options, out)
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
        verbose=args.verbose,
    )
    if options.get("workspace_mib") is None:
        options.pop("workspace_mib", None)
    build(onnx_path, plan, card, precision, options)


def _fuse_dblocks(onnx_path, args, out):
    """segbuild --dblock-plugin: the D-block graph (and its FP16-typed twin, when segexport
    wrote one) beside the standard graph; returns the graph to build from."""
    if not args.plugins and not args.print_trtexec:
        raise SegDeployError(
            "--dblock-plugin builds DBlockConv plugin layers: pass the plugin library with "
            "--plugins build/dblock/libdblock_plugin.so (build it on this device with "
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
        _run(args)

    return run_main("segbuild", work, "nothing half-written was left behind")


if __name__ == "__main__":
    sys.exit(main())
