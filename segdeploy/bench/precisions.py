"""``segbench --engine X.onnx --precisions fp32,bf16,int8``: precisions and backends in one table.

For an exported FP32 graph ``X.onnx`` (and, for int8, the ``X.int8.onnx`` that ``segexport
--int8`` wrote next to it), every requested precision runs in every backend that has it:

    fp32: ONNX Runtime and OpenVINO (f32) on X.onnx
    bf16: OpenVINO on X.onnx with bf16 inference (CPUs with AVX512_BF16 / AMX; ONNX Runtime's
          CPU provider has no bf16 kernels, so it is not offered there)
    int8: ONNX Runtime and OpenVINO on X.int8.onnx (the Q/DQ graph; the layers it leaves
          unquantized run in FP32)
    int8+bf16: OpenVINO on X.int8.onnx with the unquantized layers in bf16 (the fastest CPU
          variant on AMX machines; bf16 CPUs only)

Beside each speed: the label agreement with the FP32 ONNX Runtime engine on synthetic street
scenes (``bench.frames``) at the engine's size, and the number of classes the FP32 labels hold
there (agreement means little when it is one). Python 3.6 compatible.
"""

import importlib.util
import os

import numpy as np

from ..engines.build_cli import int8_sibling
from ..engines.openvino_builder import inference_precision
from ..errors import SegDeployError
from .backends import parse_choices

PRECISIONS = ("fp32", "bf16", "int8", "int8+bf16")
AGREEMENT_FRAMES = 4


def parse_precisions(text):
    return parse_choices("--precisions", text, PRECISIONS)


def variants(engine_path, precisions, backends=None):
    """[(backend, precision, file, options)] to run, and notes on what was left out."""
    if not engine_path.endswith(".onnx") or engine_path.endswith(".int8.onnx"):
        raise SegDeployError(
            "--precisions compares precisions of one exported FP32 graph: pass --engine "
            "NAME.onnx (segexport writes NAME.int8.onnx next to it with --int8)"
        )
    have_ov = importlib.util.find_spec("openvino") is not None
    wanted = backends or ["onnxruntime"] + (["openvino"] if have_ov else [])
    out, notes = [], []
    for precision in precisions:
        source = engine_path
        if precision.startswith("int8"):
            source = int8_sibling(engine_path)
            if not os.path.isfile(source):
                raise SegDeployError(
                    "no INT8 graph {} next to {}; write it with segexport ... --int8 --calib "
                    "DIR".format(source, engine_path)
                )
        for backend in wanted:
            if backend == "onnxruntime" and inference_precision(precision) == "bf16":
                notes.append(
                    "{}: ONNX Runtime's CPU provider has no bf16 kernels; OpenVINO only".format(
                        precision
                    )
                )
                continue
            if backend == "openvino" and not have_ov:
                notes.append("openvino is not installed (pip install 'segdeploy[openvino]')")
                continue
            options = {}
            if backend == "openvino":
                options["precision"] = inference_precision(precision)
            out.append((backend, precision, source, options))
    return out, notes


def run_precisions(args, protocol, progress, run_protocol, complexity=None):
    """Time every variant under ``protocol``; records carry precision and agreement."""
    from ..runtime.runtime import Runtime
    from .frames import street_scene

    backends = None
    if args.backends_given:
        from .backends import parse_backends

        backends = [b for b in parse_backends(args.backends) if b != "torch"]
    todo, notes = variants(args.engine, parse_precisions(args.precisions), backends)
    for note in sorted(set(notes)):
        print("note: " + note)
    options = {} if args.threads is None else {"threads": args.threads}
    reference = Runtime(args.engine, backend="onnxruntime", **options)
    h, w = reference.input_size
    frames = [street_scene(h, w, 900 + i) for i in range(AGREEMENT_FRAMES)]
    ref_labels = [reference.infer(f).copy() for f in frames]
    classes = len(set(int(c) for r in ref_labels for c in np.unique(r)))
    card = reference.card
    reference.close()
    # params and multiply-adds of the zoo model the graph came from (None, None: unknown)
    params, macs = complexity(card, h, w) if complexity is not None else (None, None)
    records = []
    for backend, precision, source, extra in todo:
        opts = dict(options, **extra)
        try:
            runtime = Runtime(source, backend=backend, **opts)
        except SegDeployError as exc:
            print("note: {} {} skipped: {}".format(backend, precision, exc))
            continue
        try:
            agree = float(
                np.mean([(runtime.infer(f) == r).mean() for f, r in zip(frames, ref_labels)])
            )
            progress.start("{} {}".format(backend, precision))
            record = run_protocol(
                runtime.engine,
                protocol,
                h,
                w,
                params=params,
                macs=macs,
                progress=progress,
                peak_cache={},
            )
        finally:
            runtime.close()
        record["precision"] = precision
        record["engine"] = {"path": source, "backend": backend, "precision": precision}
        record["engine_file"] = source
        record["agreement_vs_fp32"] = agree
        record["agreement_frames"] = AGREEMENT_FRAMES
        record["fp32_classes_on_frames"] = classes
        records.append(record)
    return records


def format_precision_table(records):
    if not records:
        return "no variant ran"
    fp32 = [r["latency_ms"]["median"] for r in records if r["precision"] == "fp32"]
    base = min(fp32) if fp32 else None
    lines = [
        "{:<12} {:<9} {:>10} {:>9} {:>10}".format(
            "backend", "prec", "median ms", "vs fp32", "agreement"
        )
    ]
    for r in records:
        ms = r["latency_ms"]["median"]
        lines.append(
            "{:<12} {:<9} {:>10.2f} {:>8} {:>9.3f}%".format(
                r["backend"],
                r["precision"],
                ms,
                "{:.2f}x".format(base / ms) if base else "-",
                100.0 * r["agreement_vs_fp32"],
            )
        )
    lines.append(
        "agreement: labels equal to ONNX Runtime FP32 on {} synthetic street scenes "
        "({} classes in the FP32 labels); 'vs fp32': the fastest FP32 row over this "
        "row".format(records[0]["agreement_frames"], records[0]["fp32_classes_on_frames"])
    )
    return "\n".join(lines)
