"""Summary statistics of latency samples (milliseconds). Python 3.6 compatible, numpy only."""

import numpy as np

from ..errors import SegDeployError

FIELDS = ("mean", "median", "p90", "p99", "min", "max", "std", "cv", "fps")

# Above this coefficient of variation (std / mean) a run is flagged as unstable. trtexec warns
# from 1 % on a GPU; a CPU shared with other work rarely gets below a few per cent.
SPREAD_WARN_CV = 0.10
# Two samples give a CV, but not one worth a warning (any two timings differ).
MIN_SPREAD_SAMPLES = 3


def summarize(samples_ms):
    """Dict of mean / median / p90 / p99 / min / max / std (ms), cv (std / mean, the coefficient
    of variation) and fps (1000 / mean)."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    if samples.size == 0:
        raise SegDeployError("no timed iterations to summarize (iters must be >= 1)")
    mean = float(samples.mean())
    std = float(samples.std(ddof=1)) if samples.size > 1 else 0.0
    return {
        "mean": mean,
        "median": float(np.median(samples)),
        "p90": float(np.percentile(samples, 90)),
        "p99": float(np.percentile(samples, 99)),
        "min": float(samples.min()),
        "max": float(samples.max()),
        # ddof=1: the spread of the population the samples come from, not of these samples
        "std": std,
        "cv": std / mean if mean > 0 else 0.0,
        "fps": 1000.0 / mean if mean > 0 else float("inf"),
        "n": int(samples.size),
    }


def spread_warning(summary, threshold=SPREAD_WARN_CV):
    """A sentence when the samples spread more than ``threshold`` (as a CV), else None."""
    cv = summary.get("cv")
    if cv is None or cv <= threshold or summary.get("n", MIN_SPREAD_SAMPLES) < MIN_SPREAD_SAMPLES:
        return None
    return (
        "the latency spread is {:.0f} % of the mean (coefficient of variation, std / mean; "
        "above {:.0f} %): the machine was busy or its clocks changed, so these figures are "
        "unstable; re-run on a quiet machine or with more --iters".format(100 * cv, 100 * threshold)
    )
