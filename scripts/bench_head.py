"""The labels head in the graph against the fused head on the host (issue 25, docs/benchmarks.md).

    PYTHONPATH=$PWD python scripts/bench_head.py
        [--models regseg,swiftnet_rn18,deeplabv3plus_mobilenet] [--res 512x1024,1024x2048]
        [--engines ort-fp32,ov-f32,ov-bf16,ov-int8+bf16] [--rounds 9] [--threads 2]
        [--json out/bench_head.json]
    PYTHONPATH=$PWD python scripts/bench_head.py --tiny       # seconds: tiny models, 64x128

For each model and size the zoo model (He-style varied weights: labels vary) is exported once;
the same graph is then run two ways on every engine and precision:

- graph: the exported graph as it is, its final Resize + ArgMax inside (``--head graph``);
- fused: the same graph cut before that Resize (``--head fused``): the engine returns the
  low-resolution logits and ``Runtime.infer``'s post-processing runs the fused head.

Engines: ONNX Runtime FP32, OpenVINO f32, OpenVINO bf16 (CPUs with native bf16 only), and the
INT8 Q/DQ graph (segexport's budgeted quantization, calibrated on synthetic scenes) in OpenVINO
with bf16 for its unquantized layers (``ov-int8+bf16``; ``ov-int8`` in f32 where the CPU has no
bf16). All ``Runtime.infer`` calls of one model and size run in one process, interleaved (one
call of each per round, shuffled; bench_runtime.interleave). Reported per engine: the median of
each, the head's share of ``Runtime.infer`` (graph: its time minus the fused variant's time
without its head, i.e. the graph cut before the head; fused: the fused head timed alone on the
engine's logits, interleaved too), label agreement between the two on street scenes, the
classes present, and the share of pixels the fused head had to interpolate over all classes.
The summary line compares the fastest fused variant with the fastest FP32 peer (ONNX Runtime or
OpenVINO running the whole exported graph). The script does not judge: it prints and writes.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_runtime import interleave  # noqa: E402

ENGINES = ("ort-fp32", "ov-f32", "ov-bf16", "ov-int8+bf16")
AGREEMENT_FRAMES = 4


def varied_model(name, seed=0):
    import torch

    from segdeploy import models
    from segdeploy.models.golden import vary_weights_

    torch.manual_seed(seed)
    return vary_weights_(models.build(name).eval())


def export_pair(name, height, width, workdir, want_int8, log, calib=8, heldout=4, search=True):
    """{"fp32": (graph path, fused path), "int8": (...)} for zoo model ``name``. ``search``:
    segexport's accuracy-budget search (nodes kept FP32), else every node but the head INT8."""
    import onnx

    from segdeploy import models
    from segdeploy.card import read_onnx_card as read_card
    from segdeploy.export import export_onnx, fold_batchnorm, make_card
    from segdeploy.export.head import cut_head
    from segdeploy.export.onnx_export import save_model, set_card

    spec = models.get_spec(name)
    card = make_card(spec, spec.num_classes, height, width)
    stem = os.path.join(workdir, "{}_{}x{}".format(name, height, width))
    paths = {"fp32": stem + ".onnx"}
    kept = {"fp32": stem + ".fused.onnx", "int8": stem + ".int8.fused.onnx"}
    if all(os.path.isfile(kept[k]) for k in ("fp32", "int8") if k == "fp32" or want_int8):
        log("{}: reusing the exports in {}".format(name, workdir))
        keys = ("fp32", "int8") if want_int8 else ("fp32",)
        return {k: (kept[k][: -len(".fused.onnx")] + ".onnx", kept[k]) for k in keys}
    export_onnx(
        fold_batchnorm(varied_model(name)), paths["fp32"], height=height, width=width, card=card
    )
    if want_int8:
        from segdeploy.bench.frames import write_scenes
        from segdeploy.export.quantize import (
            DEFAULT_BUDGET,
            Quantizer,
            load_frames,
            quantize_with_budget,
        )

        scenes = stem + "_calib"
        write_scenes(scenes, max(calib + heldout, 4 * heldout), height, width)
        calib_in, held_in, _ = load_frames(scenes, card, calib)
        paths["int8"] = stem + ".int8.onnx"
        started = time.perf_counter()
        if search:
            quant = quantize_with_budget(
                paths["fp32"],
                paths["int8"],
                calib_in,
                held_in,
                spec.num_classes,
                DEFAULT_BUDGET,
                log=log,
            )
            verdict = quant["verdict"][:200]
        else:
            folder = stem + "_quantizer"
            os.makedirs(folder, exist_ok=True)
            Quantizer(paths["fp32"], calib_in, folder, log=log).write(paths["int8"])
            verdict = "every node but the head INT8 (no budget search)"
        log("INT8 in {:.0f} s: {}".format(time.perf_counter() - started, verdict))
        proto = onnx.load(paths["int8"])
        set_card(proto, dict(card, precision="int8"))
        save_model(proto, paths["int8"])
    pairs = {}
    for key, path in paths.items():
        proto = onnx.load(path)
        cut, fused_card = cut_head(proto, read_card(proto))
        set_card(cut, fused_card)
        fused_path = path[: -len(".onnx")] + ".fused.onnx"
        save_model(cut, fused_path)
        pairs[key] = (path, fused_path)
    return pairs


