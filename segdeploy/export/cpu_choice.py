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

ROUNDS = 5
# The default CPU engine (ONNX Runtime FP32, NAME.ort: the README's commands name it) is kept
# unless another is at least this much faster, and by more than the rounds' spread.
DEFAULT = ("onnxruntime", "fp32")
MARGIN = 0.10


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


def time_engines(engines, feeds, rounds=ROUNDS):
    """{key: [ms per round]} of ``engine.infer``, interleaved in a rotating order after one
    warm-up each. ``feeds``: {key: input array} (each engine takes its graph's input dtype)."""
    keys = list(engines)
    samples = dict((k, []) for k in keys)
    for k in keys:
        engines[k].infer({engines[k].inputs[0].name: feeds[k]})
    for r in range(rounds):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            start = time.perf_counter()
            engines[k].infer({engines[k].inputs[0].name: feeds[k]})
            samples[k].append((time.perf_counter() - start) * 1e3)
    return samples


def timing_input(engine, card):
    """The frame a candidate is timed on, in its graph's input dtype: a uint8 N x H x W x 3 BGR
    frame for ``segexport --input uint8`` graphs, else normalized float32 N x 3 x H x W."""
    from ..samples import sample_frame

    h, w = int(card["input"]["height"]), int(card["input"]["width"])
    if np.dtype(engine.inputs[0].dtype) == np.uint8:
        return np.ascontiguousarray(sample_frame(h, w)[None])
    return np.random.RandomState(0).standard_normal((1, 3, h, w)).astype(np.float32)


def as_graph_input(engine, x, card):
    """``x`` (a normalized float32 1 x 3 x H x W frame, as verification makes them) as the
    engine's graph takes it: unchanged, or back to the uint8 BGR frame for a uint8 graph."""
    if np.dtype(engine.inputs[0].dtype) != np.uint8:
        return x
    from .verify import to_uint8_frame

    return to_uint8_frame(x, card)


def _spread(values):
    """(max - min) / median of one engine's rounds."""
    middle = float(np.median(values))
    return (max(values) - min(values)) / middle if middle > 0 else float("inf")


def decide(samples, eligible, default=DEFAULT):
    """(chosen key, one line saying why) from {key: [ms per round]}: the default engine stays
    unless another eligible one is faster by ``MARGIN`` and by more than both engines' rounds
    spread (and each of its rounds beat each of the default's). Timing noise on a busy machine
    (3 % between two runs) then cannot flip the choice from one export to the next."""
    med = dict((k, float(np.median(v))) for k, v in samples.items())
    best = min((k for k in samples if k in eligible), key=lambda k: med[k])
    label = "{} {}".format(*default)
    if best == default:
        return default, "kept {} ({:.1f} ms): the fastest measured here".format(label, med[default])
    gain = med[default] / med[best] - 1.0
    spread = _spread(samples[default]) + _spread(samples[best])
    needed = max(MARGIN, spread)
    clear = gain > needed and max(samples[best]) < min(samples[default])
    versus = "{} {} at {:.1f} ms is {:.0%} faster than {} at {:.1f} ms".format(
        best[0], best[1], med[best], gain, label, med[default]
    )
    if clear:
        return best, (
            "built {} {} as well: {:.1f} ms, {:.0%} faster than {} at {:.1f} ms, beyond the "
            "rounds' spread ({:.0%}) and the {:.0%} margin".format(
                best[0], best[1], med[best], gain, label, med[default], spread, MARGIN
            )
        )
    return default, (
        "kept {}: {}, not enough to switch (it takes {:.0%}: the {:.0%} margin or the rounds' "
        "spread, whichever is larger)".format(label, versus, needed, MARGIN)
    )


def _labels(engine, inputs, card):
    name = engine.inputs[0].name
    out = []
    for x in inputs:
        value = engine.infer({name: as_graph_input(engine, x, card)})[engine.outputs[0].name]
        out.append(np.array(value.argmax(1) if value.ndim == 4 else value))
    return out


