"""``segbench --blocks``: the RegSeg paper's Table 1 (block latency), reproduced on a backend.

The paper times single blocks at RegSeg's 1/16 stage: w = 256 channels, group width g = 16, input
1 x 256 x 64 x 128 (a 1024 x 2048 frame / 16), on a T4 with PyTorch 1.9 and mixed precision:

    Y block          1.0 ms    one grouped 3x3 conv, dilation 1
    D block (1,1)    1.1 ms    split, two grouped 3x3 convs (dilation 1 and 1), concat
    D block (1,4)    1.2 ms    the same with dilations 1 and 4
    D block (1,10)   1.2 ms    the same with dilations 1 and 10

Here every block is timed on the chosen backend, plus D block (1,14) (RegSeg's seven last blocks
use it; the paper's table stops at (1,10)) and the fused plugin where an engine can load it. The
blocks take turns inside one loop (interleaved), so machine load hits them alike; each block's
ratio is the median over iterations of its time over the Y block's time in the same iteration.

Each block is RegSeg's D block whole (1x1 conv, ReLU, the 3x3 stage, ReLU, squeeze-excitation,
1x1 conv, shortcut add, ReLU), from one set of deterministic fan-in-scaled weights:
- torch: ``segdeploy.models.regseg.DBlock`` with those weights, BatchNorm kept as the paper's
  protocol does (identity statistics plus the bias); on CUDA with autocast (mixed precision);
- onnxruntime / tensorrt: the same block written as an ONNX graph (the graph segexport writes
  for it, BatchNorm folded into the convs); the fused row is that graph after the D-block rewrite
  (``segdeploy.engines.dblock_graph``). In ONNX Runtime the fused row runs DBlockConv through the
  kernel's host build as a Python custom op: a functional check of the rewrite, NOT a speed proxy.
  On TensorRT it runs the DBlockConv plugin (``--plugin libdblock_plugin.so``): the real speed row.

Python 3.6 compatible; torch, onnx and the backends are imported by the functions that use them.
"""

import importlib.util
import os
import shutil
import sys
import tempfile

import numpy as np

from .._io import write_bytes, write_json
from ..errors import SegDeployError
from .block_graphs import (  # noqa: F401  (the blocks, as the tests and scripts knew them)
    BLOCKS,
    FUSED,
    FUSED_OF,
    GROUP_WIDTH,
    HOST_OP_NOTE,
    PAPER_MS,
    PAPER_SOURCE,
    SQUEEZE,
    STRIDE,
    WIDTH,
    block_card,
    block_input,
    block_weights,
    onnx_block,
    torch_block,
)
from .interleave import time_interleaved  # noqa: F401  (tests time blocks with it)


class _Runners(object):
    """Opened engines for one backend: ``calls`` (label -> zero-argument callable), ``outputs``
    (label -> callable returning the output as numpy), ``sync``, ``notes``, ``close``."""

    def __init__(self):
        self.calls = {}
        self.outputs = {}
        self.notes = {}
        self.sync = lambda: None
        self.device = "cpu"
        self.precision = "fp32"
        self.scope = "forward (input already where the engine reads it)"
        self.versions = {}
        self._closers = []

    def close(self):
        for close in reversed(self._closers):
            close()
        self._closers = []


def _torch_runners(weights, x, device, threads):
    import torch

    runners = _Runners()
    if threads:
        torch.set_num_threads(int(threads))
    dev = torch.device(device or "cpu")
    cuda = dev.type == "cuda"
    inp = torch.from_numpy(x).to(dev)
    if cuda:
        torch.backends.cudnn.benchmark = True  # the paper's protocol
        runners.sync = torch.cuda.synchronize
        runners.precision = "fp16 autocast"
    runners.device = str(dev)
    runners.versions = {"torch": torch.__version__}
    for label, dilations in BLOCKS:
        module = torch_block(dilations, weights[label]).to(dev)

        def call(module=module):
            with torch.no_grad():
                if cuda:
                    with torch.autocast("cuda", dtype=torch.float16):
                        return module(inp)
                return module(inp)

        runners.calls[label] = call
        runners.outputs[label] = lambda call=call: call().float().cpu().numpy()
    runners.notes[FUSED] = "no PyTorch engine loads the DBlockConv plugin"
    return runners


