"""The timing harness: run one protocol on one opened engine and return a self-describing record.

The record states what was inside the timer (``scope``), the device, the library versions, the
latency statistics, the complexity, the peak memory and the share of the device's floor reached.
Host clocks (``time.perf_counter``) throughout; on CUDA the device is synchronized as the
protocol says (after every iteration, or around the loop for SwiftNet's Fig. 5).
Python 3.6 compatible; imports no backend library itself.
"""

import platform
import sys
import time

import numpy as np

from ..samples import sample_frame
from . import peak as peak_mod
from . import stats
from .memory import EngineMemory
from .protocols import describe_scope


def environment():
    """Machine and library versions that every report carries."""
    import os

    info = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
    }
    for name in ("cv2", "onnxruntime", "torch", "tensorrt"):
        module = sys.modules.get(name)  # only what this run actually loaded
        if module is not None:
            info[name] = getattr(module, "__version__", "?")
    return info


def _cpu_name():
    try:
        with open("/proc/cpuinfo", "r") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _rss_mb():
    """(current, peak) resident set of this process in MiB; peak is since process start."""
    current = peak = None
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    except ImportError:
        pass
    try:
        with open("/proc/self/statm", "r") as f:
            import os

            current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2.0**20
    except (OSError, ValueError, AttributeError):
        pass
    return current, peak


def complexity_of(model, height, width):
    """(params, macs) of a torch module at ``height`` x ``width``, or (None, None)."""
    if model is None:
        return None, None
    try:
        from .counting import complexity
    except ImportError:
        return None, None
    counted = complexity(model, (height, width))
    return int(counted.params), int(counted.macs)


def _make_step(engine, protocol, height, width, frame_hw):
    """(callable timed once per iteration, scope actually timed)."""
    from ..runtime.postprocess import Postprocessor

    device_kind = getattr(engine, "device_kind", "cpu")
    spec = engine.inputs[0]
    feeds = {
        spec.name: np.random.RandomState(0)
        .standard_normal((protocol.batch, 3, height, width))
        .astype(np.float32)
    }
    if np.dtype(spec.dtype) == np.uint8:  # segexport --input uint8: frames go in as they are
        frame = sample_frame(height, width)
        feeds = {spec.name: np.ascontiguousarray(np.repeat(frame[None], protocol.batch, 0))}
    out_kind = engine.outputs[0].name
    labels_in_graph = out_kind == "labels"
    scope = list(protocol.scope)
    if protocol.name == "runtime":
        from ..runtime import Runtime

        # (height, width) is the card's size, or a size inside a dynamic engine's profile
        runtime = Runtime(engine, input_size=(height, width))
        frame = sample_frame(frame_hw[0], frame_hw[1])
        out = np.empty(frame_hw, np.uint8)
        return (lambda: runtime.infer(frame, out=out)), scope
    if labels_in_graph and "argmax" not in scope:
        scope.append("argmax")  # compiled into the graph: the engine cannot leave it out
    device_resident = protocol.name == "regseg" and hasattr(engine, "run_on_device")
    if device_resident and device_kind == "cuda":
        x = engine.to_device(feeds[spec.name])
        return (lambda: engine.run_on_device(x)), scope
    if device_kind == "cuda":
        for step in ("h2d", "d2h"):
            if step not in scope:
                scope.append(step)  # this engine takes and returns host arrays
    if protocol.name == "mmseg":
        card = getattr(engine, "card", None) or {"model": {"num_classes": 256}}
        post = Postprocessor(out_kind, card["model"]["num_classes"])
        out = np.empty(frame_hw, np.uint8)

        def step():
            result = engine.infer(feeds)[out_kind]
            for i in range(result.shape[0]):
                post(result[i], frame_hw, out)

        return step, scope
    return (lambda: engine.infer(feeds)), scope


