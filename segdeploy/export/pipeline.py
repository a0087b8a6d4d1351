"""The segexport pipeline: checkpoint -> folded model -> verified ONNX -> engine for this machine.

Each step prints as it starts and when it ends, with its duration. Every artifact is written
atomically; a graph that fails verification is kept only as ``<name>.onnx.failed``.
"""

import importlib.util
import os
import sys
import time

from .. import card as card_mod
from .._io import check_writable_dir, write_json
from ..errors import SegDeployError, VerificationError


class Steps:
    """Numbered, timed progress lines: ``[3/9] export ONNX ... done in 1.2 s``."""

    def __init__(self, total, stream=None):
        self.total = total
        self.index = 0
        self.stream = stream or sys.stdout
        self.durations = {}

    def run(self, title, fn, *args, **kwargs):
        self.index += 1
        print("[{}/{}] {} ...".format(self.index, self.total, title), file=self.stream, flush=True)
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds = time.perf_counter() - start
        self.durations[title] = round(seconds, 3)
        print("      done in {:.1f} s".format(seconds), file=self.stream, flush=True)
        return result

    def say(self, text):
        print("      " + text, file=self.stream, flush=True)


def user_model_spec(name, num_classes, stride, builder=None):
    """The ModelSpec of a bring-your-own model: ImageNet normalization of 0..1 RGB, no paper."""
    from ..models.registry import ModelSpec

    return ModelSpec(
        name=name,
        builder=builder,
        family="user",
        stride=int(stride),
        dataset=None,
        num_classes=num_classes,
    )


