"""Which INT8 quantizer ``segexport --int8`` uses, measured: ONNX Runtime, NNCF, NVIDIA ModelOpt.

    make quantizers-env    # .venv-quantizers: NNCF and ModelOpt (segdeploy needs neither)
    PYTHONPATH=$PWD .venv/bin/python scripts/compare_quantizers.py --res 512x1024 \\
        --quantizer-python .venv-quantizers/bin/python [--rounds 10] [--json out/quantizers.json]

One FP32 RegSeg graph (trained on synthetic street scenes as in bench_precision.py, so its labels
are regions), one set of calibration frames (pre-processed as the Runtime does, handed to every
quantizer as the same array), one Q/DQ graph per quantizer, each with the final Resize and the
ArgMax left FP32:

- onnxruntime: segdeploy's own path (``export.quantize.Quantizer``: quantize_static, QDQ, MinMax,
  symmetric INT8 activations, per-channel symmetric INT8 weights);
- nncf: ``nncf.quantize`` on the ONNX model, PERFORMANCE preset (symmetric), fast bias correction;
- modelopt: ``modelopt.onnx.quantization.quantize``, int8, max calibration, CPU provider, FP32 for
  what it leaves unquantized.

NNCF and ModelOpt run in their own environment (``--quantizer-python``; ModelOpt brings
onnxruntime-gpu, cupy and its own onnx pin, which replace segdeploy's onnxruntime): this script
calls itself there with ``--external`` to write their graphs, then measures all graphs here, in
one process: TensorRT's parser rules for 8.2, 8.6 and 10.8 (``engines.parser_rules``), the Q/DQ
layout, speed (OpenVINO with the unquantized layers in f32 and in bf16, ONNX Runtime; uint8 frame
in, labels out, interleaved) and label agreement / worst class IoU drop against the FP32 graph on
scenes none of them calibrated on.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

EXTERNAL = ("nncf", "modelopt")


def external_quantize(which, fp32_path, calib_path, out_path, head):
    """Runs in the quantizers' environment: numpy, onnx and the quantizer only, no segdeploy."""
    calib = np.load(calib_path)
    started = time.perf_counter()
    if which == "nncf":
        import nncf
        import onnx

        model = onnx.load(fp32_path)
        name = model.graph.input[0].name
        data = nncf.Dataset([{name: calib[i : i + 1]} for i in range(len(calib))])
        quantized = nncf.quantize(
            model,
            data,
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(calib),
            ignored_scope=nncf.IgnoredScope(names=list(head)),
        )
        onnx.save(quantized, out_path)
        version = nncf.__version__
    else:
        import shutil

        import modelopt
        from modelopt.onnx.quantization import quantize

        # ModelOpt rewrites its input in place (shape inference) and writes files next to it
        work = tempfile.mkdtemp(prefix="modelopt-")
        try:
            source = os.path.join(work, "fp32.onnx")
            shutil.copy(fp32_path, source)
            quantize(
                onnx_path=source,
                quantize_mode="int8",
                calibration_data=calib,
                calibration_method="max",
                calibration_eps=["cpu"],
                nodes_to_exclude=["^{}$".format(n) for n in head],
                high_precision_dtype="fp32",
                output_path=out_path,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        version = modelopt.__version__
    print(json.dumps({"seconds": round(time.perf_counter() - started, 1), "version": version}))


def layout(path):
    """Q/DQ facts of a graph: pair count, activation type, how weights are stored."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(path).graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    ops = [n.op_type for n in graph.node]
    activation_types, weights = set(), set()
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        zero = inits.get(node.input[2]) if len(node.input) > 2 else None
        kind = numpy_helper.to_array(zero).dtype.name if zero is not None else "none"
        source = node.input[0]
        q = producer.get(source)
        if source in inits:
            weights.add("INT8 initializer")
        elif q is not None and q.op_type == "QuantizeLinear" and q.input[0] in inits:
            weights.add("FP32 initializer + Q")
        elif kind != "int32":
            activation_types.add(kind)
    return {
        "quantize_linear": ops.count("QuantizeLinear"),
        "dequantize_linear": ops.count("DequantizeLinear"),
        "activation_types": sorted(activation_types),
        "weights": sorted(weights),
    }


def tensorrt_findings(path):
    from segdeploy.engines import onnx_reader, parser_rules

    model = onnx_reader.read_model(path)
    out = {}
    for version in ("8.2", "8.6", "10.8"):
        errors = [str(f) for f in parser_rules.check_model(model, version) if f.level == "error"]
        out[version] = {"errors": len(errors), "first": errors[0][:160] if errors else None}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", default="512x1024")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib", type=int, default=16, help="calibration scenes")
    parser.add_argument("--agreement-frames", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0, help="initial weights and training order")
    parser.add_argument("--quantizer-python", default=None, help="python of .venv-quantizers")
    parser.add_argument("--json", default=None)
    parser.add_argument("--external", nargs=4, metavar=("WHICH", "FP32", "CALIB", "OUT"))
    parser.add_argument("--head", nargs="*", default=[])
    args = parser.parse_args(argv)
    if args.external:
        external_quantize(*args.external, head=args.head)
        return 0

    import onnx
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_precision import trained_regseg
    from bench_runtime import interleave

    from segdeploy import Runtime, models
    from segdeploy.bench.frames import street_scene, write_scenes
    from segdeploy.export import export_onnx, fold_batchnorm, make_card
    from segdeploy.export.onnx_export import save_model, set_card
    from segdeploy.export.quantize import (
        DEFAULT_BUDGET,
        Quantizer,
        budget_figures,
        head_nodes,
        load_frames,
    )

    def log(text):
        print("  " + text, flush=True)

    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.res.split("x"))
    model = trained_regseg(args.train_steps, args.seed, log=log)
    result = {"res": args.res, "quantizers": {}}
    with tempfile.TemporaryDirectory(prefix="compare-quantizers-") as work:
        card = make_card(models.get_spec("regseg"), 19, h, w)
        fp32 = os.path.join(work, "regseg.onnx")
        export_onnx(fold_batchnorm(model), fp32, height=h, width=w, card=card)
        write_scenes(os.path.join(work, "calib"), args.calib + 2, h, w)
        calib, _, description = load_frames(os.path.join(work, "calib"), card, args.calib)
        calib_npy = os.path.join(work, "calib.npy")
        np.save(calib_npy, np.concatenate(calib))
        head = head_nodes(onnx.load(fp32))
        log("calibration: " + description)
        graphs = {}
        started = time.perf_counter()
        Quantizer(fp32, calib, work, log).write(os.path.join(work, "onnxruntime.onnx"))
        import onnxruntime

        graphs["onnxruntime"] = (
            os.path.join(work, "onnxruntime.onnx"),
            {
                "seconds": round(time.perf_counter() - started, 1),
                "version": onnxruntime.__version__,
            },
        )
        for which in EXTERNAL if args.quantizer_python else ():
            out = os.path.join(work, which + ".onnx")
            command = [args.quantizer_python, os.path.abspath(__file__), "--external", which]
            command += [fp32, calib_npy, out, "--head"] + head
            log("quantizing with {} ({})".format(which, args.quantizer_python))
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
            if done.returncode != 0:
                log("{} failed (exit {}); left out".format(which, done.returncode))
                continue
            graphs[which] = (out, json.loads(done.stdout.strip().splitlines()[-1]))
        for which, (path, info) in graphs.items():
            proto = onnx.load(path)
            set_card(proto, dict(card, precision="int8"))  # quantizers drop the metadata
            save_model(proto, path)
            result["quantizers"][which] = dict(
                info, layout=layout(path), tensorrt=tensorrt_findings(path)
            )

        t = args.threads
        runtimes = {
            "fp32 ort": Runtime(fp32, threads=t),
            "fp32 openvino": Runtime(fp32, backend="openvino", precision="f32", threads=t),
        }
        for which, (path, _) in graphs.items():
            runtimes[which + " openvino"] = Runtime(path, backend="openvino", threads=t)
            runtimes[which + " openvino+bf16"] = Runtime(
                path, backend="openvino", precision="bf16", threads=t
            )
            runtimes[which + " ort"] = Runtime(path, threads=t)
        frames = [street_scene(h, w, 1000 + i) for i in range(args.agreement_frames)]
        ref = [runtimes["fp32 ort"].infer(f).copy() for f in frames]
        figures = {
            name: budget_figures(ref, [rt.infer(f).copy() for f in frames], 19, DEFAULT_BUDGET)
            for name, rt in runtimes.items()
        }
        frame = street_scene(h, w, 7)
        out = np.empty((h, w), np.uint8)
        log("timing {} variants x {} rounds".format(len(runtimes), args.rounds))
        timing = interleave(
            {n: (lambda rt=rt: rt.infer(frame, out=out)) for n, rt in runtimes.items()},
            args.rounds,
        )
        for rt in runtimes.values():
            rt.close()
    base = min(timing["fp32 ort"]["median"], timing["fp32 openvino"]["median"])
    result["fp32_classes"] = len(set(int(c) for r in ref for c in np.unique(r)))
    result["rows"] = [
        {
            "variant": name,
            "median_ms": round(timing[name]["median"], 1),
            "vs_fastest_fp32": round(base / timing[name]["median"], 2),
            "agreement": round(figures[name]["label_agreement"], 5),
            "max_iou_drop_points": round(100 * figures[name]["max_iou_drop"], 2),
        }
        for name in runtimes
    ]
    print(
        "RegSeg {} ({} FP32 classes on {} unseen scenes)".format(
            args.res, result["fp32_classes"], args.agreement_frames
        )
    )
    print("| quantizer | seconds | Q/DQ | activations | weights | TensorRT 8.2 / 8.6 / 10.8 |")
    print("|---|---:|---:|---|---|---|")
    for which, q in result["quantizers"].items():
        counts = [q["tensorrt"][v]["errors"] for v in ("8.2", "8.6", "10.8")]
        trt = " / ".join("ok" if n == 0 else "{} errors".format(n) for n in counts)
        print(
            "| {} {} | {} | {} | {} | {} | {} |".format(
                which,
                q["version"],
                q["seconds"],
                q["layout"]["quantize_linear"],
                ", ".join(q["layout"]["activation_types"]),
                ", ".join(q["layout"]["weights"]),
                trt,
            )
        )
    print("| variant | median ms | vs fastest FP32 | agreement | worst class IoU drop |")
    print("|---|---:|---:|---:|---:|")
    for r in result["rows"]:
        print(
            "| {} | {:.1f} | {:.2f}x | {:.3f} % | {:.2f} |".format(
                r["variant"],
                r["median_ms"],
                r["vs_fastest_fp32"],
                100 * r["agreement"],
                r["max_iou_drop_points"],
            )
        )
    for which, q in result["quantizers"].items():
        for version, f in sorted(q["tensorrt"].items()):
            if f["first"]:
                print("{} on TensorRT {}: {}".format(which, version, f["first"]))
    result["loadavg"] = os.getloadavg()
    result["command"] = " ".join(["scripts/compare_quantizers.py"] + list(argv or sys.argv[1:]))
    print(json.dumps({"loadavg": result["loadavg"], "command": result["command"]}))
    if args.json:
        from segdeploy._io import write_json

        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
