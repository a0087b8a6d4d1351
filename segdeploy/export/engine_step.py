"""segexport's last step: the engine for this machine (TensorRT through segbuild's code, or a CPU
engine: ONNX Runtime, or the fastest installed one when --backend auto measures them)."""

import os


def build_engine(args, steps, backend, reason, out_dir, name, paths, card, profile, trt_version):
    # out_dir is the staging folder; the timing cache outlives exports, so it lives in --out.
    # segbuild's code: TensorRT 11 builds FP16 only from NAME.fp16.onnx (written above), older
    # releases from the FP32 graph with the FP16 flag (their FP16 tactics choose per layer).
    from ..engines import build_cli

    final_dir = args.out

    onnx_path, fp16_path = paths[:2]
    int8_path = paths[2] if len(paths) > 2 else None
    precision = "fp16" if args.fp16 else "fp32"
    build_source = onnx_path  # segbuild's source_for picks NAME.fp16.onnx for TensorRT 11 FP16
    if int8_path and (args.print_trtexec or backend == "tensorrt"):
        from .int8_step import tensorrt_int8

        precision, build_source = tensorrt_int8(precision, onnx_path, int8_path, backend, steps)
    plan = os.path.join(out_dir, name + ".plan")  # precision is in the sidecar
    options = {
        "profile": None if profile.is_static else profile,
        "timing_cache": args.timing_cache or os.path.join(final_dir, "timing.cache"),
        "opt_level": args.opt_level,
        "plugins": tuple(args.plugin),
    }
    if args.workspace:
        options["workspace_mib"] = args.workspace
    if args.print_trtexec or backend == "tensorrt":
        trtexec_options = dict(options)
        if card["input"].get("max_batch"):  # a batch range needs shape flags even when static
            trtexec_options["profile"] = profile
        # the command names the files where they end up, not the staging folder
        line = build_cli.trtexec_line(
            os.path.join(final_dir, os.path.basename(build_source)),
            os.path.join(final_dir, os.path.basename(plan)),
            card,
            precision,
            trt_version,
            trtexec_options,
        )
        steps.say("equivalent trtexec command (for building on the device):")
        print(line, flush=True)
    if backend == "tensorrt":
        options["profile"] = profile
        engine_card = steps.run(
            "build TensorRT {} engine ({})".format(precision.upper(), reason),
            build_cli.build,
            build_source,
            plan,
            card,
            precision,
            options,
            lambda text: print(text, file=steps.stream, flush=True),  # silent under -q
        )
        return plan, engine_card
    if backend is None:
        steps.say("no TensorRT engine built here: {}".format(reason))
        return None, None
    from .cpu_choice import choice_enabled, fp16_on_cpu

    note = fp16_on_cpu(args, name) if args.fp16 else None
    if note:
        steps.say(note)  # what the CPU does instead of FP16, in one line
    if args.backend == "openvino":
        from .cpu_choice import build_openvino_asked

        engine_path, engine_card = build_openvino_asked(args, steps, out_dir, name, paths, card)
        return engine_path, _with_note(engine_path, engine_card, note)
    # on a CPU with OpenVINO, --backend auto measures the installed engines and keeps the
    # default ONNX Runtime engine unless another is clearly faster
    if args.backend == "auto" and choice_enabled():
        from .cpu_choice import build_fastest_cpu_engine

        engine_path, engine_card = build_fastest_cpu_engine(
            args, steps, out_dir, name, paths, card, reason
        )
        return engine_path, _with_note(engine_path, engine_card, note)
    from ..engines.onnxruntime_builder import build_onnxruntime_engine

    engine_path = os.path.join(out_dir, name + ".ort")
    engine_card = steps.run(
        "build ONNX Runtime CPU engine",
        build_onnxruntime_engine,
        onnx_path,
        engine_path,
        card,
        threads=args.threads,
        log=lambda text: print(text, file=steps.stream, flush=True),  # silent under -q
    )
    why = "built an ONNX Runtime CPU engine because {}".format(reason.split(";")[0])
    steps.say(why)
    steps.say(
        "{} ({} graph optimizations, saved in ORT format)".format(
            os.path.join(final_dir, os.path.basename(engine_path)), "all"
        )
    )
    return engine_path, _with_note(engine_path, engine_card, note)


def _with_note(engine_path, engine_card, note):
    """The card says what was asked and what was built: ``--fp16`` on a CPU is FP32 (or bf16)."""
    if note and engine_card is not None:
        from .. import card as card_mod

        engine_card["engine"]["requested_precision"] = "fp16"
        engine_card["engine"]["precision_note"] = note
        card_mod.write_sidecar(engine_path, engine_card)
    return engine_card
