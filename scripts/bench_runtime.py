"""Measure Runtime.infer against its performance targets (docs/benchmarks-runtime.md).

    .venv/bin/python scripts/bench_runtime.py [--res 512x1024] [--rounds 15] [--threads 2]
                                              [--json out/bench_runtime.json]

Everything runs in one process, interleaved (one call of each variant per round, in a new random
order each round), so that the host's slow phases hit every variant alike; medians and the
p10-p90 spread are reported. The order is shuffled because a fixed order is biased: ONNX Runtime
and OpenMP worker threads spin for a while after a run, so whichever variant follows another
session's run in a fixed order always shares the two cores with those spinning threads (measured:
a constant +20 % on the variant after "bare").
Variants, all on the same uint8 BGR frame at the network size:

- eager:   PyTorch eager forward of the unfolded model on a prepared tensor (no pre/post work:
           the most favourable timing for PyTorch);
- naive:   what a user writes by hand: torch.onnx.export of the unfolded model (logits out),
           ONNX Runtime with default options, numpy pre-processing, numpy argmax afterwards;
- bare:    ``InferenceSession.run`` of the runtime's own session (same graph, same threads:
           BN folded, argmax in the graph) with a prepared input: the backend call alone;
- runtime: segdeploy.Runtime.infer(frame), frame in, label map out.
Then the ONNX Runtime optimization levels, interleaved the same way.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def _spread(samples):
    a = np.asarray(samples)
    return {
        "median": float(np.median(a)),
        "p10": float(np.percentile(a, 10)),
        "p90": float(np.percentile(a, 90)),
        "min": float(a.min()),
        "n": int(a.size),
    }


def interleave(variants, rounds, warmup=2, seed=0):
    """{name: fn} -> {name: spread of ms}, one call of each per round in a shuffled order."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in variants}
    rng = np.random.RandomState(seed)
    names = list(variants)
    for _ in range(rounds):
        for name in rng.permutation(names):
            fn = variants[name]
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: _spread(s) for name, s in samples.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", default="512x1024")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="regseg")
    parser.add_argument("--json", default=None, help="write the figures as JSON")
    parser.add_argument("--out", default=None, help="directory for bench_runtime.json")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.res.split("x"))

    import onnxruntime as ort
    import torch

    import segdeploy
    from segdeploy import models
    from segdeploy.bench.counting import complexity
    from segdeploy.bench.harness import environment, sample_frame
    from segdeploy.bench.peak import measure_cpu_fp32_gflops
    from segdeploy.export import export_onnx, fold_batchnorm, make_card

    torch.set_num_threads(args.threads)
    spec = models.get_spec(args.model)
    model = models.build(args.model).eval()
    workdir = tempfile.mkdtemp(prefix="bench_runtime-")
    ours = os.path.join(workdir, "ours.onnx")
    naive_path = os.path.join(workdir, "naive.onnx")
    card = make_card(spec, spec.num_classes, height, width, "labels")
    export_onnx(fold_batchnorm(model), ours, height=height, width=width, card=card)
    x = torch.zeros(1, 3, height, width)
    with torch.no_grad():  # the user's export: unfolded, logits out
        torch.onnx.export(
            model,
            (x,),
            naive_path,
            dynamo=False,
            opset_version=13,
            input_names=["image"],
            output_names=["logits"],
        )

    frame = sample_frame(height, width)
    mean, std = np.float32(spec.mean), np.float32(spec.std)

    def prepare_by_hand(f):  # what a user writes: BGR->RGB, scale, normalize, CHW
        rgb = f[:, :, ::-1].astype(np.float32) / 255.0
        return np.ascontiguousarray(((rgb - mean) / std).transpose(2, 0, 1)[None])

    naive_options = ort.SessionOptions()
    naive_options.intra_op_num_threads = args.threads
    naive = ort.InferenceSession(naive_path, naive_options, providers=["CPUExecutionProvider"])

    def naive_step():
        logits = naive.run(None, {"image": prepare_by_hand(frame)})[0]
        return logits[0].argmax(0).astype(np.uint8)

    prepared = prepare_by_hand(frame)
    tensor = torch.from_numpy(prepared.copy())

    def eager_step():
        with torch.inference_mode():
            return model(tensor)

    runtime = segdeploy.Runtime(ours, device="cpu", threads=args.threads)
    bare = runtime.engine._session  # the very session Runtime.infer calls
    out = np.empty((height, width), np.uint8)
    agreement = float((runtime.infer(frame) == naive_step()).mean())

    print("measuring {} rounds, interleaved ...".format(args.rounds), file=sys.stderr)
    main_runs = interleave(
        {
            "eager": eager_step,
            "naive": naive_step,
            "bare": lambda: bare.run(None, {"image": prepared}),
            "runtime": lambda: runtime.infer(frame, out=out),
        },
        args.rounds,
    )

    levels = {}
    for level in ("basic", "extended", "all"):
        levels[level] = segdeploy.Runtime(
            ours, device="cpu", threads=args.threads, graph_optimization=level
        )
    level_runs = interleave(
        {name: (lambda rt=rt: rt.infer(frame, out=out)) for name, rt in levels.items()},
        max(5, args.rounds // 2),
    )
    for rt in levels.values():
        rt.close()

    counted = complexity(model, (height, width))
    peak = measure_cpu_fp32_gflops()
    floor = 2.0 * counted.macs / (peak * 1e9) * 1e3
    med = {k: v["median"] for k, v in main_runs.items()}
    result = {
        "command": "python scripts/bench_runtime.py " + " ".join(argv or sys.argv[1:]),
        "model": args.model,
        "resolution": [height, width],
        "threads": args.threads,
        "environment": environment(),
        "macs": counted.macs,
        "peak_gflops_measured": peak,
        "floor_ms": floor,
        "runs_ms": main_runs,
        "optimization_levels_ms": level_runs,
        "label_agreement_runtime_vs_naive": agreement,
        "targets": {
            "speedup_vs_eager (>= 1.6)": med["eager"] / med["runtime"],
            "runtime_overhead_vs_bare (<= 5 %)": med["runtime"] / med["bare"] - 1.0,
            "network_floor_share (>= 80 %)": floor / med["bare"],
            "runtime_vs_naive (<= 1.0)": med["runtime"] / med["naive"],
        },
    }
    runtime.close()
    for name, s in main_runs.items():
        print(
            "{:8s} median {:7.1f} ms  (p10 {:6.1f}, p90 {:6.1f}, min {:6.1f}, n {})".format(
                name, s["median"], s["p10"], s["p90"], s["min"], s["n"]
            )
        )
    for name, s in level_runs.items():
        print(
            "opt {:9s} median {:7.1f} ms  (p10 {:6.1f}, p90 {:6.1f})".format(
                name, s["median"], s["p10"], s["p90"]
            )
        )
    print(
        "multiply-adds {:.2f} G, measured peak {:.0f} GFLOP/s, floor {:.1f} ms".format(
            counted.macs / 1e9, peak, floor
        )
    )
    for name, value in result["targets"].items():
        print("{:36s} {:.3f}".format(name, value))
    print("label agreement runtime vs naive: {:.4f}".format(agreement))
    if args.out and not args.json:
        os.makedirs(args.out, exist_ok=True)
        args.json = os.path.join(args.out, "bench_runtime.json")
    if args.json:
        from segdeploy._io import write_json

        write_json(args.json, result)
        print("wrote {}".format(args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