def _write_graphs(weights, height, width, workdir, fp16_typed=False):
    """Write each block's ONNX graph and the fused (1,14) graph; returns label -> path.
    ``fp16_typed``: write FP16-typed graphs (FP32 I/O), what TensorRT 11 builds FP16 from."""
    if not fp16_typed and importlib.util.find_spec("onnx") is None:
        # A device without onnx (Jetson TX2): the same bytes, written with numpy alone.
        from . import block_onnx

        return block_onnx.write_graphs(weights, height, width, workdir)
    from ..engines.dblock_graph import fuse_dblocks

    paths = {}
    for label, dilations in BLOCKS:
        proto = onnx_block(dilations, weights[label], height, width)
        if fp16_typed:
            from ..export.fp16 import convert_to_fp16

            proto = convert_to_fp16(proto)
        path = os.path.join(workdir, "block_{}.onnx".format(len(paths)))
        write_bytes(path, proto.SerializeToString())
        paths[label] = path
        if label == FUSED_OF:
            fused, summary = fuse_dblocks(proto)
            if len(summary["fused"]) != 1:
                raise SegDeployError("the D-block rewrite did not fuse the (1,14) block")
            path = os.path.join(workdir, "block_fused.onnx")
            write_bytes(path, fused.SerializeToString())
            paths[FUSED] = path
    return paths


def _ort_runners(paths, x, device, threads):
    from ..runtime.onnxruntime_backend import OnnxRuntimeEngine

    runners = _Runners()
    for label, path in paths.items():
        fused = label == FUSED
        engine = OnnxRuntimeEngine(
            path,
            device=device or "cpu",
            threads=threads,
            custom_ops=["dblock"] if fused else None,
        )
        runners._closers.append(engine.close)
        runners.device = engine.device_kind
        runners.versions = engine.versions()

        def call(engine=engine):
            return engine.infer({"x": x})["y"]

        runners.calls[label] = call
        runners.outputs[label] = lambda call=call: np.array(call())
        if fused:
            runners.notes[label] = HOST_OP_NOTE
    return runners


def _trt_runners(paths, x, height, width, workdir, plugins, fp16):
    from ..engines import build_tensorrt_engine
    from ..runtime.tensorrt_backend import TensorRTEngine

    runners = _Runners()
    runners.device = "cuda"
    runners.precision = "fp16" if fp16 else "fp32"
    # TensorRTEngine.infer takes host arrays: every block's time carries the same two copies of
    # a 1 x 256 x h x w tensor, which compress the ratios towards 1.
    runners.scope = "host->device copy + forward + device->host copy"
    card = block_card(height, width)
    for label, path in paths.items():
        fused = label == FUSED
        if fused and not plugins:
            runners.notes[label] = (
                "not run: pass --plugin libdblock_plugin.so (the DBlockConv plugin built on this "
                "device) to time the fused block"
            )
            continue
        plan = path[: -len(".onnx")] + ".plan"
        build_tensorrt_engine(
            path,
            plan,
            card,
            precision=runners.precision,
            plugins=tuple(plugins) if fused else (),
            log=lambda *a: None,
        )
        engine = TensorRTEngine(plan, plugins=list(plugins) if fused else [])
        runners._closers.append(engine.close)
        runners.versions = engine.versions() if hasattr(engine, "versions") else {}

        def call(engine=engine):
            return engine.infer({"x": x})["y"]

        runners.calls[label] = call
        runners.outputs[label] = lambda call=call: np.array(call(), dtype=np.float32)
        if fused:
            runners.notes[label] = "the DBlockConv TensorRT plugin (one kernel for the 3x3 stage)"
    return runners


def _trt_fp16(typed):
    """FP16 as the paper's protocol (mixed precision), except where the GPU is known to run FP16
    slowly (GTX 1080 Ti: 1/64 rate) and the graphs are not FP16-typed anyway."""
    if typed:
        return True
    from ..engines import devices

    record = devices.detect().record
    return bool(record is None or record.fast_fp16)


# --- timing and the table -----------------------------------------------------------------------


