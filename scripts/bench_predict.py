#!/usr/bin/env python3
"""Does segpredict hide decoding and encoding behind inference? (docs/benchmarks.md)

    python scripts/bench_predict.py [--engine out/regseg.ort] [--frames 60] [--rounds 2]

Writes a ``--frames``-frame 720x1280 video of smooth synthetic scenes, then alternates, in one
process: ``Runtime.infer`` alone on the decoded frames (the engine's own per-frame time, pre- and
post-processing included), and ``segpredict`` on the video file (decode, infer, overlay, encode,
pipelined). The target is an end-to-end rate of at least 0.9 x 1 / (per-frame time). Without
``--engine`` it exports RegSeg at 512x1024 (random weights: speed only) into ``--out``.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def make_video(path, frames, height=720, width=1280, fps=30.0):
    import cv2

    from segdeploy.bench.harness import sample_frame

    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for i in range(frames):
        writer.write(sample_frame(height, width, seed=i % 10))
    writer.release()


def engine_only(engine, frames, threads):
    """Median ms of Runtime.infer over the frames (one warm-up call)."""
    import segdeploy

    with segdeploy.Runtime(engine, threads=threads) as runtime:
        runtime.infer(frames[0])
        times = []
        for frame in frames:
            start = time.perf_counter()
            runtime.infer(frame)
            times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", help="engine to use (default: export RegSeg 512x1024 into --out)")
    p.add_argument("--out", default=os.path.join("out", "bench_predict"))
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import cv2

    from segdeploy.runtime.predict import parser as predict_parser
    from segdeploy.runtime.predict import predict

    os.makedirs(args.out, exist_ok=True)
    engine = args.engine
    if engine is None:
        from segdeploy.export.cli import main as segexport

        engine = os.path.join(args.out, "regseg.ort")
        if not os.path.isfile(engine):
            argv = ["--model", "regseg", "--res", "512x1024", "--out", args.out]
            argv += ["--backend", "onnxruntime"]  # the engine this script names
            if segexport(argv + ["--verify-inputs", "1"]) != 0:
                return 1
    clip = os.path.join(args.out, "clip.mp4")
    make_video(clip, args.frames)
    capture = cv2.VideoCapture(clip)
    decoded = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame)
    capture.release()
    rows = []
    for r in range(args.rounds):
        alone_ms = engine_only(engine, decoded, args.threads)
        pargs = predict_parser().parse_args(
            ["--engine", engine, "--source", clip, "--out", os.path.join(args.out, "pred"), "-q"]
            + ["--threads", str(args.threads)]
        )
        report = predict(pargs, stream=sys.stderr)
        ratio = report["fps_end_to_end"] * alone_ms / 1e3
        rows.append(
            {
                "round": r,
                "engine_ms": round(alone_ms, 1),
                "engine_fps": round(1e3 / alone_ms, 3),
                "fps_end_to_end": report["fps_end_to_end"],
                "ratio": round(ratio, 3),
                "stages": report["stages"],
            }
        )
        print(
            "round {}: Runtime.infer alone {:.1f} ms ({:.2f} fps); segpredict {:.2f} fps end to "
            "end = {:.3f} x the engine's rate".format(
                r, alone_ms, 1e3 / alone_ms, report["fps_end_to_end"], ratio
            )
        )
    summary = {
        "machine": "{} {} cores".format(platform.processor() or platform.machine(), os.cpu_count()),
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "engine": engine,
        "video": "{} frames 720x1280 mp4v".format(len(decoded)),
        "rounds": rows,
        "ratio_median": float(np.median([r["ratio"] for r in rows])),
        "command": "python scripts/bench_predict.py " + " ".join(argv or sys.argv[1:]),
    }
    with open(os.path.join(args.out, "bench_predict.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print("median ratio {:.3f} (target >= 0.9)".format(summary["ratio_median"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
