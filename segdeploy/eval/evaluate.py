"""Run engines over a dataset: loader threads, exact confusion matrices, engine agreement.

    from segdeploy.eval import evaluate, open_dataset
    report = evaluate("out/regseg.onnx", open_dataset("cityscapes", "data/cityscapes"))
    print(report.miou)

Images are read and decoded (and predictions encoded and written) by ``workers`` threads while
the calling thread runs inference: OpenCV's decoders and the engines release the GIL, so loading
overlaps inference and the evaluation's visible cost is what the calling thread spends outside
``infer``: label mapping, the confusion update and the agreement counts. Python 3.6 compatible.
"""

import collections
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._cli import plural
from .._deps import require
from .._io import write_bytes
from ..errors import SegDeployError
from .data import DatasetError, EvalDataset, open_dataset
from .metrics import ConfusionMatrix


class Report(object):
    """One engine on one dataset: the confusion matrix and every score read from it."""

    def __init__(self, name, engine, dataset, confusion, images, timing):
        self.name = name
        self.engine = engine  # dict: path, backend, precision, input_size
        self.dataset = dataset  # dict: name, root, split
        self.confusion = confusion
        self.class_names = list(dataset["class_names"])
        self.images = images
        self.timing = timing

    @property
    def matrix(self):
        return self.confusion.matrix

    @property
    def iou(self):
        return self.confusion.iou

    @property
    def miou(self):
        return self.confusion.miou

    @property
    def pixel_accuracy(self):
        return self.confusion.pixel_accuracy

    @property
    def mean_accuracy(self):
        return self.confusion.mean_accuracy

    @property
    def fwiou(self):
        return self.confusion.fwiou

    def class_iou(self):
        """{class name: IoU or None (no IoU: absent from the labels and never predicted)}."""
        return {n: (None if v != v else v) for n, v in zip(self.class_names, self.iou.tolist())}

    def to_dict(self):
        return {
            "name": self.name,
            "engine": self.engine,
            "images": self.images,
            "miou": _nan_none(self.miou),
            "pixel_accuracy": _nan_none(self.pixel_accuracy),
            "mean_accuracy": _nan_none(self.mean_accuracy),
            "fwiou": _nan_none(self.fwiou),
            "class_iou": self.class_iou(),
            "labelled_pixels": self.confusion.labelled_pixels,
            "confusion": self.matrix.tolist(),
            "timing": self.timing,
        }

    def __repr__(self):
        return "Report({}: mIoU {:.2f} on {} {} images)".format(
            self.name, 100 * self.miou, self.images, self.dataset["name"]
        )


class Comparison(object):
    """Several engines on the same images: their reports, and each pair's agreement."""

    def __init__(self, reports, pairs, dataset, timing, warnings=()):
        self.reports = reports
        self.pairs = pairs
        self.dataset = dataset
        self.timing = timing
        self.warnings = list(warnings)

    def to_dict(self):
        return {
            "dataset": {k: v for k, v in self.dataset.items() if k != "class_names"},
            "class_names": list(self.dataset["class_names"]),
            "engines": [r.to_dict() for r in self.reports],
            "comparisons": [p.to_dict(self.reports) for p in self.pairs],
            "timing": self.timing,
            "warnings": self.warnings,
        }


class PairAgreement(object):
    """How often engines ``a`` and ``b`` give the same label, overall and per image."""

    def __init__(self, a, b):
        self.a = a
        self.b = b
        self.equal = 0
        self.pixels = 0
        self.equal_labelled = 0
        self.labelled = 0
        self.per_image = []  # (sample name, fraction of pixels where they disagree)

    def update(self, name, pred_a, pred_b, valid):
        same = pred_a == pred_b
        equal = int(np.count_nonzero(same))
        self.equal += equal
        self.pixels += same.size
        self.equal_labelled += int(np.count_nonzero(same & valid))
        self.labelled += int(np.count_nonzero(valid))
        self.per_image.append((name, 1.0 - float(equal) / same.size))

    @property
    def agreement(self):
        return float(self.equal) / self.pixels if self.pixels else float("nan")

    @property
    def agreement_labelled(self):
        return float(self.equal_labelled) / self.labelled if self.labelled else float("nan")

    def most_disagreeing(self, top=5):
        ranked = sorted(self.per_image, key=lambda item: -item[1])
        return [(n, d) for n, d in ranked[:top] if d > 0]

    def to_dict(self, reports, top=5):
        a, b = reports[self.a], reports[self.b]
        return {
            "a": a.name,
            "b": b.name,
            "miou_difference": _nan_none(b.miou - a.miou),
            "agreement": _nan_none(self.agreement),
            "agreement_labelled": _nan_none(self.agreement_labelled),
            "most_disagreeing": [
                {"image": n, "disagreement": d} for n, d in self.most_disagreeing(top)
            ],
        }


