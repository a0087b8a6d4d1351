"""What segbuild does, as functions: which TensorRT release is targeted (and what its parser
takes), which graph a precision builds from (``NAME.fp16.onnx``, ``NAME.int8.onnx``), the
per-release graph check, the equivalent ``trtexec`` line, the build itself, and adopting a plan
that trtexec built. ``segexport --backend tensorrt`` calls ``trtexec_line`` and ``build`` too,
so both commands build the same engine. ``build_cli`` is segbuild's command line over these.

Imports neither torch nor onnx; Python 3.6 compatible.
"""

import importlib.util
import os
import sys

from .. import card as card_mod
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
        print_trtexec(onnx_path, plan, card, precision, version, options, stream, "segexport")
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


def print_trtexec(onnx_path, plan, card, precision, version, options, out, prog="segbuild"):
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
