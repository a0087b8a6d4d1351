#!/usr/bin/env python3
"""`make demo`: the user's main job on its defaults, saying what it does at each step.

1. segexport: RegSeg (random weights unless --checkpoint) -> folded BN -> verified ONNX ->
   an engine for this machine, with report.json.
2. segbench: PyTorch against the exported engine at two resolutions, one table (+ JSON/CSV/PNG).
3. Runtime: a sample street frame -> label map -> colorized PNG and overlay.
4. segpredict: a short generated street clip -> overlay video and per-stage timings.
"""

import argparse
import os
import sys
import time


def banner(title):
    print("\n" + "=" * 78 + "\n" + title + "\n" + "=" * 78, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out", help="output directory (default: out)")
    parser.add_argument("--model", default="regseg")
    parser.add_argument("--res", default="512x1024", help="export resolution (default 512x1024)")
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args(argv)
    started = time.time()
    export_dir = os.path.join(args.out, "export")

    banner("1. segexport --model {} --res {} --out {}".format(args.model, args.res, export_dir))
    from segdeploy.export.cli import main as segexport

    # An ONNX Runtime engine, so that the paths the README shows exist; plain segexport on a CPU
    # with OpenVINO installed times both and builds the faster (it says which and why).
    argv = ["--model", args.model, "--res", args.res, "--out", export_dir, "--verify-inputs", "2"]
    argv += ["--backend", "onnxruntime"]
    if args.checkpoint:
        argv += ["--checkpoint", args.checkpoint]
    code = segexport(argv)
    if code:
        return code
    engine = os.path.join(export_dir, args.model + ".ort")

    steps_done = [
        "exported and verified {} and built {}".format(
            os.path.join(export_dir, args.model + ".onnx"), engine
        )
    ]
    try:
        from segdeploy.bench.cli import main as segbench
    except ImportError:
        segbench = None
    if segbench is not None:
        bench_dir = os.path.join(args.out, "bench")
        os.makedirs(bench_dir, exist_ok=True)
        banner("2. segbench: PyTorch vs ONNX Runtime at 256x512 and {}".format(args.res))
        code = segbench(
            [
                "--model",
                args.model,
                "--backends",
                "torch,onnxruntime",
                "--res",
                "256x512,{}".format(args.res),
                "--warmup",
                "2",
                "--iters",
                "5",
                "--json",
                os.path.join(bench_dir, "bench.json"),
                "--csv",
                os.path.join(bench_dir, "bench.csv"),
                "--plot",
                os.path.join(bench_dir, "bench.png"),
            ]
        )
        if code:
            return code
        steps_done.append(
            "benchmarked torch vs onnxruntime: {}".format(
                ", ".join(
                    os.path.join(bench_dir, f) for f in ("bench.json", "bench.csv", "bench.png")
                )
            )
        )

    banner("3. Runtime({!r}).infer(frame) on a sample frame".format(engine))
    import cv2

    import segdeploy
    from segdeploy.samples import street_scene, write_clip

    h, w = (int(v) for v in args.res.split("x"))
    frame = street_scene(h * 3 // 4, w * 3 // 4)  # not the network size: the runtime resizes
    with segdeploy.Runtime(engine) as runtime:
        labels = runtime.infer(frame)
        colour = runtime.colorize(labels)
        overlay = runtime.overlay(frame, labels, 0.5)
    # beside the engine, where segexport's `Next:` lines (printed above) read frame.png
    images = (("frame.png", frame), ("labels.png", colour), ("overlay.png", overlay))
    for name, image in images:
        cv2.imwrite(os.path.join(export_dir, name), image)
    print(
        "frame {} -> label map {} {} with {} classes present".format(
            frame.shape, labels.shape, labels.dtype, len(set(labels.ravel().tolist()))
        )
    )
    steps_done.append(
        "segmented a sample frame: {}".format(
            ", ".join(os.path.join(export_dir, name) for name, _ in images)
        )
    )

    clip = os.path.join(args.out, "street.mp4")
    predict_dir = os.path.join(args.out, "predict")
    banner("4. segpredict --engine {} --source {} --out {}".format(engine, clip, predict_dir))
    write_clip(clip, 24, 360, 640, fps=12.0)
    from segdeploy.runtime.predict import main as segpredict

    code = segpredict(["--engine", engine, "--source", clip, "--out", predict_dir])
    if code:
        return code
    steps_done.append(
        "segmented a 24-frame clip: {} (timings in {})".format(
            os.path.join(predict_dir, "street_overlay.mp4"),
            os.path.join(predict_dir, "predict.json"),
        )
    )

    banner("demo done in {:.0f} s".format(time.time() - started))
    for line in steps_done:
        print(" - " + line)
    if not args.checkpoint:
        print(" (random weights: pass CHECKPOINT=path/to/ckpt.pth to `make demo` for real labels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
