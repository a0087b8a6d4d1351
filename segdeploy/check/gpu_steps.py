"""The GPU half that needs no TensorRT: the D-block kernel (compile, gpu_check against its host
build, the plugin build where TensorRT's headers are), Table 1 (TensorRT with the plugin, and
PyTorch on the GPU), the zoo under the RegSeg protocol (PyTorch AMP, as the paper timed it), and
the pinned-memory paths (``engines.cuda_memory``, from a second thread too).

Python 3.6 compatible; torch is imported only by the PyTorch steps, on a machine that has it.
"""

import os
import threading
import time

import numpy as np

from .runner import Failed, Skip

# Table 1 at the paper's frame, 1024 x 2048 (blocks at 1 x 256 x 64 x 128).
TABLE1_FRAME = (1024, 2048)
# The zoo in --quick: RegSeg, SwiftNet and a DeepLab (one per paper protocol family); the full
# run times every model.
QUICK_ZOO = ("regseg", "swiftnet_rn18", "deeplabv3plus_mobilenet")


def _arch(ctx):
    detected = ctx.artifacts["device"]
    cc = detected.compute_capability
    return int("{}{}".format(*cc)) if cc else None


def step_kernel_compile(ctx):
    """NVRTC + ptxas for this GPU's architecture (or the T4's off a GPU): registers, spills."""
    from ..plugins.dblock import compile_check

    arch = _arch(ctx) or 75
    report = compile_check.run(ptx_archs=(arch,), sass_archs=(arch,))
    rows = [
        [
            r["kernel"],
            r["arch"],
            r["registers"],
            r["smem_bytes"],
            r["spill_stores"],
            r["spill_loads"],
        ]
        for r in report["sass"]
    ]
    data = {
        "summary": "sm_{}: {} kernels, {} spill bytes".format(
            arch, len(rows), compile_check.spills(report)
        ),
        "table": {
            "columns": ["kernel", "arch", "registers", "smem B", "spill stores", "spill loads"],
            "rows": rows,
        },
    }
    if compile_check.spills(report):
        raise Failed("ptxas reports register spills for sm_{}".format(arch), data)
    return data


def step_gpu_check(ctx):
    from ..plugins.dblock import gpu_check

    report = gpu_check.run(repeats=20 if ctx.quick else 100)
    rows = [
        [
            r["precision"],
            r["max_rel_error_vs_host"],
            "yes" if r["matches_host"] else "NO",
            r["median_ms"] * 1e3,
            r["achieved_tflops"],
            r["achieved_gbs"],
        ]
        for r in report["results"]
    ]
    data = {
        "summary": "{} ({}): {}".format(
            report["device"],
            report["kernel_target"]["form"],
            ", ".join("{} {:.1f} us".format(r[0], r[3]) for r in rows),
        ),
        "kernel_target": report["kernel_target"],
        "table": {
            "columns": [
                "precision",
                "max rel. error vs host",
                "matches host",
                "median us",
                "TFLOPS",
                "GB/s",
            ],
            "rows": rows,
        },
        "note": "Kernel: {}. Shape 1x256x64x128, dilations (1,14).".format(
            report["kernel_target"]["reason"]
        ),
    }
    if not all(r["matches_host"] for r in report["results"]):
        raise Failed("the GPU kernel differs from its host build", data)
    return data


