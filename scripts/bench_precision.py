"""Precisions and CPU engines side by side: the Performance table of issue 12 (docs/benchmarks.md).

    PYTHONPATH=$PWD python scripts/bench_precision.py [--res 512x1024,1024x2048] [--rounds 10]
                                                       [--threads 2] [--json out/precision.json]

RegSeg trained for ``--train-steps`` AdamW steps (default 150, batch 2, 256x512) on synthetic
street scenes with their drawn labels (``segdeploy.bench.frames``: sky, buildings, road, sidewalk,
cars, trees, poles), so its label maps are those of a network that learned something: classes
with margins, as a checkpoint has (``--train-steps 0``: He-initialized weights with random
BatchNorm statistics instead, which are chaotic: quantization noise flips ~20 % of the labels).
The number of FP32 classes on the agreement frames is reported. Frames: other synthetic scenes.
Every variant takes the same uint8 BGR frame and returns a label map, with
2 threads, all in one process, interleaved (one call of each per round, shuffled order):

- torch-eager:    PyTorch eager (BN folded, channels_last) through Runtime;
- torch-compile:  the same module after torch.compile;
- ort-fp32:       segdeploy's ONNX Runtime engine (the exported FP32 graph, Runtime);
- openvino-fp32:  the same graph in OpenVINO, precision f32;
- segdeploy-bf16: the same graph in OpenVINO, precision bf16 (where the CPU has it);
- segdeploy-int8-ort / segdeploy-int8-openvino: the INT8 Q/DQ graph segexport writes (calibrated
  on other scenes, budget-checked), in ONNX Runtime and in OpenVINO;
- segdeploy-int8+bf16: that graph in OpenVINO with its unquantized layers in bf16 (bf16 CPUs).

Each variant's label agreement with ort-fp32 and its worst class IoU drop (the budget of
segexport --int8: 99 % / 2 points) are measured on held-out scenes. Ratios are taken
against the fastest FP32 peer measured in the same run.
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


def regseg_with_varied_weights(seed=0):
    import torch

    from segdeploy import models
    from segdeploy.models.golden import vary_weights_

    torch.manual_seed(seed)
    return vary_weights_(models.build("regseg").eval())


def trained_regseg(steps, seed=0, log=print):
    """RegSeg built and trained from ``seed``: the same network on every run with that seed."""
    import torch

    from segdeploy import models

    torch.manual_seed(seed)  # the initial weights too: INT8 sensitivity differs between them
    return train_on_scenes(models.build("regseg"), steps, seed=seed, log=log)


def train_on_scenes(model, steps, height=256, width=512, seed=0, log=print):
    """Train ``model`` on synthetic street scenes and their labels; returns it in eval mode."""
    import torch

    from segdeploy import models
    from segdeploy.bench.frames import street_scene
    from segdeploy.export import make_card
    from segdeploy.export.verify import normalize

    card = make_card(models.get_spec("regseg"), 19, height, width)

    def batch(i):
        pairs = [street_scene(height, width, 10000 + 2 * i + j, True) for j in range(2)]
        x = np.concatenate([normalize(f[:, :, ::-1], card) for f, _ in pairs])
        y = np.stack([lab for _, lab in pairs]).astype(np.int64)
        return torch.from_numpy(x), torch.from_numpy(y)

    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    start = time.perf_counter()
    for i in range(steps):
        x, y = batch(i)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i % 50 == 0 or i == steps - 1:
            log(
                "train step {}/{}: loss {:.3f} ({:.0f} s)".format(
                    i + 1, steps, loss.item(), time.perf_counter() - start
                )
            )
    return model.eval()


def run_resolution(height, width, args, workdir, log, trained=None):
    import torch

    from segdeploy import Runtime, models
    from segdeploy.bench.frames import street_scene, write_scenes
    from segdeploy.export import export_onnx, fold_batchnorm, make_card
    from segdeploy.export.quantize import DEFAULT_BUDGET, load_frames, quantize_with_budget
    from segdeploy.runtime.torch_backend import TorchEngine

    torch.set_num_threads(args.threads)
    spec = models.get_spec("regseg")
    if trained is not None:
        model = trained
    else:
        model = regseg_with_varied_weights()
    card = make_card(spec, 19, height, width)
    onnx_path = os.path.join(workdir, "regseg_{}x{}.onnx".format(height, width))
    export_onnx(fold_batchnorm(model), onnx_path, height=height, width=width, card=card)
    calib_dir = os.path.join(workdir, "calib_{}x{}".format(height, width))
    # load_frames holds out a quarter of the folder (2..16): size the folder so that is --heldout
    write_scenes(calib_dir, max(args.calib + args.heldout, 4 * args.heldout), height, width)
    calib, heldout, description = load_frames(calib_dir, card, args.calib)
    int8_path = os.path.join(workdir, "regseg_{}x{}.int8.onnx".format(height, width))
    started = time.perf_counter()
    quant = quantize_with_budget(
        onnx_path,
        int8_path,
        calib,
        heldout,
        19,
        DEFAULT_BUDGET,
        threads=args.threads,
        log=log,
        max_fp32_layers=args.max_fp32_layers,
    )
    quant_s = time.perf_counter() - started
    log("INT8: " + quant["verdict"][:300])
    import onnx

    from segdeploy.export.onnx_export import save_model, set_card

    proto = onnx.load(int8_path)
    set_card(proto, dict(card, precision="int8"))
    save_model(proto, int8_path)

    t = args.threads
    runtimes = {
        "torch-eager": Runtime(TorchEngine(model, height=height, width=width, threads=t)),
    }
    compiled = TorchEngine(model, height=height, width=width, threads=t)
    compiled.model = torch.compile(compiled.model)
    runtimes["torch-compile"] = Runtime(compiled)
    runtimes["ort-fp32"] = Runtime(onnx_path, threads=t)
    runtimes["openvino-fp32"] = Runtime(onnx_path, backend="openvino", precision="f32", threads=t)
    try:
        runtimes["segdeploy-bf16"] = Runtime(
            onnx_path, backend="openvino", precision="bf16", threads=t
        )
    except Exception as exc:  # no native bf16 on this CPU
        log("bf16 skipped: {}".format(exc))
    runtimes["segdeploy-int8-ort"] = Runtime(int8_path, threads=t)
    runtimes["segdeploy-int8-openvino"] = Runtime(int8_path, backend="openvino", threads=t)
    if "segdeploy-bf16" in runtimes:
        runtimes["segdeploy-int8+bf16"] = Runtime(
            int8_path, backend="openvino", precision="bf16", threads=t
        )

    # agreement with ort-fp32 on scenes neither calibrated nor held out during quantization
    frames = [street_scene(height, width, 1000 + i) for i in range(args.agreement_frames)]
    ref = [runtimes["ort-fp32"].infer(f).copy() for f in frames]
    classes = sorted(set(int(c) for r in ref for c in np.unique(r)))
    from segdeploy.export.quantize import budget_figures

    budget = {
        name: budget_figures(ref, [rt.infer(f).copy() for f in frames], 19, DEFAULT_BUDGET)
        for name, rt in runtimes.items()
    }
    agreement = {name: f["label_agreement"] for name, f in budget.items()}
    frame = street_scene(height, width, 7)
    out = np.empty((height, width), np.uint8)
    variants = {name: (lambda rt=rt: rt.infer(frame, out=out)) for name, rt in runtimes.items()}
    log("timing {} variants x {} rounds at {}x{}".format(len(variants), args.rounds, height, width))
    timing = interleave(variants, args.rounds)
    for rt in runtimes.values():
        rt.close()
    fp32_peers = ["torch-eager", "torch-compile", "ort-fp32", "openvino-fp32"]
    fastest_fp32 = min(fp32_peers, key=lambda n: timing[n]["median"])
    base = timing[fastest_fp32]["median"]
    rows = []
    for name in variants:
        rows.append(
            {
                "variant": name,
                "median_ms": round(timing[name]["median"], 1),
                "p10_ms": round(timing[name]["p10"], 1),
                "p90_ms": round(timing[name]["p90"], 1),
                "speedup_vs_fastest_fp32": round(base / timing[name]["median"], 2),
                "agreement_vs_fp32": round(agreement[name], 5),
                "max_iou_drop_points": round(100 * budget[name]["max_iou_drop"], 2),
                "within_budget": budget[name]["within_budget"],
            }
        )
    return {
        "res": "{}x{}".format(height, width),
        "fp32_classes": len(classes),
        "weights": "trained {} steps on synthetic scenes".format(args.train_steps)
        if args.train_steps
        else "He init + random BatchNorm statistics",
        "fastest_fp32_peer": fastest_fp32,
        "int8": {
            "verdict": quant["verdict"],
            "within_budget": quant["within_budget"],
            "fp32_layers": quant["fp32_layers"],
            "calibration": description,
            "quantize_seconds": round(quant_s, 1),
        },
        "rows": rows,
    }


def table(result):
    lines = [
        "RegSeg {} ({} FP32 classes on the agreement frames); fastest FP32 peer: {}".format(
            result["res"], result["fp32_classes"], result["fastest_fp32_peer"]
        ),
        "| variant | median ms | p10-p90 ms | speed-up vs fastest FP32 | label agreement vs FP32 "
        "| worst class IoU drop | within budget |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        lines.append(
            "| {} | {:.1f} | {:.1f}-{:.1f} | {:.2f}x | {:.3f} % | {:.2f} | {} |".format(
                r["variant"],
                r["median_ms"],
                r["p10_ms"],
                r["p90_ms"],
                r["speedup_vs_fastest_fp32"],
                100 * r["agreement_vs_fp32"],
                r["max_iou_drop_points"],
                "yes" if r["within_budget"] else "no",
            )
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", default="512x1024,1024x2048")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib", type=int, default=16, help="calibration scenes")
    parser.add_argument("--heldout", type=int, default=6, help="scenes held out for the budget")
    parser.add_argument("--agreement-frames", type=int, default=8)
    parser.add_argument(
        "--max-fp32-layers", type=int, default=None, help="default: segexport's (half the nodes)"
    )
    parser.add_argument("--train-steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0, help="initial weights and training order")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import onnxruntime
    import openvino
    import torch

    import segdeploy
    from segdeploy.engines.onnxruntime_builder import cpu_isa, cpu_name

    def log(text):
        print("  " + text, flush=True)

    results = []
    trained = None
    if args.train_steps:  # once, shared by every resolution (RegSeg is fully convolutional)
        torch.set_num_threads(args.threads)
        trained = trained_regseg(args.train_steps, args.seed, log=log)
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as workdir:
        for item in args.res.split(","):
            h, w = (int(v) for v in item.split("x"))
            load_before = os.getloadavg()
            result = run_resolution(h, w, args, workdir, log, trained)
            result["loadavg_before"] = load_before
            result["loadavg_after"] = os.getloadavg()
            results.append(result)
            print(table(result), flush=True)
            print(
                "load average before/after: {} / {}".format(
                    result["loadavg_before"], result["loadavg_after"]
                ),
                flush=True,
            )
    env = {
        "cpu": cpu_name(),
        "isa": cpu_isa(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "segdeploy": segdeploy.__version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__,
        "command": " ".join(["scripts/bench_precision.py"] + list(argv or sys.argv[1:])),
    }
    print(json.dumps(env))
    if args.json:
        from segdeploy._io import write_json

        write_json(args.json, {"environment": env, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
