"""Summary statistics of latency samples (milliseconds). Python 3.6 compatible, numpy only."""

import numpy as np

from ..errors import SegDeployError

FIELDS = ("mean", "median", "p90", "p99", "min", "max", "std", "fps")


def summarize(samples_ms):
    """Dict of mean / median / p90 / p99 / min / max / std (ms) and fps (1000 / mean)."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    if samples.size == 0:
        raise SegDeployError("no timed iterations to summarize (iters must be >= 1)")
    mean = float(samples.mean())
    return {
        "mean": mean,
        "median": float(np.median(samples)),
        "p90": float(np.percentile(samples, 90)),
        "p99": float(np.percentile(samples, 99)),
        "min": float(samples.min()),
        "max": float(samples.max()),
        # ddof=1: the spread of the population the samples come from, not of these samples
        "std": float(samples.std(ddof=1)) if samples.size > 1 else 0.0,
        "fps": 1000.0 / mean if mean > 0 else float("inf"),
        "n": int(samples.size),
    }
