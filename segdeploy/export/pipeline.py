"""The segexport pipeline: checkpoint -> folded model -> verified ONNX -> engine for this machine.

Each step prints as it starts and when it ends, with its duration. Every artifact is written
atomically; a graph that fails verification is kept only as ``<name>.onnx.failed``.
"""

import importlib.util
import os
import sys

from .. import card as card_mod
from .._io import check_writable_dir, write_json
from ..errors import SegDeployError, VerificationError
from ..manifest import check_plain_name
from .engine_step import build_engine
from .model_source import build_model
from .steps import Steps
from .summary import describe_parity, parity_summary, print_next


def tensorrt_version(args):
    """The TensorRT version the trtexec line and the opset check are for: --trt-version when
    given (even where another TensorRT is installed), else the installed one, else 10.x."""
    from ..engines.build_cli import target_version

    return target_version(args.trt_version)


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
    if requested == "openvino":
        if importlib.util.find_spec("openvino") is None:
            raise SegDeployError(
                "--backend openvino needs OpenVINO: pip install 'segdeploy[openvino]' (or "
                "--backend onnxruntime)"
            )
        return "onnxruntime", "asked for OpenVINO"  # a CPU engine: the CPU steps apply
    if requested == "auto" and ok:
        return "tensorrt", "TensorRT and a CUDA device are present"
    why = "asked for ONNX Runtime" if requested == "onnxruntime" else reason
    return "onnxruntime", why


def run(args, stream=None):
    """Run the whole pipeline for parsed CLI ``args``; returns the report dict.

    One export is one consistent set: while ``--out`` is locked against a second export, every
    file is written into a private staging folder inside it and moved into place at the end,
    ``report.json`` (the manifest with every artifact's SHA-256) last. An error, SIGINT or
    SIGTERM removes the staging folder and leaves ``--out`` as it was.
    """
    from ..manifest import Staging, lock_directory, terminate_as_interrupt

    if args.name is not None:
        check_plain_name(args.name)
    out_dir = check_writable_dir(args.out)
    with terminate_as_interrupt(), lock_directory(out_dir), Staging(out_dir) as staging:
        return _run_staged(args, stream, staging)


