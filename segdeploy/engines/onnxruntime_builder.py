"""An ONNX Runtime "engine" for this machine: the graph as ONNX Runtime optimizes it here.

ONNX Runtime optimizes a graph each time a session opens it (fusions, constant folding and, at
the highest level, the CPU's blocked NCHWc layout). Saving the optimized graph in ONNX Runtime's
own format (``.ort``) moves that work to build time and fixes what runs: the engine file is what
this machine's ONNX Runtime chose. Layout optimizations depend on the CPU's instruction set, so
the fingerprint records it; the runtime reopens the file with optimizations already applied.
Python 3.6 compatible.
"""

import os
import platform
import time

from .. import card as card_mod
from .._deps import require
from .._io import atomic_path
from ..errors import EngineError

LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def cpu_name():
    """The CPU's model name (Linux /proc/cpuinfo), or platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_isa():
    """The SIMD extensions ONNX Runtime's CPU kernels dispatch on (x86: AVX2/AVX-512/VNNI)."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    wanted = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile")
    return [f for f in wanted if f in flags] or [platform.machine()]


def optimized_op_counts(ort, onnx_path, level="all", threads=None):
    """{op_type: count} of the graph ONNX Runtime runs here after optimization at ``level``.

    The blocked NCHWc layout shows up as ``ReorderInput``/``ReorderOutput`` nodes at every
    boundary where an op cannot stay blocked (e.g. sequence ops): few reorders means the
    exported graph suits the CPU kernels.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="segdeploy-ort-") as tmpdir:
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
        options.optimized_model_filepath = os.path.join(tmpdir, "optimized.onnx")
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        onnx = require("onnx", "inspecting the optimized graph")
        graph = onnx.load(options.optimized_model_filepath).graph
    counts = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def build_onnxruntime_engine(onnx_path, engine_path, card, threads=None, level="all", log=print):
    """Optimize ``onnx_path`` for this CPU and save it as ``engine_path`` (``.ort``) with its card.

    Returns the sidecar card (the input card plus an ``engine`` section).
    """
    ort = require("onnxruntime", "building an ONNX Runtime engine")
    start = time.perf_counter()
    with atomic_path(engine_path) as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
        options.optimized_model_filepath = tmp
        options.add_session_config_entry("session.save_model_format", "ORT")
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT's own Fail/RuntimeException types, e.g. a full disk
            text = str(exc).strip()
            raise EngineError(
                "ONNX Runtime could not optimize {} and save it as {}: {}".format(
                    onnx_path,
                    os.path.basename(engine_path),
                    text.splitlines()[0][:300] if text else type(exc).__name__,
                )
            ) from None
        if not os.path.getsize(tmp):
            raise EngineError(
                "ONNX Runtime wrote an empty {} (is the disk full?)".format(
                    os.path.basename(engine_path)
                )
            )
    seconds = time.perf_counter() - start
    ops = optimized_op_counts(ort, onnx_path, level, threads)
    reorders = {k: ops.get(k, 0) for k in ("ReorderInput", "ReorderOutput")}
    log(
        "      optimized graph: {} nodes, {} ReorderInput / {} ReorderOutput (NCHWc layout "
        "changes)".format(sum(ops.values()), reorders["ReorderInput"], reorders["ReorderOutput"])
    )
    engine = {
        "backend": "onnxruntime",
        "format": "ort",
        "precision": "fp32",
        "providers": ["CPUExecutionProvider"],
        "device": {"kind": "cpu", "name": cpu_name(), "isa": cpu_isa(), "cores": os.cpu_count()},
        "versions": {"onnxruntime": ort.__version__},
        "session": {
            "graph_optimization_level": level,
            "intra_op_num_threads": threads,
            "saved_format": "ORT",
        },
        "source_onnx": os.path.basename(onnx_path),
        "optimized_ops": ops,
        "layout_reorders": reorders,
        "build_seconds": round(seconds, 3),
    }
    sidecar = card_mod.with_engine(card, engine)
    card_mod.write_sidecar(engine_path, sidecar)
    return sidecar