def step_plugin_build(ctx):
    from ..plugins.dblock import build

    ctx.need_probe("tensorrt", "the plugin links TensorRT")
    out = os.path.join(ctx.out_dir, "dblock")
    arch = _arch(ctx)
    lines = []

    class _Lines(object):
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

    library = build.build(
        out, ctx.option("tensorrt_root"), [str(arch)] if arch else None, stream=_Lines()
    )
    ctx.artifacts["plugin"] = library
    return {
        "summary": "{} ({} KiB)".format(library, os.path.getsize(library) // 1024),
        "library": library,
        "log": "".join(lines).splitlines()[-6:],
    }


def _table1(ctx, backend, **kwargs):
    from ..bench import blocks

    warmup, iters = (5, 30) if ctx.quick else (10, 100)
    result = blocks.run_backend(
        backend, TABLE1_FRAME[0], TABLE1_FRAME[1], warmup, iters, stream=_Null(), **kwargs
    )
    rows = [
        [r["block"], r.get("median_ms"), r.get("ratio"), r.get("paper_ms"), r.get("paper_ratio")]
        for r in result["rows"]
        if r.get("n")
    ]
    return {
        "summary": "{} on {} ({}): ".format(backend, result["device"], result["precision"])
        + ", ".join("{} {:.3f} ms".format(r[0], r[1]) for r in rows[:2]),
        "table": {
            "columns": ["block", "median ms", "ratio to Y", "paper ms (T4)", "paper ratio"],
            "rows": rows,
        },
        "note": "{} · {}; {} warm-up + {} interleaved iterations. Paper: {}".format(
            backend, result["device"], warmup, iters, blocks.PAPER_SOURCE
        ),
        "result": dict((k, v) for k, v in result.items() if k != "samples_ms"),
    }


class _Null(object):
    def write(self, text):
        pass

    def flush(self):
        pass


def step_table1_tensorrt(ctx):
    ctx.need_probe("tensorrt")
    if ctx.quick:
        raise Skip("--quick leaves out building six block engines; the full run times them")
    plugin = ctx.artifacts.get("plugin")
    return _table1(ctx, "tensorrt", plugins=[plugin] if plugin else ())


def step_table1_torch(ctx):
    ctx.need_probe("torch_cuda", "Table 1 on PyTorch needs torch with CUDA")
    return _table1(ctx, "torch", device="cuda")


def step_zoo(ctx):
    """Every zoo model (the paper's three in --quick) under RegSeg's protocol: PyTorch with
    mixed precision, cudnn.benchmark, 10 warm-up + 100 timed, input already on the GPU."""
    from ..bench import harness, protocols
    from ..runtime.torch_backend import TorchEngine

    ctx.need_probe("torch_cuda", "the zoo runs on PyTorch with CUDA")
    from ..models import list_models

    names = (
        [n for n in QUICK_ZOO if n in list_models()]
        if ctx.quick
        else list_models(include_tiny=False)
    )
    height, width = (512, 1024) if ctx.quick else (1024, 2048)
    protocol = protocols.get("regseg", *((3, 20) if ctx.quick else (None, None)))
    rows, failures = [], []
    for name in names:
        try:
            engine = TorchEngine(
                name, device="cuda", height=height, width=width, fp16=True, fold_bn=False
            )
            try:
                record = harness.run(engine, protocol, height, width, model_name=name)
            finally:
                engine.close()
            rows.append(
                [name, "{}x{}".format(height, width), record["latency_ms"]["median"], record["fps"]]
            )
        except Exception as exc:  # one model's failure is its row; the others still run
            failures.append("{}: {}".format(name, str(exc).strip().splitlines()[0][:160]))
            rows.append([name, "{}x{}".format(height, width), None, None])
    data = {
        "summary": "{} models at {}x{}".format(len(names), height, width),
        "table": {"columns": ["model", "input", "median ms", "fps"], "rows": rows},
        "note": "RegSeg protocol (Sec. 4.7): PyTorch AMP, cudnn.benchmark, batch 1, input on the "
        "GPU, forward + upsample; {} warm-up + {} timed; random weights.".format(
            protocol.warmup, protocol.iters
        ),
    }
    if failures:
        raise Failed("; ".join(failures), data)
    return data


def _bandwidth(fn, nbytes, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return nbytes / float(np.median(times)) / 1e9


def step_pinned_memory(ctx):
    """Pinned and pageable copies through cuda_memory (the TensorRT runtime's own path), a round
    trip from a second thread, and the CPU reading a pinned buffer against a pageable one (the
    TX2's uncached pinned memory: item 10)."""
    from ..engines import cuda_memory, devices

    ctx.need_probe("gpu")
    if cuda_memory.BINDING is None:
        raise Skip("no CUDA binding to allocate pinned memory: " + cuda_memory.INSTALL_HINT)
    cuda_memory.use_device(0)
    nbytes = (16 if ctx.quick else 64) << 20
    repeats = 5 if ctx.quick else 20
    host = cuda_memory.HostBuffer(nbytes)
    dev = cuda_memory.DeviceBuffer(nbytes)
    stream = cuda_memory.Stream()
    try:
        pinned = host.view((nbytes,), np.uint8)
        pinned[...] = np.arange(nbytes, dtype=np.uint64).astype(np.uint8)
        pageable = np.array(pinned)

        def copy(array, to_device):
            if to_device:
                cuda_memory.copy_to_device(dev, array, nbytes, stream)
            else:
                cuda_memory.copy_to_host(array, dev, nbytes, stream)
            stream.synchronize()

        rows = []
        for label, array in (("pinned", pinned), ("pageable", pageable)):
            rows.append(
                [
                    label,
                    "host to device",
                    _bandwidth(lambda a=array: copy(a, True), nbytes, repeats),
                ]
            )
            rows.append(
                [
                    label,
                    "device to host",
                    _bandwidth(lambda a=array: copy(a, False), nbytes, repeats),
                ]
            )
        # The CPU reading the buffer (what post-processing does with an engine's output).
        rows.append(
            [
                "pinned",
                "CPU reads (sum)",
                _bandwidth(lambda: pinned.sum(dtype=np.uint64), nbytes, repeats),
            ]
        )
        rows.append(
            [
                "pageable",
                "CPU reads (sum)",
                _bandwidth(lambda: pageable.sum(dtype=np.uint64), nbytes, repeats),
            ]
        )
        # A round trip from a second thread: CUDA contexts are per thread (item 8).
        back = {}

        def worker():
            try:
                other = np.zeros(nbytes, np.uint8)
                cuda_memory.copy_to_device(dev, pinned, nbytes, stream)
                cuda_memory.copy_to_host(other, dev, nbytes, stream)
                stream.synchronize()
                back["equal"] = bool(np.array_equal(other, pinned))
            except Exception as exc:
                back["error"] = "{}: {}".format(type(exc).__name__, exc)

        thread = threading.Thread(target=worker, name="segdeploy-check-worker")
        thread.start()
        thread.join()
    finally:
        stream.close()
        dev.close()
        host.close()
    copy_out, why = devices.copy_outputs_from_pinned(ctx.artifacts["device"].record)
    data = {
        "summary": "pinned h2d {:.1f} GB/s, d2h {:.1f} GB/s; second thread {}; outputs {}".format(
            rows[0][2],
            rows[1][2],
            "ok" if back.get("equal") else "FAILED",
            "copied out" if copy_out else "read in place",
        ),
        "second_thread": back,
        "copy_outputs": copy_out,
        "copy_outputs_reason": why,
        "table": {"columns": ["memory", "transfer", "GB/s"], "rows": rows},
        "note": "{} MiB per transfer, median of {}; binding {}. {}".format(
            nbytes >> 20, repeats, cuda_memory.BINDING, why
        ),
    }
    if not back.get("equal"):
        raise Failed(
            "the round trip from a second thread failed: {}".format(
                back.get("error", "data differ")
            ),
            data,
        )
    return data