def open_engines(pairs, wanted, threads, log):
    """{engine name: (graph Runtime, fused Runtime)} for the engines this machine has."""
    from segdeploy import Runtime

    options = {"threads": threads}
    ov = {"backend": "openvino"}
    table = {
        "ort-fp32": ("fp32", {}),
        "ov-f32": ("fp32", dict(ov, precision="f32")),
        "ov-bf16": ("fp32", dict(ov, precision="bf16")),
        "ov-int8+bf16": ("int8", dict(ov, precision="bf16")),
        "ov-int8": ("int8", dict(ov, precision="f32")),
    }
    out = {}
    for name in wanted:
        graph_file, extra = table[name]
        if graph_file not in pairs:
            continue
        try:
            out[name] = tuple(Runtime(p, **dict(options, **extra)) for p in pairs[graph_file])
        except Exception as exc:  # e.g. bf16 on a CPU without native bf16
            log("{} skipped: {}".format(name, str(exc).splitlines()[0][:160]))
            if name == "ov-int8+bf16" and "int8" in pairs:
                log("  ov-int8 (f32) instead")
                out["ov-int8"] = tuple(
                    Runtime(p, **dict(options, **table["ov-int8"][1])) for p in pairs["int8"]
                )
    return out


def run_case(name, height, width, args, workdir, log):
    from segdeploy.bench.frames import street_scene

    wanted = [e.strip() for e in args.engines.split(",") if e.strip()]
    want_int8 = any("int8" in e for e in wanted)
    started = time.perf_counter()
    pairs = export_pair(name, height, width, workdir, want_int8, log, search=args.int8_search)
    log("{} {}x{}: exported in {:.0f} s".format(name, height, width, time.perf_counter() - started))
    engines = open_engines(pairs, wanted, args.threads, log)
    frames = [street_scene(height, width, 500 + i) for i in range(AGREEMENT_FRAMES)]
    frame = street_scene(height, width, 7)
    out = np.empty((height, width), np.uint8)
    variants, facts = {}, {}
    for engine, (graph, fused) in engines.items():
        agree, classes, mixed = [], set(), []
        for f in frames:
            expected = graph.infer(f).copy()
            labels = fused.infer(f)
            mixed.append(fused._post.last_mixed)
            agree.append(float((labels == expected).mean()))
            classes.update(int(c) for c in np.unique(expected))
        logits = fused.engine.infer({fused.input_name: fused._pre.one(frame)})[fused.output_name]
        low = np.ascontiguousarray(logits[0])
        facts[engine] = {
            "agreement": float(np.mean(agree)),
            "classes": len(classes),
            "mixed": float(np.mean(mixed)),
            "logits": list(low.shape),
            "head_impl": fused.head_impl,
        }
        variants[engine + " graph"] = lambda rt=graph: rt.infer(frame, out=out)
        variants[engine + " fused"] = lambda rt=fused: rt.infer(frame, out=out)
        variants[engine + " fused head only"] = lambda rt=fused, x=low: rt._post(
            x, (height, width), out, (height, width)
        )
    log("timing {} variants x {} rounds".format(len(variants), args.rounds))
    timing = interleave(variants, args.rounds)
    for pair in engines.values():
        for rt in pair:
            rt.close()
    rows = []
    for engine in engines:
        g = timing[engine + " graph"]["median"]
        f = timing[engine + " fused"]["median"]
        head = timing[engine + " fused head only"]["median"]
        rows.append(
            dict(
                facts[engine],
                engine=engine,
                graph_ms=round(g, 2),
                fused_ms=round(f, 2),
                fused_head_ms=round(head, 2),
                graph_head_share=round(max(g - (f - head), 0.0) / g, 4),
                fused_head_share=round(head / f, 4),
                speedup=round(g / f, 3),
                spread={k: v for k, v in timing.items() if k.startswith(engine + " ")},
            )
        )
    fp32 = [r["graph_ms"] for r in rows if r["engine"] in ("ort-fp32", "ov-f32")]
    best = min(rows, key=lambda r: r["fused_ms"]) if rows else None
    return {
        "model": name,
        "res": "{}x{}".format(height, width),
        "rows": rows,
        "fastest_fp32_graph_ms": min(fp32) if fp32 else None,
        "fastest_fused": best and {"engine": best["engine"], "ms": best["fused_ms"]},
        "fused_vs_fastest_fp32": round(min(fp32) / best["fused_ms"], 2) if fp32 and best else None,
    }


