"""Measure segeval's own overhead (loading, label mapping, confusion) against inference.

    .venv/bin/python scripts/bench_eval.py [--images 8] [--res 1024x2048] [--engine FILE]
                                           [--workers 2] [--threads 2] [--json out/bench_eval.json]

Writes a synthetic Cityscapes-layout dataset of ``--images`` frames at full Cityscapes size
(1024x2048 PNGs, labelIds PNGs) under ``--out``, and, unless ``--engine`` is given, exports the
zoo's RegSeg with the deterministic golden weights at ``--res`` to ONNX (needs the [export]
extra). Then, in one process:

1. per stage, serially, one image at a time and interleaved (load, infer, confusion in turn for
   each image, so the host's slow phases hit every stage alike): the median ms of
   ``dataset.load`` (PNG decode of image and label, value check, labelId -> trainId mapping),
   ``Runtime.infer`` and ``ConfusionMatrix.update``;
2. the whole evaluation (``segdeploy.eval.compare``) with loading in the calling thread
   (workers 0) and in worker threads (``--workers``), alternating, twice each: its wall time
   against the time spent inside ``infer``. (wall - infer) / infer is the overhead a user sees.
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def make_dataset(root, count, height, width):
    """leftImg8bit / gtFine labelIds PNGs of ``count`` frames; kept and reused if present."""
    import cv2

    from segdeploy.bench.harness import sample_frame

    rng = np.random.RandomState(0)
    for i in range(count):
        stem = "benchcity_{:06d}_000019".format(i)
        image_path = os.path.join(
            root, "leftImg8bit", "val", "benchcity", stem + "_leftImg8bit.png"
        )
        label_path = os.path.join(root, "gtFine", "val", "benchcity", stem + "_gtFine_labelIds.png")
        if os.path.exists(image_path) and os.path.exists(label_path):
            continue
        for path in (image_path, label_path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        frame = sample_frame(height, width, i)
        # Label ids in large regions, as street scenes have them (road, buildings, sky, cars).
        labels = np.full((height, width), 7, np.uint8)
        for _ in range(40):
            y, x = rng.randint(0, height - 16), rng.randint(0, width - 16)
            dy, dx = rng.randint(16, height // 3), rng.randint(16, width // 4)
            labels[y : y + dy, x : x + dx] = rng.randint(0, 34)
        cv2.imwrite(image_path, frame)
        cv2.imwrite(label_path, labels)


def export_regseg(path, height, width):
    """The zoo's RegSeg with golden weights, labels in the graph, as ONNX with its card."""
    from segdeploy import models
    from segdeploy.export import export_onnx, fold_batchnorm
    from segdeploy.models.golden import deterministic_state
    from segdeploy.runtime.torch_backend import _card_for

    model = models.build("regseg", num_classes=19).eval()
    model.load_state_dict(deterministic_state(model))
    model = fold_batchnorm(model)
    card = _card_for(models.get_spec("regseg"), 19, height, width, "labels")
    export_onnx(model, path, height=height, width=width, card=card)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--res", default="1024x2048", help="network input HEIGHTxWIDTH")
    p.add_argument("--engine", help="engine to run (default: RegSeg exported here at --res)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--out", default="out/bench_eval")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)

    import segdeploy
    from segdeploy._io import write_json
    from segdeploy.engines.profiles import parse_hw
    from segdeploy.eval import ConfusionMatrix, compare, open_dataset

    height, width = parse_hw(args.res)
    os.makedirs(args.out, exist_ok=True)
    load_before = os.getloadavg()
    root = os.path.join(args.out, "cityscapes")
    make_dataset(root, args.images, 1024, 2048)
    engine = args.engine
    if engine is None:
        engine = os.path.join(args.out, "regseg_{}x{}.onnx".format(height, width))
        if not os.path.exists(engine):
            print("exporting RegSeg at {}x{} to {} ...".format(height, width, engine), flush=True)
            export_regseg(engine, height, width)
    dataset = open_dataset("cityscapes", root)
    runtime = segdeploy.Runtime(engine, threads=args.threads)

    # 1. stages, serially and interleaved per image
    stages = {"load": [], "infer": [], "confusion": []}
    confusion = ConfusionMatrix(19)
    frame, target = dataset.load(dataset.samples[0])
    runtime.infer(frame)  # warm-up
    for sample in dataset.samples:
        t0 = time.perf_counter()
        frame, target = dataset.load(sample)
        t1 = time.perf_counter()
        labels = runtime.infer(frame)
        t2 = time.perf_counter()
        confusion.update(target, labels)
        t3 = time.perf_counter()
        stages["load"].append(1e3 * (t1 - t0))
        stages["infer"].append(1e3 * (t2 - t1))
        stages["confusion"].append(1e3 * (t3 - t2))
    median = {k: float(np.median(v)) for k, v in stages.items()}

    # 2. the whole evaluation, loading inline and in threads, alternating
    runs = {"workers 0": [], "workers {}".format(args.workers): []}
    for _ in range(2):
        for workers in (0, args.workers):
            result = compare([runtime], dataset, workers=workers, progress=False)
            t = result.timing
            runs["workers {}".format(workers)].append(
                {"wall_s": t["wall_s"], "infer_s": t["infer_s"], "metrics_s": t["metrics_s"]}
            )
    runtime.close()
    load_after = os.getloadavg()

    print(
        "segeval overhead, {} images of 1024x2048, engine {} at {}x{}, {} ORT threads".format(
            args.images, os.path.basename(engine), height, width, args.threads
        )
    )
    print("host load average before/after: {:.1f} / {:.1f}".format(load_before[0], load_after[0]))
    print("stage (serial, median ms/image)   ms      % of inference")
    for k in ("load", "confusion", "infer"):
        print("  {:<30} {:8.1f} {:8.1f} %".format(k, median[k], 100 * median[k] / median["infer"]))
    own = median["load"] + median["confusion"]
    print("  {:<30} {:8.1f} {:8.1f} %".format("load + confusion", own, 100 * own / median["infer"]))
    print("whole evaluation                 wall s  infer s  (wall-infer)/infer")
    summary = {}
    for name, rows in runs.items():
        ratios = [(r["wall_s"] - r["infer_s"]) / r["infer_s"] for r in rows]
        summary[name] = {"runs": rows, "overhead": ratios}
        for r, ratio in zip(rows, ratios):
            print(
                "  {:<30} {:7.2f} {:8.2f}  {:6.1f} %".format(
                    name, r["wall_s"], r["infer_s"], 100 * ratio
                )
            )
    if args.json:
        write_json(
            args.json,
            {
                "images": args.images,
                "engine": engine,
                "input": [height, width],
                "threads": args.threads,
                "stage_ms_median": median,
                "stage_ms": stages,
                "evaluation": summary,
                "load_average": [load_before[0], load_after[0]],
                "segdeploy": segdeploy.__version__,
                "numpy": np.__version__,
            },
        )
        print("wrote " + args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
