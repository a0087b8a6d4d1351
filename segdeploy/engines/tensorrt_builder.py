"""ONNX -> TensorRT plan, on the device that will run it, plus the sidecar with its fingerprint.

    from segdeploy.engines.tensorrt_builder import build_tensorrt_engine
    sidecar = build_tensorrt_engine("regseg.onnx", "regseg.plan", card, precision="fp16",
                                    profile=derive_profile(dynamic="512x1024:1024x2048", stride=32),
                                    timing_cache="trt.cache")

FP16 is a builder flag on TensorRT 8.2-10.x; TensorRT 11 builds only strongly typed networks, so
there the ONNX itself must be FP16-typed (segexport writes that variant). INT8 is explicit
quantization from the Q/DQ graph of ``segexport --int8`` on every release: with the INT8 builder
flag on 8.x-10.x, from the graph's own types on 11.x (strongly typed, no INT8 flag). API
differences live in ``trt_compat``; this module only sequences the build. TensorRT and CUDA are
imported on first use. Python 3.6 compatible.
"""

import ctypes
import importlib.util
import os
import time

from .. import _io
from .. import card as card_mod
from .._deps import require
from ..errors import EngineError, SegDeployError
from . import devices, fingerprint, profiles, trt_compat

DEFAULT_WORKSPACE_MIB = 1024


