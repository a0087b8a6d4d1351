"""Timing several things in one loop, interleaved: every round runs each of them once, the first
one rotating, so that a burst of load on the machine falls on all of them alike and the ratio of
two of them can be taken round by round (paired). The one loop of ``segbench --compare``,
``--blocks`` and ``--head``.
Python 3.6 compatible.
"""

import time


def time_interleaved(calls, warmup, iters, sync=lambda: None, progress=None):
    """{label: callable} -> {label: [ms per round]}. ``sync`` runs after each call (a device's
    synchronize); ``progress(done, total)`` after each round."""
    labels = list(calls)
    for _ in range(warmup):
        for label in labels:
            calls[label]()
    sync()
    samples = dict((label, []) for label in labels)
    for i in range(iters):
        k = i % len(labels)
        for label in labels[k:] + labels[:k]:
            start = time.perf_counter()
            calls[label]()
            sync()
            samples[label].append((time.perf_counter() - start) * 1e3)
        if progress is not None:
            progress(i + 1, iters)
    return samples
