"""``segbench --compare regseg,ddrnet23_slim,stdc1_seg,...``: RegSeg and its rivals re-timed on
this machine, one engine, one precision, one protocol, interleaved in one run.

The papers' speed tables mix devices (T4, GTX 1080 Ti, TITAN X, ...), software (PyTorch eager,
TensorRT) and timing setups; RegSeg's own authors warn that "the FPS across models are not
directly comparable". Here every named model is exported the way segexport exports it (random
weights: speed does not depend on them), built on the same engine of this machine (TensorRT on a
GPU with TensorRT; on a CPU, ONNX Runtime unless OpenVINO is measurably faster on the first
model), and timed in one loop that runs each model once per round in a rotating order, so that
load on the machine falls on all of them alike. Each row gives params and GMACs at the size
timed, the latency and FPS, the speed relative to RegSeg (the median over rounds of RegSeg's time
over the model's), the share of the device's floor (multiply-adds over the device's peak, see
``peak.py``) the model reaches, and the paper's own FPS with its device, size and protocol.

torch and the exporter are imported inside the functions: ``import segdeploy.bench`` stays
torch-free. Python 3.6 compatible.
"""

import os
import shutil
import sys
import tempfile
import time

import numpy as np

from ..errors import MissingDependencyError, SegDeployError
from . import peak as peak_mod
from . import references, stats
from .interleave import time_interleaved

DEFAULT_RES = "512x1024"
REFERENCE = "regseg"
PRECISIONS = ("fp32", "fp16", "bf16")
BACKENDS = ("onnxruntime", "openvino", "tensorrt")
# OpenVINO replaces ONNX Runtime as the CPU engine only when faster by more than this on the
# first model (a few rounds on a busy machine differ by a few per cent at random).
CHOICE_MARGIN = 0.10
CHOICE_ROUNDS = 3
PROGRESS_EVERY_S = 15.0


# --- what to compare ---------------------------------------------------------------------------


def parse_models(text):
    """``"regseg, ddrnet23_slim"`` -> registered names, in order, each once. An unknown name is
    one line naming the known models."""
    names = []
    for name in str(text).split(","):
        name = name.strip()
        if name and name not in names:
            names.append(name)
    if not names:
        raise SegDeployError("--compare takes a comma-separated list of model names")
    try:
        from .. import models
    except ImportError as exc:  # torch is missing: the models cannot be built here
        raise MissingDependencyError(
            "--compare exports the models and needs torch and onnx ({}); install "
            "segdeploy[export]".format(exc)
        ) from None
    for name in names:
        models.get_spec(name)  # UnknownModelError: "unknown model ...; known models: ..."
    return names