def tensorrt_status():
    """(ok, reason): can TensorRT engines be built and run here? Never raises."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, (
            "TensorRT is not installed; pip install 'segdeploy[tensorrt]' (CUDA 13 driver, R580+; "
            "'segdeploy[tensorrt-cu12]' for a CUDA 12 driver), or on Jetson use JetPack's "
            "python3-libnvinfer"
        )
    try:
        trt = require("tensorrt", "TensorRT engines")
        from . import cuda_memory

        props = cuda_memory.device_properties(0)
    except SegDeployError as exc:
        return False, str(exc)
    except Exception as exc:  # e.g. libnvinfer missing under the tensorrt module: never raise
        text = str(exc).strip().splitlines()
        return False, "TensorRT or CUDA is not usable here ({})".format(
            text[0][:200] if text else type(exc).__name__
        )
    return True, "TensorRT {} on {}".format(getattr(trt, "__version__", "?"), props["name"])


def load_plugins(paths):
    """dlopen each plugin library (RTLD_GLOBAL so TensorRT's registry sees its creators) and
    return their fingerprint records. Works on every TensorRT release, unlike the registry's
    load_library (8.5+)."""
    records = []
    for path in paths or ():
        path = fingerprint.plugin_file(path)
        try:
            ctypes.CDLL(os.path.abspath(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise EngineError("cannot load plugin library {}: {}".format(path, exc)) from None
        records.extend(fingerprint.plugin_records([path]))
    return records


def make_logger(trt, verbose=False):
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


def current_device(index=0):
    """(device fingerprint section, devices.Detected) for CUDA device ``index``; the device is
    made current so that TensorRT builds and runs on it."""
    from . import cuda_memory

    cuda_memory.use_device(index)
    found = devices.detect(index)
    section = fingerprint.device_section(found.gpu_name, found.compute_capability, found.key)
    if found.l4t:
        section["l4t"] = found.l4t
    return section, found


def _profile_for(network_inputs, profile, card, stride):
    """[(input name, (min, opt, max) NCHW)] for the network's dynamic inputs; EngineError when the
    ONNX's fixed size and the requested profile disagree."""
    wanted = profile if profile is not None else profiles.profile_from_card(card)
    profiles.validate_profile(wanted, stride)
    # uint8 graphs (segexport --input uint8) take NHWC frames; serving graphs a batch range.
    layout = str(card["input"].get("layout", "NCHW")).upper()
    max_batch = card["input"].get("max_batch")
    hw_axes = (1, 2) if layout == "NHWC" else (2, 3)
    shapes = []
    for name, shape in network_inputs:
        if len(shape) != 4:
            raise EngineError(
                "input {!r} has shape {}; segdeploy engines take NCHW images".format(name, shape)
            )
        dynamic = any(d < 0 for d in shape)
        fixed_hw = tuple(shape[a] for a in hw_axes)
        if not dynamic:
            if not wanted.is_static or fixed_hw != tuple(wanted.opt):
                raise EngineError(
                    "the ONNX input {!r} has the fixed size {}x{} but {}x{}..{}x{} was asked "
                    "for; re-export with segexport --dynamic (or --res {}x{})".format(
                        name,
                        fixed_hw[0],
                        fixed_hw[1],
                        wanted.min[0],
                        wanted.min[1],
                        wanted.max[0],
                        wanted.max[1],
                        fixed_hw[0],
                        fixed_hw[1],
                    )
                )
            continue
        batch = shape[0] if shape[0] > 0 else (max_batch or 1)
        channel_axis = 3 if layout == "NHWC" else 1
        channels = shape[channel_axis] if shape[channel_axis] > 0 else 3
        shapes.append(
            (name, profiles.input_shapes(wanted, layout, batch if shape[0] < 0 else None, channels))
        )
    return wanted, shapes


def build_tensorrt_engine(
    onnx_path,
    engine_path,
    card,
    precision="fp32",
    profile=None,
    workspace_mib=DEFAULT_WORKSPACE_MIB,
    timing_cache=None,
    opt_level=None,
    plugins=(),
    log=print,
    device=0,
    version_compatible=False,
    hardware_compatible=False,
    verbose=False,
):
    """Build ``engine_path`` from ``onnx_path``; write it and ``<engine_path>.json`` atomically.

    ``card``: the model card of the ONNX (its input stride and default size are used);
    ``profile``: a profiles.ShapeProfile, or None for the card's own size/range;
    ``timing_cache``: a file read before and rewritten after the build, reused across builds;
    ``opt_level``: builder optimization level 0-5 (TensorRT 8.6+; ignored with a note before).
    Returns the sidecar card (``card`` with its ``engine`` section set).
    """
    card_mod.validate(card, "the model card for {}".format(onnx_path))
    if precision not in ("fp32", "fp16", "int8"):
        raise SegDeployError("precision must be fp32, fp16 or int8, got {!r}".format(precision))
    check_int8_source(precision, card, onnx_path)
    if not os.path.isfile(os.fspath(onnx_path)):
        raise EngineError("ONNX file {} does not exist; run segexport first".format(onnx_path))
    _io.check_writable_dir(os.path.dirname(os.path.abspath(os.fspath(engine_path))))
    trt = require("tensorrt", "building TensorRT engines")
    device_info, found = current_device(device)
    for warning in devices.check_precision(found.record, precision):
        log("warning: " + warning)
    if hardware_compatible and not (
        found.compute_capability and tuple(found.compute_capability) >= (8, 0)
    ):
        raise EngineError(
            "hardware-compatible engines need an Ampere or newer GPU (compute "
            "capability 8.0+); this is {}".format(found.gpu_name)
        )

    plugin_records = load_plugins(plugins)
    logger = make_logger(trt, verbose)
    trt.init_libnvinfer_plugins(logger, "")
    generation = trt_compat.api_generation(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(
        trt_compat.network_flags(trt, builder, strongly_typed=not trt_compat.has_fp16_flag(trt))
    )
    parser = trt.OnnxParser(network, logger)
    _parse(trt, parser, onnx_path, log)

    config = builder.create_builder_config()
    flags = {"api": generation, "workspace_mib": int(workspace_mib)}
    half_typed = trt_compat.network_has_half(trt, network)
    if precision == "fp32" and half_typed:
        raise EngineError(
            "{} is FP16-typed; build it as FP16 (segexport --fp16), or pass the FP32 ONNX".format(
                onnx_path
            )
        )
    if precision == "fp32":
        # TensorRT enables TF32 by default on Ampere+; FP32 here means FP32, so the parity
        # ladder (FP32 engine within ~1e-3 of ONNX Runtime) holds on every GPU.
        flags["tf32"] = not trt_compat.clear_flag_if_present(trt, config, "TF32")
    if precision == "fp16":
        if trt_compat.has_fp16_flag(trt):
            config.set_flag(trt.BuilderFlag.FP16)
            flags["fp16_flag"] = True
            fast = trt_compat.platform_fast_fp16(builder)
            if fast is False and found.record is None:
                log(
                    "warning: TensorRT reports no fast FP16 on {}; an FP32 build may be "
                    "faster".format(found.gpu_name)
                )
        elif not half_typed:
            raise EngineError(
                "TensorRT {} has no FP16 builder flag and builds FP16 only from an FP16-typed "
                "ONNX; pass the FP16 ONNX written by segexport --fp16".format(trt.__version__)
            )
        flags["strongly_typed"] = not trt_compat.has_fp16_flag(trt)
    if precision == "int8":
        flags.update(configure_int8(trt, config))
    trt_compat.set_workspace(trt, config, int(workspace_mib) << 20)
    if opt_level is not None:
        if trt_compat.set_optimization_level(config, opt_level):
            flags["opt_level"] = int(opt_level)
        else:
            log(
                "note: TensorRT {} has no builder optimization levels (8.6+); --opt-level "
                "ignored".format(trt.__version__)
            )
    if version_compatible:
        if not trt_compat.set_flag_if_present(trt, config, "VERSION_COMPATIBLE"):
            raise EngineError(
                "TensorRT {} cannot build version-compatible engines (8.6+ can); "
                "build without it".format(trt.__version__)
            )
        flags["version_compatible"] = True
    if hardware_compatible:
        if not trt_compat.set_hardware_compatibility(trt, config):
            raise EngineError(
                "TensorRT {} cannot build hardware-compatible engines (8.6+ "
                "can); build without it".format(trt.__version__)
            )
        flags["hardware_compatible"] = True

    stride = int(card["input"].get("stride") or 1)
    wanted, dynamic_inputs = _profile_for(trt_compat.network_inputs(network), profile, card, stride)
    profile_records = []
    if dynamic_inputs:
        optimization_profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in dynamic_inputs:
            optimization_profile.set_shape(name, lo, opt, hi)
            profile_records.append(
                {"input": name, "min": list(lo), "opt": list(opt), "max": list(hi)}
            )
        config.add_optimization_profile(optimization_profile)

    cache = None
    if timing_cache is not None:
        blob = b""
        if os.path.isfile(os.fspath(timing_cache)):
            with open(os.fspath(timing_cache), "rb") as f:
                blob = f.read()
        cache, warning = trt_compat.attach_timing_cache(config, blob)
        if warning:
            log("warning: timing cache {}: {}".format(timing_cache, warning))
        state = "reused" if blob and not warning else "rejected" if blob else "new"
        flags["timing_cache"] = os.path.basename(os.fspath(timing_cache))
        flags["timing_cache_state"] = state if cache is not None else "none"
        log("timing cache {} ({})".format(timing_cache, flags["timing_cache_state"]))

    log(
        "building {} TensorRT {} engine for {} from {} (minutes on a Jetson)".format(
            precision.upper(), trt.__version__, found.gpu_name, onnx_path
        )
    )
    started = time.time()
    plan = trt_compat.build_plan(builder, network, config)
    seconds = time.time() - started

    engine_info = {
        "backend": "tensorrt",
        "tensorrt": trt.__version__,
        "api": generation,
        "device": device_info,
        "precision": precision,
        "profiles": profile_records,
        "plugins": plugin_records,
        "build_flags": flags,
        "outputs": [
            {
                "name": network.get_output(i).name,
                "dtype": trt_compat.numpy_dtype(network.get_output(i).dtype).name,
            }
            for i in range(network.num_outputs)
        ],
        "plan_bytes": len(plan),
        "plan_sha256": fingerprint.sha256_bytes(plan),
        "build_seconds": round(seconds, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    sidecar = card_mod.with_engine(card, engine_info)
    if not wanted.is_static:
        sidecar["input"]["dynamic"] = wanted.as_card()
        sidecar["input"]["height"], sidecar["input"]["width"] = list(wanted.opt)
    # Plan and sidecar appear together or not at all: the sidecar is renamed into place inside
    # the plan's atomic write, so a failure removes both temporaries.
    with _io.atomic_path(engine_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(plan)
        card_mod.write_sidecar(engine_path, sidecar)
    if cache is not None:
        # After the plan: a cache TensorRT cannot hand back must not cost the finished build.
        data = trt_compat.serialized_timing_cache(config)
        if data is None:
            log("warning: TensorRT returned no timing cache; {} not updated".format(timing_cache))
        else:
            _io.write_bytes(timing_cache, data)
    log(
        "wrote {} ({:.1f} MB, {:.0f} s) and its card {}".format(
            engine_path, len(plan) / 1e6, seconds, card_mod.sidecar_path(engine_path)
        )
    )
    return sidecar


def check_int8_source(precision, card, onnx_path):
    """INT8 engines come only from the Q/DQ graph (its card says precision int8), and the other
    precisions never from it."""
    is_qdq = card.get("precision") == "int8"
    if precision == "int8" and not is_qdq:
        raise EngineError(
            "{} is not an INT8 Q/DQ graph; INT8 engines are built from the <name>.int8.onnx "
            "that segexport --int8 --calib DIR writes".format(onnx_path)
        )
    if precision != "int8" and is_qdq:
        raise EngineError(
            "{} is the INT8 Q/DQ graph; build it with precision int8, or pass the FP32 ONNX".format(
                onnx_path
            )
        )


def configure_int8(trt, config):
    """Builder settings for the explicit-quantization (Q/DQ) network; returns the flag record.

    TensorRT 8.x-10.x need BuilderFlag.INT8 to run the Q/DQ network's quantized layers in INT8;
    11.x has no such flag: its networks are strongly typed and the Q/DQ types decide. Layers left
    FP32 by the accuracy budget stay FP32 (no FP16 flag is set alongside).
    """
    if trt_compat.set_flag_if_present(trt, config, "INT8"):
        return {"int8_flag": True, "explicit_quantization": True}
    return {"int8_flag": False, "strongly_typed": True, "explicit_quantization": True}


def _parse(trt, parser, onnx_path, log):
    path = os.fspath(onnx_path)
    # parse_from_file resolves external-data weights next to the ONNX file.
    if hasattr(parser, "parse_from_file"):
        ok = parser.parse_from_file(path)
    else:
        with open(path, "rb") as f:
            ok = parser.parse(f.read())
    if ok:
        return
    lines = trt_compat.parser_errors(parser)
    for line in lines:
        log("TensorRT parser: " + line)
    first = lines[0] if lines else "no detail from the parser"
    more = " (and {} more, listed above)".format(len(lines) - 1) if len(lines) > 1 else ""
    raise EngineError(
        "TensorRT {} cannot parse {}: {}{}; re-export with a supported opset or "
        "pass the plugin library for that op".format(trt.__version__, onnx_path, first, more)
    )