def _nan_none(value):
    value = float(value)
    return None if value != value else value


class Progress(object):
    """A tqdm bar on a terminal; plain lines (about ten per run) in logs; nothing if disabled."""

    def __init__(self, total, names, enabled=True, stream=None):
        self.total = total
        self.names = names
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self._bar = None
        self._start = time.perf_counter()
        self._every = max(1, total // 10)
        if enabled and hasattr(self.stream, "isatty") and self.stream.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, unit="img", file=self.stream, leave=False)

    def update(self, done, mious):
        if not self.enabled:
            return
        text = " / ".join("{:.2f}".format(100 * m) if m == m else "-" for m in mious)
        if self._bar is not None:
            self._bar.set_postfix_str("mIoU " + text, refresh=False)
            self._bar.update(1)
        elif done % self._every == 0 or done == self.total:
            rate = done / max(time.perf_counter() - self._start, 1e-9)
            print(
                "segeval: {}/{} images, {:.2f} images/s, running mIoU {}".format(
                    done, self.total, rate, text
                ),
                file=self.stream,
                flush=True,
            )

    def close(self):
        if self._bar is not None:
            self._bar.close()


def _open_runtimes(engines, input_size, options):
    from ..runtime import Runtime

    runtimes, owned = [], []
    try:
        for engine in engines:
            if isinstance(engine, Runtime):
                runtimes.append(engine)
            else:
                rt = Runtime(engine, input_size=input_size, **options)
                runtimes.append(rt)
                owned.append(rt)
    except BaseException:
        for rt in owned:
            rt.close()
        raise
    return runtimes, owned


def _names(runtimes):
    names = []
    for rt in runtimes:
        base = os.path.basename(str(getattr(rt.engine, "path", "") or rt.backend))
        name, i = base, 2
        while name in names:
            name = "{}#{}".format(base, i)
            i += 1
        names.append(name)
    return names


def _engine_info(rt):
    card = rt.card or {}
    return {
        "path": str(getattr(rt.engine, "path", "")),
        "backend": rt.backend,
        "precision": card.get("precision", "fp32"),
        "model": card.get("model", {}).get("name"),
        "input_size": list(rt.input_size),
        "head": getattr(rt, "head", "graph"),
    }


def _timed_load(dataset, sample):
    start = time.perf_counter()
    frame, target = dataset.load(sample)
    return frame, target, time.perf_counter() - start


def _write_png(path, image):
    cv2 = require("cv2", "--save-predictions")
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise SegDeployError("could not encode the prediction PNG {}".format(path))
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    write_bytes(path, data.tobytes())


def evaluate(runtime, dataset, **kwargs):
    """Evaluate one engine: a Runtime or an engine path -> ``Report`` (``report.miou`` etc.).

    ``dataset``: an opened dataset (``open_dataset``) or a name with ``root=`` / ``split=``.
    Other keyword arguments as for ``compare``.
    """
    return compare([runtime], dataset, **kwargs).reports[0]


def compare(
    runtimes,
    dataset,
    root=None,
    split=None,
    limit=None,
    workers=2,
    progress=True,
    save_predictions=None,
    input_size=None,
    runtime_options=None,
    stream=None,
):
    """Evaluate several engines on the same images -> ``Comparison``.

    ``runtimes``: Runtime objects or engine paths (opened here with ``input_size`` and
    ``runtime_options``, and closed again). ``limit``: the first N images only. ``workers``:
    loader threads (0: load in the calling thread). ``save_predictions``: a directory that
    receives each engine's label maps as PNGs in the dataset's own id space (Cityscapes: label
    ids, in the layout the official script reads); with several engines one sub-directory each.
    """
    if not isinstance(dataset, EvalDataset):
        dataset = open_dataset(dataset, root, split)
    if not runtimes:
        raise SegDeployError("give at least one engine to evaluate")
    if limit is not None and limit < 1:
        raise SegDeployError("--limit must be at least 1, got {}".format(limit))
    if workers < 0:
        raise SegDeployError("--workers must be 0 or more, got {}".format(workers))
    samples = dataset.samples[:limit] if limit else list(dataset.samples)
    runtimes, owned = _open_runtimes(runtimes, input_size, dict(runtime_options or {}))
    try:
        return _run(runtimes, dataset, samples, workers, progress, save_predictions, stream)
    finally:
        for rt in owned:
            rt.close()