def _run_staged(args, stream, staging):
    from ..engines.profiles import derive_profile
    from .serving import check_uint8_target, serving_batch

    backend, backend_reason = choose_backend(args.backend, args.print_trtexec)
    trt_version = tensorrt_version(args)
    check_uint8_target(args, backend, trt_version)
    max_batch = serving_batch(args)
    byo_onnx = args.onnx is not None
    if byo_onnx:
        from .byo import preflight_size

        preflight_size(args)  # a size the graph cannot take: one line before step 1
    if byo_onnx and not args.model:
        # Nothing is exported (no torch needed): the file's own opset is checked for the
        # target by segbuild's graph check. On a device without onnx, segbuild does the rest.
        if importlib.util.find_spec("onnx") is None:
            from ..engines.build_cli import run_for_segexport

            return run_for_segexport(args, backend, backend_reason, stream)
    elif backend == "tensorrt" or args.print_trtexec:
        check_target_opset(args.opset, "tensorrt", trt_version)
    else:
        check_target_opset(args.opset, backend, None)
    dblock = getattr(args, "dblock_plugin", False)
    if dblock:
        from .dblock import check_engine_args

        check_engine_args(args, backend)
    int8 = getattr(args, "int8", False)
    from .cpu_choice import choice_enabled

    # on a CPU with OpenVINO, --backend auto times the installed engines first (one more step)
    timing = args.backend == "auto" and backend == "onnxruntime" and choice_enabled()
    extra = (2 + (backend == "tensorrt")) if dblock else 0  # fuse, check[, build its plan]
    extra += 1 if getattr(args, "input", "float") == "uint8" else 0
    extra += 1 if getattr(args, "triton", None) else 0
    extra += (1 if int8 else 0) + int(timing)
    extra += 1  # the labels head: cut, or kept in the graph (then the step only says so)
    steps = Steps((4 if byo_onnx else 6) + (1 if args.fp16 else 0) + extra, stream, staging)
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
        from .byo import check_res_against_graph

        check_res_against_graph(proto, profile, "--dynamic" if args.dynamic else "--res")
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
        output_facts = None
        if spec.family == "user":
            # Found by a forward pass, not assumed: which output, how many classes, what size.
            from .user_model import check_classes, prepare

            model, num_classes, output_facts = prepare(model, height, width, steps.say)
            check_classes(num_classes, args)
        else:
            # A zoo model was built with its class count.
            num_classes = args.num_classes or spec.num_classes
        from ..models.fold import FoldError, count_batchnorms
        from . import fold_batchnorm

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
        from ..models.modelcard import make_card
        from .onnx_export import export_onnx, op_histogram

        card = make_card(spec, num_classes, height, width, args.output, profile, args.opset, sha)
        card["input"]["max_batch"] = max_batch  # None: the graph takes batches of 1
        if output_facts is not None:
            from .user_model import record_output

            record_output(card, output_facts)
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
            dynamic_batch=bool(max_batch),
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

    from .user_model import apply_flags

    apply_flags(card, args, steps.say)  # --mean/--std/--rgb/--bgr/--classes
    # --- rewrites for the target TensorRT release (export/lower.py), verified below --------
    # (--trt-version alone also names a TensorRT target: the ONNX is for that device)
    to_tensorrt = backend == "tensorrt" or args.print_trtexec or args.trt_version is not None
    trt_target = trt_version if to_tensorrt else None
    if trt_target:
        from .lower import lower_for_target

        for note in lower_for_target(proto, trt_target):
            steps.say("for TensorRT {}: {}".format(".".join(map(str, trt_target[:2])), note))

    # --- verification --------------------------------------------------------------------
    from . import verify

    inputs = verify.random_inputs(card, args.verify_inputs)
    if args.images:
        inputs += verify.image_inputs(args.images, card)[0]
    # Files are written into the staging folder; report and messages name their final paths.
    stage_dir = staging.path
    onnx_path = os.path.join(stage_dir, name + ".onnx")
    if reference is not None:

        def verify_fp32():
            # PyTorch runs once per input: the FP16 graph below is compared with the same logits.
            logits = verify.reference_logits(reference, inputs)
            return logits, verify.verify_onnx(proto, logits, inputs, card["model"]["num_classes"])

        reference, fp32 = steps.run(
            "verify FP32 ONNX against PyTorch on {} inputs (ONNX Runtime CPU)".format(len(inputs)),
            verify_fp32,
        )
        steps.say(describe_parity(fp32))
        card["parity"]["fp32"] = parity_summary(fp32)
        report["parity_fp32"] = fp32
        failure = verify.verdict(fp32)
        if failure:
            from .onnx_export import save_model

            # Kept for inspection outside the export's set: report.json stays the manifest of
            # the previous, good export.
            save_model(proto, onnx_path + ".failed")
            write_json(os.path.join(stage_dir, "report.failed.json"), report)
            failed = staging.move_out(name + ".onnx.failed")
            staging.move_out("report.failed.json")
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
            if trt_target:
                from .lower import lower_fp16_for_target

                for note in lower_fp16_for_target(proto16, trt_target):
                    steps.say(
                        "for TensorRT {}: {}".format(".".join(map(str, trt_target[:2])), note)
                    )
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
            steps.say(describe_parity(fp16))
            card["parity"]["fp16"] = parity_summary(fp16)
            report["parity_fp16"] = fp16
        fp16_path = os.path.join(stage_dir, name + ".fp16.onnx")

    # --- the target release's ONNX parser rules, before anything is written ---------------
    if trt_target:
        from ..engines.parser_rules import check_serialized

        graphs = [(onnx_path, proto, "fp32")] + (
            [(fp16_path, proto16, "fp16")] if fp16_path else []
        )
        for path, graph, precision in graphs:
            for note in check_serialized(graph.SerializeToString(), trt_target, precision, path):
                steps.say(
                    "TensorRT {} parser check of {}: {}".format(
                        ".".join(map(str, trt_target[:2])), os.path.basename(path), note
                    )
                )

    # --- uint8 input head ---------------------------------------------------------------
    if getattr(args, "input", "float") == "uint8":
        from .serving import add_uint8_head

        proto, card, proto16_u8, uint8_figures = add_uint8_head(
            steps, proto, card, proto16 if fp16_path else None
        )
        if fp16_path:
            proto16 = proto16_u8
        card["parity"]["uint8_vs_float"] = uint8_figures
        report["uint8_vs_float"] = uint8_figures

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
        steps.say(staging.final(os.path.basename(path)))
    report["card"] = card
    report["artifacts"] = {
        "onnx": staging.final(name + ".onnx"),
        "onnx_fp16": staging.final(name + ".fp16.onnx") if fp16_path else None,
    }
    if dblock:
        from .dblock import SUFFIX, export_step

        try:
            section = export_step(
                steps, proto, card, inputs, stage_dir, name, proto16 if fp16_path else None
            )
        except VerificationError as exc:
            failed = name + SUFFIX + ".failed"
            if os.path.isfile(os.path.join(stage_dir, failed)):
                # outside the export's set, like a failed standard graph
                kept = staging.move_out(failed)
                raise VerificationError(
                    str(exc).replace(os.path.join(stage_dir, failed), kept)
                ) from None
            raise
        for key in ("path", "path_fp16"):
            if section[key]:
                written += [section[key], card_mod.sidecar_path(section[key])]
                section[key] = staging.final(os.path.basename(section[key]))
        report["dblock"] = section
        report["artifacts"]["onnx_dblock"] = section["path"]
        report["artifacts"]["onnx_dblock_fp16"] = section["path_fp16"]

    # --- INT8 (Q/DQ graph with an accuracy budget; segdeploy/export/int8_step.py) ---------------
    int8_path = None
    if int8:
        from .int8_step import int8_step

        int8_path = int8_step(args, steps, onnx_path, stage_dir, name, card, report, stream)
        written += [int8_path, card_mod.sidecar_path(int8_path)]
        report["artifacts"]["onnx_int8"] = staging.final(os.path.basename(int8_path))

    # --- labels head (export/head.py): CPU engines stop before Resize + ArgMax ------------
    from .head import head_step

    engine_card_in, engine_sources = head_step(
        steps, args, backend, [onnx_path, fp16_path, int8_path], card, stage_dir
    )

    # --- engine ---------------------------------------------------------------------------
    engine_path, engine_card = build_engine(
        args,
        steps,
        backend,
        backend_reason,
        stage_dir,
        name,
        tuple(engine_sources),
        engine_card_in,
        profile,
        trt_version,
    )
    staged_engine = engine_path
    if engine_path:
        written.append(engine_path)
        if os.path.isfile(card_mod.sidecar_path(engine_path)):
            written.append(card_mod.sidecar_path(engine_path))
        if engine_path.endswith(".xml"):  # OpenVINO IR: the weights are beside the topology
            written.append(engine_path[: -len(".xml")] + ".bin")
        default_ort = os.path.join(stage_dir, name + ".ort")
        if engine_path != default_ort and os.path.isfile(default_ort):
            # the measured CPU choice always writes the default NAME.ort the README names
            written += [default_ort, card_mod.sidecar_path(default_ort)]
        engine_path = staging.final(os.path.basename(engine_path))
    report["artifacts"]["engine"] = engine_path
    if dblock:
        from .dblock import engine_step

        staged = dict(
            report["dblock"],
            path=os.path.join(stage_dir, os.path.basename(report["dblock"]["path"])),
            path_fp16=report["dblock"]["path_fp16"]
            and os.path.join(stage_dir, os.path.basename(report["dblock"]["path_fp16"])),
        )
        plan = engine_step(
            build_engine, args, steps, backend, backend_reason, stage_dir, name,
            staged, profile, trt_version,
        )  # fmt: skip
        if plan:
            written += [plan, card_mod.sidecar_path(plan)]
            plan = staging.final(os.path.basename(plan))
        report["artifacts"]["engine_dblock"] = plan
    report["engine"] = engine_card.get("engine") if engine_card else None
    if getattr(args, "triton", None):
        from .serving import write_triton

        # from the staged files (their sidecars beside them): the repository is its own folder
        triton = write_triton(
            steps,
            args,
            name,
            engine_sources[0],
            staged_engine,
            engine_card_in,
            "fp16" if args.fp16 else "fp32",
        )
        report["artifacts"]["triton"] = triton["model_dir"]
    # The set moves into --out at once, the manifest (report.json) last.
    report = staging.commit([os.path.basename(p) for p in written], report)
    steps.say("report and manifest: {}".format(staging.final("report.json")))
    print_next(engine_path or staging.final(name + ".onnx"), card, stream or sys.stdout)
    return report