def rows_for(samples, reference="Y block", notes=None, extra=None):
    """Table rows: median / mean / p90 ms, ratio to ``reference`` (median of per-iteration
    ratios where the samples are paired, else of the medians), the paper's figures."""
    notes = notes or {}
    ref = np.asarray(samples.get(reference) or [np.nan])
    rows = []
    labels = [b[0] for b in BLOCKS] + [FUSED]
    for label in labels:
        values = samples.get(label)
        row = {"block": label, "paper_ms": PAPER_MS.get(label)}
        row["paper_ratio"] = (
            round(PAPER_MS[label] / PAPER_MS[reference], 2) if label in PAPER_MS else None
        )
        if values:
            arr = np.asarray(values, dtype=np.float64)
            row.update(
                median_ms=float(np.median(arr)),
                mean_ms=float(arr.mean()),
                p90_ms=float(np.percentile(arr, 90)),
                n=int(arr.size),
            )
            if arr.size == ref.size:
                row["ratio"] = float(np.median(arr / ref))
                row["ratio_kind"] = "median of paired per-iteration ratios"
            else:
                row["ratio"] = float(np.median(arr) / np.median(ref))
                row["ratio_kind"] = "ratio of medians (timed apart)"
        else:
            row.update(median_ms=None, mean_ms=None, p90_ms=None, n=0, ratio=None)
        if label in notes:
            row["note"] = notes[label]
        row.update((extra or {}).get(label, {}))
        rows.append(row)
    return rows


def format_table(result):
    """The table of one backend as text, beside the paper's column."""

    def num(value, fmt):
        return "-" if value is None else fmt.format(value)

    lines = [
        "RegSeg Table 1 (block latency) on {} ({}, {}): input 1 x {} x {} x {}, w={}, g={}".format(
            result["backend"],
            result["device"],
            result["precision"],
            WIDTH,
            result["block_hw"][0],
            result["block_hw"][1],
            WIDTH,
            GROUP_WIDTH,
        ),
        "{} warm-up + {} timed iterations per block, interleaved; ratio = median over "
        "iterations of block / Y block; timed: {}".format(
            result["warmup"], result["iters"], result.get("scope", "forward")
        ),
        "{:<22} {:>10} {:>10} {:>8} {:>9} {:>11}".format(
            "block", "median ms", "p90 ms", "ratio", "paper ms", "paper ratio"
        ),
    ]
    footnotes = []
    for row in result["rows"]:
        mark = ""
        if row.get("note"):
            footnotes.append(row["note"])
            mark = " [{}]".format(len(footnotes))
        lines.append(
            "{:<22} {:>10} {:>10} {:>8} {:>9} {:>11}{}".format(
                row["block"],
                num(row["median_ms"], "{:.3f}"),
                num(row["p90_ms"], "{:.3f}"),
                num(row["ratio"], "{:.2f}"),
                num(row["paper_ms"], "{:.1f}"),
                num(row["paper_ratio"], "{:.2f}"),
                mark,
            )
        )
        if row.get("max_abs_diff") is not None:
            footnotes[-1] += "; output vs {}: max abs difference {:.2e} (max |y| {:.2f})".format(
                FUSED_OF, row["max_abs_diff"], row["max_abs_output"]
            )
    for i, note in enumerate(footnotes):
        lines.append("  [{}] {}".format(i + 1, note))
    lines.append("  D block (1,14) is RegSeg's (7 blocks); the paper's table has (1,10) instead.")
    lines.append("  paper: " + PAPER_SOURCE)
    return "\n".join(lines)


