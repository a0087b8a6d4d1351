"""On a CPU machine, build the engine this machine runs fastest among those installed: measured.

Candidates: ONNX Runtime FP32; OpenVINO f32; OpenVINO bf16 where the CPU has native bf16 and
real frames show it within the accuracy budget; and, when ``segexport --int8`` wrote a graph
within its budget, that Q/DQ graph in ONNX Runtime and in OpenVINO, and on a bf16 CPU in OpenVINO
with its unquantized layers in bf16 (``int8+bf16``: within budget on real frames only, like
bf16). Each is opened and timed at export time (one warm-up, then a few rounds, interleaved,
median), because which one wins depends on the CPU (VNNI, AVX512_BF16, AMX), the libraries'
versions and the model, and the ranking on one machine does not carry to another. The winner is
built (``.ort`` or OpenVINO IR ``.xml``); the figures and the reason go into the output and the
card (``engine.selection``).
A step of the export pipeline (it verifies and budget-checks candidates), so it lives in export.
"""

import importlib.util
import os
import time

import numpy as np

from .. import card as card_mod

ROUNDS = 3


# Which CPU engines ``--backend auto`` may choose among: comma-separated names in this variable
# (default: every installed one). SEGDEPLOY_CPU_ENGINES=onnxruntime always builds ``NAME.ort``
# without timing anything, e.g. where scripts expect that file.
ENGINES_VARIABLE = "SEGDEPLOY_CPU_ENGINES"


def openvino_installed():
    return importlib.util.find_spec("openvino") is not None


def allowed_engines():
    text = os.environ.get(ENGINES_VARIABLE, "")
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    return names or ["onnxruntime", "openvino"]


def choice_enabled():
    """True when ``--backend auto`` on a CPU times the installed engines and builds the fastest:
    OpenVINO is installed and not excluded by SEGDEPLOY_CPU_ENGINES."""
    return openvino_installed() and "openvino" in allowed_engines()


def _candidates(paths, card, has_bf16, int8_ok):
    onnx_path = paths[0]
    int8_path = paths[2] if len(paths) > 2 else None
    out = [("onnxruntime", "fp32", onnx_path), ("openvino", "f32", onnx_path)]
    if has_bf16:
        out.append(("openvino", "bf16", onnx_path))
    if int8_path and int8_ok:
        out += [("onnxruntime", "int8", int8_path), ("openvino", "int8", int8_path)]
        if has_bf16:
            out.append(("openvino", "int8+bf16", int8_path))
    return out


def _open(backend, precision, path, threads):
    from ..engines.openvino_builder import inference_precision
    from ..runtime.backend import open_engine

    options = {"threads": threads}
    if backend == "openvino":
        options["precision"] = inference_precision(precision)
    return open_engine(path, backend=backend, **options)


def time_engines(engines, x, rounds=ROUNDS):
    """{key: median ms} of ``engine.infer`` on ``x``, interleaved in a rotating order."""
    keys = list(engines)
    samples = dict((k, []) for k in keys)
    for k in keys:
        engines[k].infer({engines[k].inputs[0].name: x})
    for r in range(rounds):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            start = time.perf_counter()
            engines[k].infer({engines[k].inputs[0].name: x})
            samples[k].append((time.perf_counter() - start) * 1e3)
    return dict((k, float(np.median(v))) for k, v in samples.items())


def _labels(engine, inputs):
    name = engine.inputs[0].name
    out = []
    for x in inputs:
        value = engine.infer({name: x})[engine.outputs[0].name]
        out.append(np.array(value.argmax(1) if value.ndim == 4 else value))
    return out


def _real_frames(args, card):
    """Held-out real frames for the bf16 budget, and where they came from; ([], why) if none."""
    from . import verify
    from .quantize import load_frames

    if getattr(args, "calib", None) and args.calib != "random":
        _, heldout, _ = load_frames(args.calib, card, args.calib_count)
        return heldout, "the held-out --calib frames"
    if getattr(args, "images", None):
        return verify.image_inputs(args.images, card)[0], "the --images frames"
    return [], "no real frames (pass --images DIR or --calib DIR)"