def smooth_logits(classes, height, width, seed=0, blob=24):
    """(C, h, w) float32 class fields with regions and boundaries (as a network's logits)."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((classes, height // blob + 2, width // blob + 2))
    planes = [
        cv2.resize(p.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
        for p in coarse
    ]
    return np.stack(planes) * np.float32(3)


def resize_argmax_session(classes, low_hw, out_hw, threads):
    """ONNX Runtime session of the standard head alone (export.seghead.standard_head_graph)."""
    import onnxruntime as ort

    from segdeploy.export.seghead import standard_head_graph

    model = standard_head_graph(classes, low_hw[0], low_hw[1], out_hw)
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def micro_case(height, width, classes, stride, args, log):
    """Rows of one size, class count and stride: the head implementations, interleaved."""
    from segdeploy.runtime.head import FusedHead
    from segdeploy.runtime.postprocess import Postprocessor

    low = smooth_logits(classes, height // stride, width // stride)
    size = (height, width)
    session = resize_argmax_session(classes, low.shape[1:], size, args.threads)
    expected = session.run(None, {"logits": low[None]})[0][0]
    out = np.empty(size, np.uint8)
    pruned, full = FusedHead(impl="numpy"), FusedHead(impl="numpy")
    pruned.prune, full.prune = True, False
    opencv = Postprocessor("logits", classes)  # cv2.resize per plane + running max
    variants = {
        "onnxruntime Resize+ArgMax": lambda: session.run(None, {"logits": low[None]}),
        "opencv resize + argmax": lambda: opencv(low, size, out),
        "fused numpy, every class": lambda: full(low, size, out),
        "fused numpy, candidate classes": lambda: pruned(low, size, out),
    }
    for threads in sorted({1, args.threads}):
        compiled = FusedHead(impl="auto", threads=threads)
        if compiled.impl == "compiled":
            name = "fused compiled, {} thread{}".format(threads, "s" if threads > 1 else "")
            variants[name] = lambda head=compiled: head(low, size, out)
    agree = {name: 1.0 for name in variants}
    for name in list(variants)[1:]:
        agree[name] = float((variants[name]() == expected).mean())
    log("micro {}x{} C={} stride {}".format(height, width, classes, stride))
    timing = interleave(variants, args.rounds)
    return [
        {
            "res": "{}x{}".format(height, width),
            "classes": classes,
            "stride": stride,
            "variant": name,
            "median_ms": round(spread["median"], 2),
            "agreement_with_onnxruntime": agree[name],
            "pixels_interpolated": full.last_mixed,
        }
        for name, spread in timing.items()
    ]


def micro(args, log):
    """The head alone on synthetic logits: the implementations the fused head was chosen from."""
    rows = []
    for item in args.res.split(","):
        height, width = (int(v) for v in item.split("x"))
        for classes, stride in ((19, 4), (19, 8), (150, 4)):
            rows += micro_case(height, width, classes, stride, args, log)
    lines = [
        "| size | classes | stride | implementation | median ms | labels equal to ONNX Runtime "
        "| pixels interpolated |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            "| {} | {} | {} | {} | {:.2f} | {:.4f} % | {:.1f} % |".format(
                r["res"],
                r["classes"],
                r["stride"],
                r["variant"],
                r["median_ms"],
                100 * r["agreement_with_onnxruntime"],
                100 * r["pixels_interpolated"],
            )
        )
    print("\n".join(lines), flush=True)
    return rows


def table(result):
    lines = [
        "{} {}: fastest fused {} {:.1f} ms = {}x the fastest FP32 graph ({} ms); fused head: "
        "{}".format(
            result["model"],
            result["res"],
            result["fastest_fused"]["engine"],
            result["fastest_fused"]["ms"],
            result["fused_vs_fastest_fp32"],
            result["fastest_fp32_graph_ms"],
            ", ".join(sorted(set(r["head_impl"] for r in result["rows"]))),
        ),
        "| engine | graph head ms | fused head ms | speed-up | head share graph | head share fused "
        "| fused head alone ms | label agreement | classes | pixels interpolated |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            "| {} | {:.1f} | {:.1f} | {:.2f}x | {:.1f} % | {:.1f} % | {:.2f} | {:.4f} % | {} "
            "| {:.1f} % |".format(
                r["engine"],
                r["graph_ms"],
                r["fused_ms"],
                r["speedup"],
                100 * r["graph_head_share"],
                100 * r["fused_head_share"],
                r["fused_head_ms"],
                100 * r["agreement"],
                r["classes"],
                100 * r["mixed"],
            )
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="regseg,swiftnet_rn18,deeplabv3plus_mobilenet")
    parser.add_argument("--res", default="512x1024,1024x2048")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--workdir",
        help="keep the exported graphs here and reuse them on the next run (default: a "
        "temporary folder)",
    )
    parser.add_argument(
        "--no-int8-search",
        dest="int8_search",
        action="store_false",
        help="quantize every node but the head, without segexport's accuracy-budget search "
        "(minutes instead of tens of minutes at 1024x2048; random weights are over any budget "
        "anyway)",
    )
    parser.add_argument(
        "--export-only",
        action="store_true",
        help="export (and quantize) into --workdir, time nothing: a later run on a quiet "
        "machine reuses them",
    )
    parser.add_argument(
        "--micro",
        action="store_true",
        help="the head alone on synthetic logits (19 classes at strides 4 and 8, 150 at 4): "
        "ONNX Runtime's Resize + ArgMax, OpenCV per plane, the fused head with every class and "
        "with candidate classes",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a smoke run: the tiny zoo variants at 64x128, 3 rounds, FP32 engines",
    )
    args = parser.parse_args(argv)
    if args.tiny:  # defaults only: flags given explicitly stay
        given = " ".join(argv if argv is not None else sys.argv[1:])
        for flag, value in (
            ("models", "regseg_tiny,swiftnet_tiny,deeplabv3plus_tiny"),
            ("res", "64x128"),
            ("rounds", 3),
            ("engines", "ort-fp32,ov-f32,ov-bf16"),
        ):
            if "--" + flag not in given:
                setattr(args, flag, value)

    import onnxruntime
    import torch

    import segdeploy
    from segdeploy.engines.onnxruntime_builder import cpu_isa, cpu_name

    torch.set_num_threads(args.threads)

    def log(text):
        print("  " + text, flush=True)

    results = []
    if args.micro:
        results.append({"micro": micro(args, log)})
    with tempfile.TemporaryDirectory(prefix="bench-head-") as scratch:
        workdir = args.workdir or scratch
        if args.workdir:
            os.makedirs(workdir, exist_ok=True)
        for name in [] if args.micro else args.models.split(","):
            for item in args.res.split(","):
                h, w = (int(v) for v in item.split("x"))
                if args.export_only:
                    want_int8 = "int8" in args.engines
                    export_pair(
                        name.strip(), h, w, workdir, want_int8, log, search=args.int8_search
                    )
                    continue
                load_before = os.getloadavg()
                result = run_case(name.strip(), h, w, args, workdir, log)
                result["loadavg_before_after"] = [load_before, os.getloadavg()]
                results.append(result)
                print(table(result), flush=True)
                print("load average before/after: {} / {}".format(*result["loadavg_before_after"]))
    try:
        import openvino

        ov_version = openvino.__version__
    except ImportError:
        ov_version = None
    env = {
        "cpu": cpu_name(),
        "isa": cpu_isa(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "segdeploy": segdeploy.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": ov_version,
        "command": " ".join(["scripts/bench_head.py"] + list(argv or sys.argv[1:])),
    }
    print(json.dumps(env))
    if args.json:
        from segdeploy._io import write_json

        write_json(args.json, {"environment": env, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