def run(
    engine,
    protocol,
    height,
    width,
    model_name=None,
    frame_hw=None,
    params=None,
    macs=None,
    peak_cache=None,
    progress=None,
    memory=None,
):
    """Time ``engine`` under ``protocol`` at ``height`` x ``width``; returns a JSON-able dict.

    ``frame_hw`` is the frame size for protocols that resize to it (default: the input size).
    ``params`` / ``macs`` come from ``complexity_of`` (None when unknown). ``progress`` is called
    with the number of iterations done so far. ``memory`` is a ``memory.EngineMemory`` started
    before the engine was opened, so that the memory row is the engine's own; without it the
    figures cover running only (the engine was opened before this call).
    """
    if memory is None:
        memory = EngineMemory(
            cuda=getattr(engine, "device_kind", "cpu") == "cuda",
            scope="running the engine (opened before the measurement)",
        ).start()
    frame_hw = tuple(frame_hw or (height, width))
    device_kind = getattr(engine, "device_kind", "cpu")
    if hasattr(engine, "cudnn_benchmark"):
        engine.cudnn_benchmark = protocol.cudnn_benchmark
    step, scope = _make_step(engine, protocol, height, width, frame_hw)
    sync = getattr(engine, "synchronize", None) or (lambda: None)
    estimate = getattr(progress, "estimate", None)  # the run's length, said up front
    warm_start = time.perf_counter()
    for _ in range(protocol.warmup):
        step()
    sync()
    if estimate is not None and protocol.warmup:
        estimate((time.perf_counter() - warm_start) / protocol.warmup, protocol.iters)
        estimate = None
    if hasattr(engine, "reset_peak_memory"):
        engine.reset_peak_memory()
    samples = []
    loop_start = time.perf_counter()
    for i in range(protocol.iters):
        start = time.perf_counter()
        step()
        if protocol.sync == "iteration":
            sync()
        samples.append((time.perf_counter() - start) * 1e3)
        if estimate is not None:  # no warm-up: the first timed iteration says it
            estimate(samples[0] / 1e3, protocol.iters)
            estimate = None
        if progress is not None:
            progress(i + 1)
    sync()
    loop_ms = (time.perf_counter() - loop_start) * 1e3
    summary = stats.summarize(samples)
    device_mem = engine.peak_device_memory() if hasattr(engine, "peak_device_memory") else None
    mem = memory.stop(device_kind)
    mem["process_peak_mb"] = _rss_mb()[1]
    if device_mem is not None:  # torch's own count of what this engine allocated on the device
        mem["device_mb"] = device_mem / 2.0**20
        mem["device_kind"] = "torch max_memory_allocated during the timed loop"
    elif mem.get("device_mb") is not None:
        mem["device_kind"] = "drop in free device memory from before opening to the end"
    peak = peak_mod.device_peak(
        device_kind, "fp16" if getattr(engine, "fp16", False) else "fp32", peak_cache
    )
    floor = peak_mod.floor_ms(macs, peak)
    versions = environment()
    if hasattr(engine, "versions"):
        versions.update(engine.versions())
    return {
        "model": model_name or ((getattr(engine, "card", None) or {}).get("model", {}).get("name")),
        "backend": engine.backend,
        "protocol": protocol.name,
        "protocol_source": protocol.source,
        "resolution": [height, width],
        "frame": list(frame_hw),
        "batch": protocol.batch,
        "warmup": protocol.warmup,
        "iters": protocol.iters,
        "device": device_kind,
        "device_name": peak.device if device_kind == "cuda" else versions["cpu"],
        "options": dict(getattr(engine, "options", {})),
        "scope": scope,
        "scope_text": describe_scope(scope, device_kind),
        "timer": "host perf_counter, device synchronized {}".format(
            "after every iteration" if protocol.sync == "iteration" else "around the loop"
        )
        if device_kind == "cuda"
        else "host perf_counter (CPU: no device to synchronize)",
        "latency_ms": summary,
        "spread_warning": stats.spread_warning(summary),
        "fps": summary["fps"],
        "loop_fps": 1000.0 * protocol.iters * protocol.batch / loop_ms,
        "params": params,
        "macs": macs,
        "peak_gflops": peak.gflops,
        "peak_source": peak.source,
        "floor_ms": floor,
        "floor_share": floor / summary["median"] if floor else None,
        "memory": mem,
        "versions": versions,
        "samples_ms": [round(s, 4) for s in samples],
    }