def load_user_model(reference, stride):
    """``path/to/file.py:factory`` -> (nn.Module, spec)."""
    path, _, factory = reference.rpartition(":")
    if not os.path.isfile(path):
        raise SegDeployError("--model {}: file {} does not exist".format(reference, path))
    module_spec = importlib.util.spec_from_file_location("segexport_user_model", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise SegDeployError(
            "--model {}: importing {} failed: {}".format(reference, path, exc)
        ) from None
    fn = getattr(module, factory, None)
    if fn is None or not callable(fn):
        raise SegDeployError("--model {}: {} has no callable {!r}".format(reference, path, factory))
    model = fn().eval()
    num_classes = getattr(model, "num_classes", None)
    name = os.path.splitext(os.path.basename(path))[0]
    stride = stride or getattr(model, "output_stride", 32)
    return model, user_model_spec(name, num_classes, stride, fn)


def build_model(args):
    """The PyTorch model, its spec and the checkpoint's SHA-256 (None for random weights)."""
    from .. import models

    if args.model and ".py:" in args.model:
        model, spec = load_user_model(args.model, args.stride)
        if args.checkpoint:
            models.load_checkpoint(model, args.checkpoint, args.unsafe_pickle)
    else:
        spec = models.get_spec(args.model)
        kwargs = {"num_classes": args.num_classes} if args.num_classes else {}
        model = models.build(args.model, **kwargs)
        if args.checkpoint:
            models.load_checkpoint(model, args.checkpoint, args.unsafe_pickle)
    sha = getattr(model, "segdeploy_checkpoint_sha256", None)
    return model.eval(), spec, sha


def _num_classes_of(model, height, width):
    import torch

    with torch.no_grad():
        return int(model(torch.zeros(1, 3, height, width)).shape[1])


def tensorrt_version(args):
    """The TensorRT version the engine or trtexec line is for: installed, else --trt-version."""
    try:
        import tensorrt

        return tuple(int(v) for v in tensorrt.__version__.split(".")[:2])
    except ImportError:
        return args.trt_version


def check_target_opset(opset, backend, trt_version):
    """The opset the chosen target parses: TensorRT's parser by version, else the exporter's."""
    from .onnx_export import check_opset

    target_max, target = None, None
    if backend == "tensorrt" and trt_version:
        # onnx-tensorrt's supported opsets: 8.2 -> 13, 8.4 .. 8.6 -> 17, 10.x -> 20 and newer
        target_max = 13 if trt_version < (8, 4) else 17 if trt_version < (10, 0) else None
        target = "TensorRT {}".format(".".join(str(v) for v in trt_version))
    check_opset(opset, target_max, target)


def choose_backend(requested, print_trtexec):
    """'onnxruntime' or 'tensorrt' and the reason, checked before any work is done."""
    from ..engines import tensorrt_status

    ok, reason = tensorrt_status()
    if requested == "tensorrt" and not ok and not print_trtexec:
        raise SegDeployError(
            "--backend tensorrt cannot build here: {}; pass --print-trtexec to get the trtexec "
            "command for the device, or --backend onnxruntime".format(reason)
        )
    if requested == "tensorrt":
        return ("tensorrt" if ok else None), reason
    if requested == "auto" and ok:
        return "tensorrt", "TensorRT and a CUDA device are present"
    why = "asked for ONNX Runtime" if requested == "onnxruntime" else reason
    return "onnxruntime", why


def run(args, stream=None):
    """Run the whole pipeline for parsed CLI ``args``; returns the report dict."""
    from ..engines.profiles import derive_profile

    out_dir = check_writable_dir(args.out)
    backend, backend_reason = choose_backend(args.backend, args.print_trtexec)
    trt_version = tensorrt_version(args)
    if backend == "tensorrt" or args.print_trtexec:
        check_target_opset(args.opset, "tensorrt", trt_version)
    else:
        check_target_opset(args.opset, backend, None)
    byo_onnx = args.onnx is not None
    int8 = getattr(args, "int8", False)
    from ..engines.cpu_choice import openvino_installed

    # on a CPU with OpenVINO, --backend auto times the installed engines first (one more step)
    timing = args.backend == "auto" and backend == "onnxruntime" and openvino_installed()
    steps = Steps(
        (4 if byo_onnx else 6) + (1 if args.fp16 else 0) + (1 if int8 else 0) + int(timing), stream
    )
    report = {"command": " ".join(sys.argv), "steps": steps.durations}

    if byo_onnx:
        from .byo import load_onnx_and_card

        proto, card, reference, spec = steps.run(
            "read ONNX {}".format(args.onnx), load_onnx_and_card, args
        )
        name = args.name or os.path.splitext(os.path.basename(args.onnx))[0]
        profile = derive_profile(
            args.res or "{}x{}".format(card["input"]["height"], card["input"]["width"]),
            args.dynamic,
            card["input"]["stride"],
        )
    else:
        model, spec, sha = steps.run(
            "build {} and load weights".format(args.model), build_model, args
        )
        if sha is None:
            steps.say(
                "WARNING: no --checkpoint: the weights are RANDOM. Speed figures stay valid; "
                "the labels are meaningless."
            )
        else:
            steps.say("checkpoint {} (sha256 {})".format(args.checkpoint, sha[:16]))
        profile = derive_profile(args.res, args.dynamic, spec.stride)
        if not profile.is_static and not getattr(spec, "dynamic_shapes", True):
            raise SegDeployError(
                "{} cannot be exported with --dynamic: part of its graph (e.g. its pooling grid) "
                "depends on the input size, which an exported graph would freeze at {}x{}; "
                "export one static --res per resolution you deploy".format(spec.name, *profile.opt)
            )
        height, width = profile.opt
        # A zoo model was built with its class count; only a user's model needs a forward pass.
        num_classes = args.num_classes or spec.num_classes or _num_classes_of(model, height, width)
        from . import fold_batchnorm
        from .fold import FoldError, count_batchnorms

        try:
            folded = steps.run("fold BatchNorm", fold_batchnorm, model)
            steps.say(
                "{} BatchNorms folded, {} left".format(
                    count_batchnorms(model) - count_batchnorms(folded), count_batchnorms(folded)
                )
            )
        except FoldError as exc:
            # Only bring-your-own models get here (every zoo model traces; tested).
            folded = model
            steps.say(
                "WARNING: BatchNorm not folded ({}); exporting the model as it is, "
                "ONNX Runtime and TensorRT fold it when they build".format(exc)
            )
        from .modelcard import make_card
        from .onnx_export import export_onnx, op_histogram

        card = make_card(spec, num_classes, height, width, args.output, profile, args.opset, sha)
        name = args.name or spec.name
        exported = steps.run(
            "export ONNX (opset {}, {}, output {})".format(
                args.opset,
                "static {}x{}".format(height, width)
                if profile.is_static
                else "dynamic {}x{}..{}x{}".format(*(profile.min + profile.max)),
                args.output,
            ),
            export_onnx,
            folded,
            None,
            height=height,
            width=width,
            output=args.output,
            opset=args.opset,
            dynamic=not profile.is_static,
            card=card,
        )
        proto = exported["model"]
        steps.say(
            "torch.onnx.export {:.1f} s, onnxslim + onnx.checker {:.1f} s; {} nodes: {}".format(
                exported["export_s"],
                exported["clean_s"],
                exported["nodes"],
                ", ".join("{} {}".format(k, v) for k, v in op_histogram(proto).items()),
            )
        )
        reference = model

    # --- verification --------------------------------------------------------------------
    from . import verify

    inputs = verify.random_inputs(card, args.verify_inputs)
    if args.images:
        inputs += verify.image_inputs(args.images, card)[0]
    onnx_path = os.path.join(out_dir, name + ".onnx")
    if reference is not None:

        def verify_fp32():
            # PyTorch runs once per input: the FP16 graph below is compared with the same logits.
            logits = verify.reference_logits(reference, inputs)
            return logits, verify.verify_onnx(proto, logits, inputs, card["model"]["num_classes"])

        reference, fp32 = steps.run(
            "verify FP32 ONNX against PyTorch on {} inputs (ONNX Runtime CPU)".format(len(inputs)),
            verify_fp32,
        )
        steps.say(_describe(fp32))
        card["parity"]["fp32"] = _summary(fp32)
        report["parity_fp32"] = fp32
        failure = verify.verdict(fp32)
        if failure:
            from .onnx_export import save_model

            failed = onnx_path + ".failed"
            save_model(proto, failed)
            write_json(os.path.join(out_dir, "report.json"), report)
            raise VerificationError(
                "the exported graph disagrees with PyTorch ({}); kept it as {} for "
                "inspection".format(failure, failed)
            )
    else:
        steps.say("no PyTorch reference for this graph: parity not verified (pass --model too)")

    # --- FP16 --------------------------------------------------------------------------------
    fp16_path = None
    if args.fp16:
        from .fp16 import convert_to_fp16

        def fp16_step():
            proto16 = convert_to_fp16(proto)
            figures = None
            if reference is not None:
                figures = verify.verify_onnx(
                    proto16, reference, inputs, card["model"]["num_classes"]
                )
            return proto16, figures

        proto16, fp16 = steps.run(
            "FP16-typed ONNX (FP32 I/O, final upsample/argmax/reductions "
            "FP32) and its verification",
            fp16_step,
        )
        if fp16 is not None:
            steps.say(_describe(fp16))
            card["parity"]["fp16"] = _summary(fp16)
            report["parity_fp16"] = fp16
        fp16_path = os.path.join(out_dir, name + ".fp16.onnx")

    # --- write ----------------------------------------------------------------------------
    from .onnx_export import save_model, set_card

    def write_all():
        set_card(proto, card)
        save_model(proto, onnx_path)
        card_mod.write_sidecar(onnx_path, card)
        written = [onnx_path, card_mod.sidecar_path(onnx_path)]
        if fp16_path:
            card16 = dict(card, precision="fp16")
            set_card(proto16, card16)
            save_model(proto16, fp16_path)
            card_mod.write_sidecar(fp16_path, card16)
            written += [fp16_path, card_mod.sidecar_path(fp16_path)]
        return written

    written = steps.run("write ONNX with model card (metadata + sidecar JSON)", write_all)
    for path in written:
        steps.say(path)
    report["card"] = card
    report["artifacts"] = {"onnx": onnx_path, "onnx_fp16": fp16_path}

    # --- INT8 (Q/DQ graph with an accuracy budget; segdeploy/export/int8_step.py) ---------------
    int8_path = None
    if int8:
        from .int8_step import int8_step

        int8_path = int8_step(args, steps, onnx_path, out_dir, name, card, report, stream)
        report["artifacts"]["onnx_int8"] = int8_path

    # --- engine ---------------------------------------------------------------------------
    engine_path, engine_card = _build_engine(
        args,
        steps,
        backend,
        backend_reason,
        out_dir,
        name,
        (onnx_path, fp16_path, int8_path),
        card,
        profile,
        trt_version,
    )
    report["artifacts"]["engine"] = engine_path
    report["engine"] = engine_card.get("engine") if engine_card else None
    write_json(os.path.join(out_dir, "report.json"), report)
    steps.say("report: {}".format(os.path.join(out_dir, "report.json")))
    _print_next(engine_path or onnx_path, card, stream or sys.stdout)
    return report


def _build_engine(args, steps, backend, reason, out_dir, name, paths, card, profile, trt_version):
    from ..engines import build_tensorrt_engine, trtexec_command

    onnx_path, fp16_path = paths[:2]
    int8_path = paths[2] if len(paths) > 2 else None
    precision = "fp16" if args.fp16 else "fp32"
    # TensorRT 11 builds FP16 only from the FP16-typed graph; older versions from the FP32 one
    # with the FP16 flag (their FP16 tactics choose per layer).
    trt_source = fp16_path if (args.fp16 and trt_version and trt_version >= (11,)) else onnx_path
    if int8_path and (args.print_trtexec or backend == "tensorrt"):
        from .int8_step import tensorrt_int8

        precision, trt_source = tensorrt_int8(precision, trt_source, int8_path, backend, steps)
    plan = os.path.join(out_dir, name + ".plan")  # precision is in the sidecar
    options = {
        "profile": None if profile.is_static else profile,
        "timing_cache": args.timing_cache or os.path.join(out_dir, "timing.cache"),
        "opt_level": args.opt_level,
        "plugins": tuple(args.plugin),
    }
    if args.workspace:
        options["workspace_mib"] = args.workspace
    if args.print_trtexec or backend == "tensorrt":
        line = trtexec_command(
            trt_source,
            plan,
            precision,
            input_name=card["input"]["name"],
            tensorrt_version=trt_version,
            **options,
        )
        steps.say("equivalent trtexec command (for building on the device):")
        print(line, flush=True)
    if backend == "tensorrt":
        options["profile"] = profile
        engine_card = steps.run(
            "build TensorRT {} engine ({})".format(precision.upper(), reason),
            build_tensorrt_engine,
            trt_source,
            plan,
            card,
            precision=precision,
            **options,
        )
        return plan, engine_card
    if backend is None:
        steps.say("no TensorRT engine built here: {}".format(reason))
        return None, None
    from ..engines.cpu_choice import openvino_installed

    # on a CPU with OpenVINO, --backend auto measures the installed engines and builds the fastest
    if args.backend == "auto" and openvino_installed():
        from ..engines.cpu_choice import build_fastest_cpu_engine

        return build_fastest_cpu_engine(args, steps, out_dir, name, paths, card, reason)
    from ..engines.onnxruntime_builder import build_onnxruntime_engine

    engine_path = os.path.join(out_dir, name + ".ort")
    engine_card = steps.run(
        "build ONNX Runtime CPU engine",
        build_onnxruntime_engine,
        onnx_path,
        engine_path,
        card,
        threads=args.threads,
    )
    why = "built an ONNX Runtime CPU engine because {}".format(reason.split(";")[0])
    if args.fp16:
        why += "; FP16 engines need a GPU, so this engine is FP32 (the FP16 ONNX is written)"
    steps.say(why)
    steps.say("{} ({} graph optimizations, saved in ORT format)".format(engine_path, "all"))
    return engine_path, engine_card


def _summary(figures):
    keys = (
        "inputs",
        "label_agreement",
        "max_abs_logit_error",
        "max_rel_logit_error",
        "min_class_iou",
        "disagreements_near_boundary",
    )
    return {k: figures.get(k) for k in keys}


def _describe(f):
    near = f.get("disagreements_near_boundary")
    text = "label agreement {:.4%} over {} px".format(f["label_agreement"], f["pixels"])
    if "max_abs_logit_error" in f:
        text += "; logit error max abs {:.2e}, rel {:.2e}".format(
            f["max_abs_logit_error"], f["max_rel_logit_error"]
        )
    if f.get("min_class_iou") is not None:
        text += "; min per-class IoU {:.4f}".format(f["min_class_iou"])
    if near is not None:
        text += "; {:.0%} of {} disagreements within 2 px of a boundary".format(
            near, f["disagreeing_pixels"]
        )
    return text


def _print_next(engine_path, card, stream):
    h, w = card["input"]["height"], card["input"]["width"]
    print("\nNext:", file=stream)
    print("  segbench --engine {} --res {}x{}".format(engine_path, h, w), file=stream)
    print("  python - <<'EOF'", file=stream)
    print("  import cv2, segdeploy", file=stream)
    print("  with segdeploy.Runtime({!r}) as rt:".format(engine_path), file=stream)
    print("      labels = rt.infer(cv2.imread('frame.png'))  # HxW uint8 label map", file=stream)
    print("  EOF", file=stream, flush=True)