def _run(runtimes, dataset, samples, workers, progress, save_dir, stream):
    names = _names(runtimes)
    k = dataset.num_classes
    for name, rt in zip(names, runtimes):
        if rt.num_classes != k:
            raise SegDeployError(
                "engine {} predicts {} classes but the {} dataset has {}; evaluate it on "
                "the dataset it was trained for".format(name, rt.num_classes, dataset.name, k)
            )
    warnings = []
    for name, rt in zip(names, runtimes):
        engine_names = [str(n) for n in (rt.class_names or [])]
        if engine_names and engine_names != list(dataset.class_names):
            differ = [
                "{} ({} here)".format(e, d)
                for e, d in zip(engine_names, dataset.class_names)
                if e != d
            ]
            warnings.append(
                "engine {} names its classes differently from the dataset: {}; scores are "
                "reported under the dataset's names, by class index".format(
                    name, ", ".join(differ[:4]) + (" ..." if len(differ) > 4 else "")
                )
            )
    cv2 = require("cv2", "segeval")
    out_dirs = None
    if save_dir is not None:
        save_dir = os.fspath(save_dir)
        out_dirs = [save_dir] if len(runtimes) == 1 else [os.path.join(save_dir, n) for n in names]
    confusions = [ConfusionMatrix(k) for _ in runtimes]
    pairs = [PairAgreement(a, b) for a in range(len(runtimes)) for b in range(a + 1, len(runtimes))]
    infer_s = [0.0] * len(runtimes)
    load_s = wait_s = metrics_s = 0.0
    bar = Progress(len(samples), names, progress, stream)
    pool = ThreadPoolExecutor(max_workers=workers) if workers else None
    loads = collections.deque()
    writes = collections.deque()
    depth = 2 * max(workers, 1)
    todo = iter(samples)

    def refill():
        while pool is not None and len(loads) < depth:
            sample = next(todo, None)
            if sample is None:
                return
            loads.append((sample, pool.submit(_timed_load, dataset, sample)))

    start = time.perf_counter()
    try:
        refill()
        for done in range(1, len(samples) + 1):
            t0 = time.perf_counter()
            if pool is None:
                sample = samples[done - 1]
                frame, target, seconds = _timed_load(dataset, sample)
            else:
                sample, future = loads.popleft()
                frame, target, seconds = future.result()
                refill()
            wait_s += time.perf_counter() - t0
            load_s += seconds
            preds = []
            for i, rt in enumerate(runtimes):
                t0 = time.perf_counter()
                pred = rt.infer(frame)
                infer_s[i] += time.perf_counter() - t0
                if pred.shape != target.shape:  # evaluate at the label's resolution
                    pred = cv2.resize(
                        pred,
                        (target.shape[1], target.shape[0]),
                        interpolation=cv2.INTER_NEAREST,
                    )
                preds.append(pred)
            t0 = time.perf_counter()
            for confusion, pred in zip(confusions, preds):
                confusion.update(target, pred)
            if pairs:
                valid = target < k
                for pair in pairs:
                    pair.update(sample.name, preds[pair.a], preds[pair.b], valid)
            metrics_s += time.perf_counter() - t0
            if out_dirs is not None:
                for out_dir, pred in zip(out_dirs, preds):
                    path = os.path.join(out_dir, dataset.prediction_path(sample))
                    image = dataset.prediction_image(pred)
                    if pool is None:
                        _write_png(path, image)
                    else:
                        writes.append(pool.submit(_write_png, path, image))
                while len(writes) > depth:
                    writes.popleft().result()
            bar.update(done, [c.miou for c in confusions])
        while writes:
            writes.popleft().result()
    finally:
        bar.close()
        if pool is not None:
            for _, future in loads:
                future.cancel()
            pool.shutdown(wait=True)
    wall = time.perf_counter() - start
    if samples and confusions[0].labelled_pixels == 0:
        raise DatasetError(
            "every label pixel of the {} of {}{} is ignored, so there is "
            "nothing to score (Cityscapes test labels are withheld: use --split val)".format(
                plural(len(samples), "image"),
                dataset.root,
                "" if dataset.split is None else " split {!r}".format(dataset.split),
            )
        )
    info = {
        "name": dataset.name,
        "root": dataset.root,
        "split": dataset.split,
        "images": len(samples),
        "class_names": list(dataset.class_names),
    }
    n = max(len(samples), 1)
    timing = {
        "wall_s": wall,
        "images_per_s": len(samples) / wall if wall > 0 else None,
        "workers": workers,
        "load_s": load_s,
        "load_wait_s": wait_s,
        "metrics_s": metrics_s,
        "infer_s": sum(infer_s),
        "overhead_of_inference": (wall - sum(infer_s)) / sum(infer_s) if sum(infer_s) else None,
    }
    reports = [
        Report(
            name,
            _engine_info(rt),
            info,
            confusion,
            len(samples),
            {"infer_s": t, "infer_ms_per_image": 1000.0 * t / n},
        )
        for name, rt, confusion, t in zip(names, runtimes, confusions, infer_s)
    ]
    return Comparison(reports, pairs, info, timing, warnings)