def build_fastest_cpu_engine(args, steps, out_dir, name, paths, card, reason):
    """Time the candidates, build the fastest within budget; returns (engine path, sidecar)."""
    import openvino

    from ..engines.openvino_builder import cpu_has_bf16, inference_precision
    from .quantize import budget_figures, parse_budget

    has_bf16 = cpu_has_bf16(openvino.Core())
    int8_path = paths[2] if len(paths) > 2 else None
    int8_ok = bool(int8_path) and card_mod.read_sidecar(int8_path)["quantization"]["within_budget"]
    budget = parse_budget(getattr(args, "budget", None))
    threads = args.threads

    def measure():
        engines = {}
        for backend, precision, path in _candidates(paths, card, has_bf16, int8_ok):
            engines[(backend, precision)] = _open(backend, precision, path, threads)
        notes = {}
        checked = [key for key in engines if inference_precision(key[1]) == "bf16"]
        if checked:
            # bf16 has no budget check of its own (segexport --int8 checks INT8 + FP32): real
            # frames decide, or the candidate is not eligible
            frames, source = _real_frames(args, card)
            ref = _labels(engines[("onnxruntime", "fp32")], frames) if frames else None
            for key in checked:
                if not frames:
                    notes[key] = {"within_budget": False, "checked_on": source}
                    continue
                f = budget_figures(
                    ref, _labels(engines[key], frames), card["model"]["num_classes"], budget
                )
                notes[key] = {
                    "label_agreement": f["label_agreement"],
                    "max_iou_drop": f["max_iou_drop"],
                    "within_budget": f["within_budget"],
                    "checked_on": source,
                }
        h, w = card["input"]["height"], card["input"]["width"]
        x = np.random.RandomState(0).standard_normal((1, 3, h, w)).astype(np.float32)
        ms = time_engines(engines, x)
        for e in engines.values():
            e.close()
        return ms, notes

    ms, notes = steps.run(
        "time the CPU engines installed here ({} rounds, interleaved)".format(ROUNDS), measure
    )
    rows = []
    for (backend, precision), value in sorted(ms.items(), key=lambda kv: kv[1]):
        note = notes.get((backend, precision), {})
        ok = note.get("within_budget", True)
        rows.append(
            {
                "backend": backend,
                "precision": precision,
                "median_ms": round(value, 2),
                "eligible": ok,
                "budget_check": note or None,
            }
        )
        steps.say(
            "{:<12} {:<9} {:8.1f} ms{}".format(
                backend,
                precision,
                value,
                ""
                if ok
                else "  (not eligible: {} {})".format(
                    "over budget on" if note.get("checked_on", "").startswith("the") else "",
                    note.get("checked_on", ""),
                ),
            )
        )
    eligible = [r for r in rows if r["eligible"]]
    best = eligible[0]
    fp32 = [r for r in rows if r["precision"] in ("fp32", "f32")]
    why = (
        "fastest measured here: {} {} at {:.1f} ms, {:.2f}x the fastest FP32 engine "
        "({} {:.1f} ms)".format(
            best["backend"],
            best["precision"],
            best["median_ms"],
            fp32[0]["median_ms"] / best["median_ms"],
            fp32[0]["backend"],
            fp32[0]["median_ms"],
        )
    )
    int8 = best["precision"].startswith("int8")
    source = int8_path if int8 else paths[0]
    source_card = card_mod.read_sidecar(source) if int8 else card
    suffix = ".int8" if int8 else (".bf16" if best["precision"] == "bf16" else "")
    if best["backend"] == "openvino":
        from ..engines.openvino_builder import build_openvino_engine

        engine_path = os.path.join(out_dir, name + suffix + ".xml")
        sidecar = steps.run(
            "build OpenVINO {} engine".format(best["precision"]),
            build_openvino_engine,
            source,
            engine_path,
            source_card,
            precision=inference_precision(best["precision"]),
            threads=threads,
            log=steps.say,
        )
    else:
        from ..engines.onnxruntime_builder import build_onnxruntime_engine

        engine_path = os.path.join(out_dir, name + suffix + ".ort")
        sidecar = steps.run(
            "build ONNX Runtime CPU {} engine".format(best["precision"]),
            build_onnxruntime_engine,
            source,
            engine_path,
            source_card,
            threads=threads,
            log=steps.say,
        )
        sidecar["engine"]["precision"] = best["precision"]
    sidecar["engine"]["selection"] = {"candidates": rows, "chosen": best, "why": why}
    card_mod.write_sidecar(engine_path, sidecar)
    steps.say(
        "built {} because it is the {} (no GPU: {})".format(engine_path, why, reason.split(";")[0])
    )
    return engine_path, sidecar