def run_backend(backend, height, width, warmup, iters, device=None, threads=None, plugins=(),
                workdir=None, stream=None, seed=0):  # fmt: skip
    """Time every block on ``backend`` at frame ``height`` x ``width``; returns the result dict."""
    stream = stream or sys.stderr
    bh, bw = height // STRIDE, width // STRIDE
    weights = dict((label, block_weights(d, seed)) for label, d in BLOCKS)
    x = block_input(bh, bw)
    own_dir = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="segbench-blocks-")
    try:
        if backend == "torch":
            runners = _torch_runners(weights, x, device, threads)
        else:
            typed = False
            if backend == "tensorrt":
                from .._deps import require
                from ..engines import trt_compat

                # TensorRT 11 has no FP16 builder flag: the precision lives in the graph.
                typed = not trt_compat.has_fp16_flag(require("tensorrt", "--blocks on tensorrt"))
            paths = _write_graphs(weights, bh, bw, workdir, fp16_typed=typed)
            if backend == "onnxruntime":
                runners = _ort_runners(paths, x, device, threads)
            elif backend == "tensorrt":
                runners = _trt_runners(paths, x, bh, bw, workdir, plugins, _trt_fp16(typed))
            else:
                raise SegDeployError("--blocks runs on torch, onnxruntime or tensorrt")
        try:
            timed = dict((k, v) for k, v in runners.calls.items() if k != FUSED)
            print(
                "segbench --blocks: {} blocks on {} ({}), {} warm-up + {} iterations ...".format(
                    len(timed), backend, runners.device, warmup, iters
                ),
                file=stream,
            )
            samples = time_interleaved(timed, warmup, iters, runners.sync)
            extra = {}
            if FUSED in runners.calls:
                # The fused engine: checked against the standard (1,14) block, then timed apart
                # (the ONNX Runtime host op is far slower than any engine; it would swamp the loop).
                ref = runners.outputs[FUSED_OF]()
                got = runners.outputs[FUSED]()
                extra[FUSED] = {
                    "max_abs_diff": float(np.abs(got.astype(np.float64) - ref).max()),
                    "max_abs_output": float(np.abs(ref).max()),
                }
                if backend == "onnxruntime":
                    extra[FUSED]["ratio"] = None  # a Python op's time says nothing of the kernel
                fused_iters = iters if backend == "tensorrt" else min(iters, 5)
                fused_warmup = warmup if backend == "tensorrt" else 1
                samples[FUSED] = time_interleaved(
                    {FUSED: runners.calls[FUSED]}, fused_warmup, fused_iters, runners.sync
                )[FUSED]
            return {
                "backend": backend,
                "device": runners.device,
                "precision": runners.precision,
                "scope": runners.scope,
                "frame_hw": [height, width],
                "block_hw": [bh, bw],
                "channels": WIDTH,
                "group_width": GROUP_WIDTH,
                "warmup": warmup,
                "iters": iters,
                "rows": rows_for(samples, notes=runners.notes, extra=extra),
                "versions": runners.versions,
                "paper_source": PAPER_SOURCE,
                "samples_ms": dict((k, [round(v, 4) for v in s]) for k, s in samples.items()),
            }
        finally:
            runners.close()
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def write_csv(path, results):
    import csv
    import io

    fields = ["backend", "device", "precision", "block", "median_ms", "mean_ms", "p90_ms", "n"]
    fields += ["ratio", "paper_ms", "paper_ratio", "note"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for result in results:
        for row in result["rows"]:
            writer.writerow(dict(row, **{k: result[k] for k in ("backend", "device", "precision")}))
    write_bytes(path, buf.getvalue().encode("utf-8"))


def main_blocks(args):
    """``segbench --blocks``: parsed CLI ``args`` (res, backends, warmup, iters, device,
    threads, plugin, json, csv). Returns the exit code."""
    from ..engines.profiles import parse_resolutions
    from .backends import parse_backends
    from .harness import environment

    sizes = parse_resolutions(args.res or "1024x2048", STRIDE)
    if len(sizes) != 1:
        raise SegDeployError("--blocks takes one --res (the frame size; blocks run at 1/16)")
    height, width = sizes[0]
    backends = parse_backends(args.backends)
    warmup = 10 if args.warmup is None else args.warmup
    iters = 100 if args.iters is None else args.iters
    if iters < 1 or warmup < 0:
        raise SegDeployError("--iters must be at least 1 and --warmup at least 0")
    results = []
    for backend in backends:
        result = run_backend(
            backend,
            height,
            width,
            warmup,
            iters,
            device=args.device,
            threads=args.threads,
            plugins=getattr(args, "plugin", None) or (),
        )
        print(format_table(result))
        print()
        results.append(result)
    env = environment()
    env["command"] = "segbench " + " ".join(sys.argv[1:])
    if args.json:
        write_json(args.json, {"environment": env, "results": results})
        print("wrote {}".format(args.json))
    if args.csv:
        write_csv(args.csv, results)
        print("wrote {}".format(args.csv))
    return 0
