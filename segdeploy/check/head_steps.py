"""The fused labels head on the device (issue 25): the SegHead kernel against its host build, label
for label, timed against the device's memory floor; then ``segbench --head`` (the standard
Resize + ArgMax against the fused head) on PyTorch with CUDA, and on the CPU the runtime's fused
head (what ``Runtime.infer`` runs for a ``--head fused`` CPU engine) against ONNX Runtime's graph.

Python 3.6 compatible; torch is imported only by the PyTorch rows, on a machine that has it.
"""

from .runner import Failed

# The kernel timing and the micro-benchmark at the paper's frame, 19 classes from stride 8 (the
# DDRNet / PIDNet / STDC head; RegSeg's is stride 4).
FRAME = (1024, 2048)
CLASSES, STRIDE = 19, 8


def step_seghead_gpu_check(ctx):
    """NVRTC-compiled SegHead kernels (FP32/FP16 logits, uint8/int32 labels) on this GPU."""
    from ..plugins.seghead import gpu_check

    kernels = gpu_check.Kernels()  # no CUDA driver: MissingDependencyError, the step skips
    cases = gpu_check.exactness(kernels)
    bad = [c for c in cases if c["mismatches"]]
    rows = gpu_check.timing(
        kernels, CLASSES, FRAME[0], FRAME[1], STRIDE, repeats=20 if ctx.quick else 100
    )
    table = [
        [
            r["precision"],
            r["labels"],
            "yes" if r["matches_host"] else "NO",
            r["median_ms"],
            r["floor_ms"],
            r["achieved_gbs"],
        ]
        for r in rows
    ]
    data = {
        "summary": "{}: {} exactness cases, {} with mismatches; {}".format(
            kernels.driver.name(),
            len(cases),
            len(bad),
            ", ".join("{}->{} {:.3f} ms".format(r[0], r[1], r[3]) for r in table),
        ),
        "table": {
            "columns": ["logits", "labels", "matches host", "median ms", "floor ms", "GB/s"],
            "rows": table,
        },
        "note": "{} classes from stride {} to {}x{}; floor: the fused head's bytes over the "
        "device table's bandwidth.".format(CLASSES, STRIDE, FRAME[0], FRAME[1]),
    }
    if bad or not all(r["matches_host"] for r in rows):
        raise Failed("the SegHead kernel differs from its host build", data)
    return data


def step_head_bench(ctx):
    """segbench --head: PyTorch on CUDA (where torch has it) and the CPU's runtime head."""
    from ..bench import head

    ctx.need_probe("torch_cuda", "segbench --head on the GPU runs the PyTorch backend")
    warmup, iters = (3, 10) if ctx.quick else (10, 50)
    result = head.run(
        ["torch", "onnxruntime"], CLASSES, STRIDE, FRAME[0], FRAME[1], warmup, iters, device="cuda"
    )
    rows = [
        [
            r["backend"],
            r["device"],
            r["precision"],
            r["head"],
            r["median_ms"],
            r["speedup"],
            r["equal_to_host_build"],
        ]
        for r in result["rows"]
    ]
    data = {
        "summary": ", ".join(
            "{} {} {}: {:.3f} ms".format(
                r[0], r[2], "fused" if r[3] == head.FUSED else "standard", r[4]
            )
            for r in rows
        ),
        "table": {
            "columns": [
                "backend",
                "device",
                "precision",
                "head",
                "median ms",
                "speed-up",
                "labels = host build",
            ],
            "rows": rows,
        },  # fmt: skip
        "note": "{} classes from stride {} to {}x{}; {:.1%} of the pixels needed every class "
        "interpolated.".format(CLASSES, STRIDE, FRAME[0], FRAME[1], result["slow_fraction"]),
    }
    fused = [r for r in result["rows"] if r["head"] == head.FUSED]
    if not all(r["equal_to_host_build"] == 1.0 for r in fused):
        raise Failed("a fused head's labels differ from the host build's", data)
    return data