def _real_frames(args, card):
    """Held-out real frames for the bf16 budget, and where they came from; ([], why) if none."""
    from . import verify
    from .int8_step import graph_frames

    if getattr(args, "calib", None) and args.calib != "random":
        _, heldout, _ = graph_frames(args.calib, card, args.calib_count)
        return heldout, "the held-out --calib frames"
    if getattr(args, "images", None):
        frames = verify.image_inputs(args.images, verify.float_view(card))[0]
        return verify.graph_inputs(frames, card), "the --images frames"
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
            ref = _labels(engines[DEFAULT], frames, card) if frames else None
            for key in checked:
                if not frames:
                    notes[key] = {"within_budget": False, "checked_on": source}
                    continue
                f = budget_figures(
                    ref, _labels(engines[key], frames, card), card["model"]["num_classes"], budget
                )
                notes[key] = {
                    "label_agreement": f["label_agreement"],
                    "max_iou_drop": f["max_iou_drop"],
                    "within_budget": f["within_budget"],
                    "checked_on": source,
                }
        feeds = dict((k, timing_input(e, card)) for k, e in engines.items())
        samples = time_engines(engines, feeds)
        for e in engines.values():
            e.close()
        return samples, notes

    samples, notes = steps.run(
        "time the CPU engines installed here ({} rounds, interleaved)".format(ROUNDS), measure
    )
    # the decision is taken from the rounds as report.json records them (0.01 ms), so that it
    # can be reproduced from the report: figures in the reason included
    samples = dict((k, [round(v, 2) for v in vs]) for k, vs in samples.items())
    ms = dict((k, float(np.median(v))) for k, v in samples.items())
    rows = []
    for (backend, precision), value in sorted(ms.items(), key=lambda kv: kv[1]):
        note = notes.get((backend, precision), {})
        ok = note.get("within_budget", True)
        rows.append(
            {
                "backend": backend,
                "precision": precision,
                "median_ms": round(value, 2),
                "rounds_ms": samples[(backend, precision)],
                "spread": round(_spread(samples[(backend, precision)]), 4),
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
    eligible = set((r["backend"], r["precision"]) for r in rows if r["eligible"])
    chosen, why = decide(samples, eligible)
    best = next(r for r in rows if (r["backend"], r["precision"]) == chosen)
    # The default engine is always written (the README's `segbench --engine out/NAME.ort`
    # works on every machine); a clearly faster one is built beside it and is the engine.
    ort_path = os.path.join(out_dir, name + ".ort")

    def build():
        from ..engines.onnxruntime_builder import build_onnxruntime_engine

        ort_card = build_onnxruntime_engine(
            paths[0], ort_path, card, threads=threads, log=steps.say
        )
        if chosen == DEFAULT:
            return ort_path, ort_card
        return _build_chosen(steps, out_dir, name, paths, card, best, threads)

    title = "build the ONNX Runtime CPU engine (the default)"
    if chosen != DEFAULT:
        title += " and the {} {} engine".format(*chosen)
    engine_path, sidecar = steps.run(title, build)
    sidecar["engine"]["selection"] = {
        "candidates": rows,
        "chosen": best,
        "default": list(DEFAULT),
        "why": why,
    }
    card_mod.write_sidecar(engine_path, sidecar)
    steps.say("{} -> {} (no GPU: {})".format(why, engine_path, reason.split(";")[0]))
    return engine_path, sidecar


def _build_chosen(steps, out_dir, name, paths, card, best, threads):
    from ..engines.openvino_builder import build_openvino_engine, inference_precision

    int8_path = paths[2] if len(paths) > 2 else None
    int8 = best["precision"].startswith("int8")
    source = int8_path if int8 else paths[0]
    source_card = card_mod.read_sidecar(source) if int8 else card
    suffix = ".int8" if int8 else (".bf16" if best["precision"] == "bf16" else "")
    if best["backend"] == "openvino":
        engine_path = os.path.join(out_dir, name + suffix + ".xml")
        sidecar = build_openvino_engine(
            source,
            engine_path,
            source_card,
            precision=inference_precision(best["precision"]),
            threads=threads,
            log=steps.say,
        )
        return engine_path, sidecar
    from ..engines.onnxruntime_builder import build_onnxruntime_engine

    engine_path = os.path.join(out_dir, name + suffix + ".ort")
    sidecar = build_onnxruntime_engine(
        source, engine_path, source_card, threads=threads, log=steps.say
    )
    sidecar["engine"]["precision"] = best["precision"]
    return engine_path, sidecar


def fp16_on_cpu(args, name):
    """The one line ``--fp16`` gets on a CPU, where no engine computes in FP16: what it does
    instead (FP32, or bf16 in OpenVINO where the CPU has it and real frames keep the budget)."""
    head = (
        "--fp16: no CPU engine computes in FP16, so this one is FP32 ({}.fp16.onnx is written "
        "for a GPU)".format(name)
    )
    if not openvino_installed() or "openvino" not in allowed_engines():
        return (
            head + "; bf16, where the CPU has it, runs in OpenVINO: pip install "
            "'segdeploy[openvino]'"
        )
    import openvino

    from ..engines.openvino_builder import cpu_has_bf16

    if not cpu_has_bf16(openvino.Core()):
        return head + "; this CPU has no native bf16 either (AVX512_BF16 or AMX)"
    if args.backend != "auto":
        return (
            head + "; this CPU computes bf16 in OpenVINO: --backend auto with --calib DIR times it"
        )
    if getattr(args, "calib", None) not in (None, "random") or getattr(args, "images", None):
        return head + "; bf16 (this CPU has it) is timed below, checked on your real frames"
    return head + (
        "; this CPU computes bf16 in OpenVINO: add --calib DIR (real frames) and segexport "
        "checks it against the accuracy budget and builds it where it is clearly faster"
    )


def build_openvino_asked(args, steps, out_dir, name, paths, card):
    """``--backend openvino``: the OpenVINO IR of the FP32 graph (f32), nothing timed."""
    from ..engines.openvino_builder import build_openvino_engine

    engine_path = os.path.join(out_dir, name + ".xml")
    sidecar = steps.run(
        "build OpenVINO f32 engine (asked for with --backend openvino)",
        build_openvino_engine,
        paths[0],
        engine_path,
        card,
        precision="f32",
        threads=args.threads,
        log=steps.say,
    )
    steps.say("built {} (OpenVINO IR, f32)".format(engine_path))
    return engine_path, sidecar