def parse_size(text, names):
    """The one ``--res`` size (default 512x1024), a multiple of every named model's stride."""
    from .. import models
    from ..engines.profiles import parse_hw

    items = [t.strip() for t in str(text or DEFAULT_RES).split(",") if t.strip()]
    if len(items) != 1:
        raise SegDeployError("--compare times one size; give one --res HxW, got {}".format(text))
    h, w = parse_hw(items[0], "--res (HxW)")
    for name in names:
        stride = models.get_spec(name).stride
        if h % stride or w % stride:
            raise SegDeployError(
                "{}: --res {}x{} is not a multiple of its stride {}; {}x{} works".format(
                    name, h, w, stride, -(-h // stride) * stride, -(-w // stride) * stride
                )
            )
    return h, w


def paper_figure(name, spec, height, width):
    """The paper's FPS for ``name`` with its device, size, protocol and source (a dict), or
    None: references.py's figure at this size when there is one, else its first (Cityscapes)
    one, else the registry's ``paper`` dict."""
    figures = references.matching(name)
    same = [f for f in figures if (f.height, f.width) == (height, width)]
    city = [f for f in figures if f.dataset == "cityscapes"]
    fig = (same or city or figures or [None])[0]
    if fig is not None:
        return {
            "fps": fig.fps,
            "device": fig.device,
            "resolution": [fig.height, fig.width],
            "protocol": fig.protocol,
            "precision": fig.precision,
            "software": fig.software,
            "source": fig.source,
        }
    paper = dict(spec.paper or {})
    if paper.get("fps") is None:
        return None
    res = paper.get("fps_resolution") or paper.get("resolution")
    return {
        "fps": float(paper["fps"]),
        "device": paper.get("fps_device"),
        "resolution": list(res) if res else None,
        "protocol": paper.get("fps_protocol"),
        "precision": paper.get("fps_precision"),
        "software": paper.get("fps_software"),
        "source": paper.get("source"),
    }


# --- export, engine choice, opening -------------------------------------------------------------


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pth.tar", ".tar")


def find_checkpoints(directory, names):
    """{name: path} of ``DIR/NAME.pth`` (or .pt, .pth.tar, .tar) for every model, checked before
    anything is exported; a model without one is a one-line error."""
    if not os.path.isdir(directory):
        raise SegDeployError(
            "--checkpoints {} is not a directory; give the folder that holds NAME.pth for "
            "each model".format(directory)
        )
    found, missing = {}, []
    for name in names:
        paths = [os.path.join(directory, name + s) for s in CHECKPOINT_SUFFIXES]
        hit = [p for p in paths if os.path.isfile(p)]
        if hit:
            found[name] = hit[0]
        else:
            missing.append(name)
    if missing:
        raise SegDeployError(
            "--checkpoints {}: no checkpoint for {} (looked for NAME{}); add it or leave the "
            "model out of --compare".format(
                directory, ", ".join(missing), ", NAME".join(CHECKPOINT_SUFFIXES)
            )
        )
    return found


def export_models(names, height, width, workdir, say, checkpoints=None, unsafe_pickle=False):
    """[{name, spec, onnx, params, macs}]: each model folded and exported as segexport does,
    with its checkpoint from ``checkpoints`` ({name: path}) where given."""
    from .. import models
    from ..export import export_onnx, fold_batchnorm, make_card
    from .harness import complexity_of

    exported = []
    for name in names:
        spec = models.get_spec(name)
        model = models.build(name)
        if checkpoints:
            models.load_checkpoint(model, checkpoints[name], allow_unsafe_pickle=unsafe_pickle)
        params, macs = complexity_of(model, height, width)
        path = os.path.join(workdir, "{}_{}x{}.onnx".format(name, height, width))
        card = make_card(spec, spec.num_classes, height, width, "labels")
        start = time.perf_counter()
        export_onnx(fold_batchnorm(model), path, height=height, width=width, card=card)
        say(
            "exported {} ({:.2f} M params, {:.2f} GMACs at {}x{}) in {:.1f} s".format(
                name, (params or 0) / 1e6, (macs or 0) / 1e9, height, width,
                time.perf_counter() - start,
            )
        )  # fmt: skip
        exported.append(
            {"name": name, "spec": spec, "onnx": path, "card": card, "params": params,
             "macs": macs}
        )  # fmt: skip
    return exported


def _has(module):
    import importlib

    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def _gpu_with_tensorrt():
    if not _has("tensorrt"):
        return False
    try:
        from ..engines import cuda_memory

        cuda_memory.device_properties(0)
        return True
    except Exception:  # no CUDA device or binding: not a GPU machine for TensorRT
        return False


def check_precision(backend, precision):
    if precision not in PRECISIONS:
        raise SegDeployError(
            "--precision takes one of {} for --compare, got {!r} (int8 needs calibration "
            "frames for each model: segexport --int8 --calib DIR)".format(
                ", ".join(PRECISIONS), precision
            )
        )
    if precision == "fp16" and backend != "tensorrt":
        raise SegDeployError(
            "--precision fp16 needs TensorRT on a GPU; {} on this CPU computes fp32 (or bf16 "
            "with OpenVINO where the CPU has it: --precision bf16)".format(backend)
        )
    if precision == "bf16":
        if backend != "openvino":
            raise SegDeployError(
                "--precision bf16 runs on OpenVINO (ONNX Runtime's CPU provider has no bf16 "
                "kernels): add --backends openvino"
            )
        from .._deps import require
        from ..engines.openvino_builder import cpu_has_bf16

        openvino = require("openvino", "--precision bf16")
        if not cpu_has_bf16(openvino.Core()):
            raise SegDeployError(
                "--precision bf16: this CPU has no native bf16 (OpenVINO reports no BF16); "
                "use --precision fp32"
            )


def open_engine(backend, item, precision, threads, workdir):
    from ..runtime.backend import open_engine as open_file

    options = {"threads": threads} if threads else {}
    if backend == "tensorrt":
        from ..engines import build_tensorrt_engine

        plan = os.path.splitext(item["onnx"])[0] + ".{}.plan".format(precision)
        build_tensorrt_engine(
            item["onnx"], plan, item["card"], precision=precision, log=lambda *a: None
        )
        return open_file(plan)
    if backend == "openvino":
        from ..engines.openvino_builder import inference_precision

        options["precision"] = inference_precision(precision)
    return open_file(item["onnx"], backend=backend, **options)


def _feeds(engine, height, width):
    spec = engine.inputs[0]
    x = np.random.RandomState(0).standard_normal((1, 3, height, width)).astype(np.float32)
    return {spec.name: x}


def choose_backend(args, exported, precision, height, width, say):
    """(backend, why): the --backends one, else TensorRT on a GPU that has it, else the faster
    of ONNX Runtime and OpenVINO on the first model, measured (ONNX Runtime unless OpenVINO wins
    by more than CHOICE_MARGIN)."""
    given = getattr(args, "backends_given", False)
    if given:
        from .backends import parse_choices

        names = parse_choices("--backends", args.backends, BACKENDS, {"ort": "onnxruntime"})
        if len(names) != 1:
            raise SegDeployError(
                "--compare times every model on one engine: give one --backends name"
            )
        return names[0], "asked for (--backends)"
    if _gpu_with_tensorrt():
        return "tensorrt", "a GPU with TensorRT"
    if precision == "bf16":
        return "openvino", "bf16 runs on OpenVINO"
    if not _has("openvino"):
        return "onnxruntime", "OpenVINO is not installed"
    first = exported[0]
    engines = {}
    try:
        for backend in ("onnxruntime", "openvino"):
            engines[backend] = open_engine(backend, first, precision, args.threads, None)
        calls = {}
        for backend, engine in engines.items():
            feeds = _feeds(engine, height, width)
            calls[backend] = (lambda e, f: lambda: e.infer(f))(engine, feeds)
        samples = time_interleaved(calls, 1, CHOICE_ROUNDS)
    finally:
        for engine in engines.values():
            engine.close()
    ort, ov = (float(np.median(samples[b])) for b in ("onnxruntime", "openvino"))
    pick = "openvino" if ov < ort * (1.0 - CHOICE_MARGIN) else "onnxruntime"
    why = (
        "{}: onnxruntime {:.1f} ms, openvino {:.1f} ms ({} rounds; OpenVINO must win by "
        "{:.0f} %)".format(first["name"], ort, ov, CHOICE_ROUNDS, 100 * CHOICE_MARGIN)
    )
    say("engine: {} ({})".format(pick, why))
    return pick, "measured on " + why


# --- timing -------------------------------------------------------------------------------------


def device_peak(device_kind, precision):
    """The device's peak now (a fresh measurement on a CPU: no cache)."""
    return peak_mod.device_peak(device_kind, precision, None)


def best_peak(*peaks):
    """The highest of peaks measured before and after the timed loop: on a shared CPU the load
    that slows the models also slows the matrix product that measures the peak, and a peak
    measured low puts the floor above the models' own times."""
    known = [p for p in peaks if p.gflops]
    if not known:
        return peaks[0]
    best = max(known, key=lambda p: p.gflops)
    if len(known) > 1 and best.source.startswith("measured"):
        best = best._replace(source=best.source + ", best of before and after the timed loop")
    return best


def _synchronized(step, sync):
    if sync is None:
        return step

    def call():
        step()
        sync()

    return call


class _Lines(object):
    """Plain progress lines on stderr (every PROGRESS_EVERY_S), for logs as for terminals."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.last = time.monotonic()

    def __call__(self, done, total):
        now = time.monotonic()
        if self.enabled and (now - self.last >= PROGRESS_EVERY_S or done == total):
            self.last = now
            print("segbench: round {}/{}".format(done, total), file=sys.stderr)
            sys.stderr.flush()


def run_compare(args, say=print):
    """Export, choose the engine, open every model, time them interleaved; the result dict
    (``rows`` in the order named, plus what was run and where)."""
    from .harness import _make_step, environment
    from .protocols import describe_scope, get

    names = parse_models(args.compare)
    height, width = parse_size(args.res, names)
    precision = str(args.precision or "fp32").lower()
    # Refusals that need no export come before the minutes of exporting.
    if precision == "fp16" and not getattr(args, "backends_given", False):
        check_precision("tensorrt" if _gpu_with_tensorrt() else "onnxruntime", precision)
    elif precision != "fp16":
        check_precision("openvino" if precision == "bf16" else "onnxruntime", precision)
    protocol = get(args.protocol, args.warmup, args.iters)
    checkpoints, dataset = checkpoints_and_dataset(args, names)
    workdir = tempfile.mkdtemp(prefix="segbench-compare-")
    engines = {}
    miou = {}
    try:
        exported = export_models(
            names, height, width, workdir, say, checkpoints, getattr(args, "unsafe_pickle", False)
        )
        backend, why = choose_backend(args, exported, precision, height, width, say)
        check_precision(backend, precision)
        steps, scope = {}, None
        for item in exported:
            engine = open_engine(backend, item, precision, args.threads, workdir)
            engines[item["name"]] = engine
            step, scope = _make_step(engine, protocol, height, width, (height, width))
            # Each engine has its own stream: the time of a call ends when its engine is done.
            steps[item["name"]] = _synchronized(step, getattr(engine, "synchronize", None))
        device_kind = getattr(engines[names[0]], "device_kind", "cpu")
        # One untimed round gives the estimate the user sees before the long part.
        start = time.perf_counter()
        for label in names:
            steps[label]()
        round_s = time.perf_counter() - start
        say(
            "timing {} models x {} rounds ({} warm-up), interleaved, {} {} on {}: about "
            "{:.0f} s".format(
                len(names), protocol.iters, protocol.warmup, backend, precision, device_kind,
                round_s * (protocol.iters + protocol.warmup),
            )
        )  # fmt: skip
        before = device_peak(device_kind, precision)
        samples = time_interleaved(
            steps, protocol.warmup, protocol.iters, progress=_Lines(args.verbose_progress)
        )
        peak = best_peak(before, device_peak(device_kind, precision))
        versions = environment()
        for engine in engines.values():
            if hasattr(engine, "versions"):
                versions.update(engine.versions())
        if dataset is not None:
            miou = score_models(exported, dataset, args, say)
    finally:
        for engine in engines.values():
            engine.close()
        shutil.rmtree(workdir, ignore_errors=True)
    reference = REFERENCE if REFERENCE in names else names[0]
    ref = np.asarray(samples[reference], dtype=np.float64)
    rows = []
    for item in exported:
        name = item["name"]
        ms = np.asarray(samples[name], dtype=np.float64)
        summary = stats.summarize(ms)
        floor = peak_mod.floor_ms(item["macs"], peak)
        rows.append(
            {
                "model": name,
                "params": item["params"],
                "macs": item["macs"],
                "latency_ms": summary,
                "fps": summary["fps"],
                "speed_vs_reference": float(np.median(ref / ms)),
                "floor_ms": floor,
                "floor_share": floor / summary["median"] if floor else None,
                "spread_warning": stats.spread_warning(summary),
                "paper": paper_figure(name, item["spec"], height, width),
                "checkpoint": checkpoints.get(name) if checkpoints else None,
                "miou": miou.get(name),
                "samples_ms": [round(float(v), 4) for v in ms],
            }
        )
    return {
        "models": names,
        "reference": reference,
        "resolution": [height, width],
        "backend": backend,
        "backend_choice": why,
        "precision": precision,
        "protocol": protocol.name,
        "protocol_source": protocol.source,
        "warmup": protocol.warmup,
        "iters": protocol.iters,
        "scope": scope,
        "scope_text": describe_scope(scope, device_kind),
        "timing": "interleaved: each round runs every model once, the first one rotating",
        "device": device_kind,
        "device_name": peak.device if device_kind == "cuda" else versions.get("cpu"),
        "threads": args.threads,
        "peak_gflops": peak.gflops,
        "peak_source": peak.source,
        "versions": versions,
        "rows": rows,
        "dataset": None if dataset is None else "{} ({} images)".format(dataset.name, len(dataset)),
        "miou_engine": "ONNX Runtime FP32 on each exported graph" if dataset is not None else None,
    }


def checkpoints_and_dataset(args, names):
    """({name: checkpoint}, opened dataset) for --checkpoints / --dataset, checked up front."""
    directory = getattr(args, "checkpoints", None)
    name = getattr(args, "dataset", None)
    if name and not directory:
        raise SegDeployError(
            "--dataset scores the models' labels, and random weights score nothing; pass "
            "--checkpoints DIR with NAME.pth for each model"
        )
    checkpoints = find_checkpoints(directory, names) if directory else None
    dataset = None
    if name:
        from ..eval.data import open_dataset

        dataset = open_dataset(name, getattr(args, "root", None), getattr(args, "split", None))
    return checkpoints, dataset


def score_models(exported, dataset, args, say):
    """{name: mIoU (0..1)} of each exported graph on ``dataset`` (segeval's metric), in ONNX
    Runtime FP32: the accuracy of the weights, beside the speed of the engine timed."""
    from ..eval.evaluate import evaluate
    from ..runtime.runtime import Runtime

    scores = {}
    for item in exported:
        start = time.perf_counter()
        with Runtime(item["onnx"], backend="onnxruntime", threads=args.threads) as runtime:
            report = evaluate(runtime, dataset, progress=False, workers=0)
        scores[item["name"]] = float(report.miou)
        say(
            "scored {} on {}: mIoU {:.2f} % in {:.1f} s".format(
                item["name"], getattr(args, "dataset", "the dataset"), 100.0 * report.miou,
                time.perf_counter() - start,
            )
        )  # fmt: skip
    return scores


def main_compare(args, command=None):
    """``segbench --compare``: the table, and --json / --csv / --plot when asked for.
    ``command``: the command line as typed, kept in the JSON (segbench's cli passes it)."""
    from .._cli import QUIET, Printer, verbosity
    from .compare_report import format_table, write_csv, write_json, write_plot

    level = verbosity(args)
    out = Printer(level)
    args.verbose_progress = level > QUIET and not getattr(args, "no_progress", False)
    result = run_compare(args, say=out.info)
    result["command"] = command
    out.result(format_table(result))
    for path, write in ((args.json, write_json), (args.csv, write_csv), (args.plot, write_plot)):
        if path:
            write(path, result)
            out.info("wrote {}".format(path))
    return 0
