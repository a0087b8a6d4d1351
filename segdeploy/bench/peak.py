"""The device's peak throughput, for "share of the floor reached" (multiply-adds over peak).

On a GPU the peak comes from the device table (``segdeploy.engines.devices``) when it is present
and knows the part. On the CPU, where no vendor figure applies to an arbitrary host, it is
measured: the best of several fp32 matrix products through numpy's BLAS, which is what a
convolution lowers to at best. Python 3.6 compatible.
"""

import time
from collections import namedtuple

import numpy as np

Peak = namedtuple("Peak", ["gflops", "source", "device"])
Peak.__doc__ = """Peak fp32 (or the run's precision) GFLOP/s; where it came from; device name."""


def measure_cpu_fp32_gflops(n=1024, repeats=10):
    """Best-of-``repeats`` GFLOP/s of an n x n x n float32 matmul (2 n^3 FLOPs each)."""
    rng = np.random.RandomState(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)  # warm the BLAS threads and caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def device_peak(device_kind="cpu", precision="fp32", measured_cache=None):
    """A Peak for the device the run used: tabulated for a known GPU, else measured on the CPU."""
    if device_kind == "cuda":
        try:
            from ..engines import devices

            detected = devices.detect()
            record = detected.record
            if record is not None and record.peak(precision):
                return Peak(
                    record.peak(precision) * 1e3,
                    "device table (segdeploy.engines.devices, {})".format(record.key),
                    record.name,
                )
            return Peak(None, "device not in the table", detected.gpu_name)
        except ImportError:
            return Peak(None, "no device table in this checkout", "cuda")
    if measured_cache is not None and "cpu" in measured_cache:
        return measured_cache["cpu"]
    peak = Peak(measure_cpu_fp32_gflops(), "measured: best fp32 1024^3 numpy matmul", "host CPU")
    if measured_cache is not None:
        measured_cache["cpu"] = peak
    return peak


def floor_ms(macs, peak):
    """Lower bound on one forward pass in ms: 2 FLOPs per multiply-add over the peak."""
    if not macs or peak is None or not peak.gflops:
        return None
    return 2.0 * macs / (peak.gflops * 1e9) * 1e3
