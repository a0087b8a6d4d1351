"""Load a served model with N concurrent clients: throughput and latency percentiles per level.

What Triton's ``perf_analyzer --concurrency-range`` reports, from Python and through the same
``Runtime`` a user calls: each of N threads opens its own ``Runtime(url)`` (its own connection),
sends ``warmup`` requests, waits for the others, then sends ``requests`` frames back to back and
times each ``infer`` (frame in, label map out: the wire both ways and the server's queue, batch
and compute). Throughput is the answered requests over the wall time from the common start to
the last answer. A failed request is counted with its one-line reason, never retried; when
``expected`` labels are given, every answer is compared with them (a mismatch is counted).
Python 3.6 compatible; numpy only (the backend comes with the Runtime).
"""

import threading
import time

import numpy as np

from ..errors import SegDeployError
from . import stats


def parse_levels(text):
    """'1,4,8' -> [1, 4, 8]."""
    try:
        levels = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        levels = []
    if not levels or any(v < 1 for v in levels):
        raise SegDeployError(
            "--concurrency takes positive client counts such as 1,4,8; got {!r}".format(text)
        )
    return levels


def _client(url, frames, expected, warmup, requests, options, start, out):
    from ..runtime.runtime import Runtime

    latencies, errors, mismatches = [], [], 0
    runtime = None
    try:
        runtime = Runtime(url, **options)
        for i in range(warmup):
            runtime.infer(frames[i % len(frames)])
    except SegDeployError as exc:
        errors.append(str(exc).splitlines()[0])
    except Exception as exc:  # a bug or a transport error: counted, and the barrier still met
        errors.append("{}: {}".format(type(exc).__name__, str(exc).splitlines()[0][:200]))
    start.wait()  # every client starts timing together (also when its set-up failed)
    if runtime is not None and not errors:
        for i in range(requests):
            index = i % len(frames)
            began = time.perf_counter()
            try:
                labels = runtime.infer(frames[index])
            except Exception as exc:  # SegDeployError: one line; anything else: its type too
                text = str(exc).splitlines()[0] if str(exc) else ""
                if not isinstance(exc, SegDeployError):
                    text = "{}: {}".format(type(exc).__name__, text[:200])
                errors.append(text)
                break  # the server is gone or refuses: this client stops, as a camera would
            latencies.append((time.perf_counter() - began) * 1e3)
            if expected is not None and not np.array_equal(labels, expected[index]):
                mismatches += 1
    out.update(
        latencies=latencies, errors=errors, mismatches=mismatches, finished=time.perf_counter()
    )
    if runtime is not None:
        runtime.close()


def run_level(url, concurrency, frames, requests=50, warmup=2, expected=None, options=None):
    """One concurrency level: a JSON-able record (throughput, latency statistics, errors)."""
    options = dict(options or {})
    start = threading.Barrier(concurrency + 1)
    results = [{} for _ in range(concurrency)]
    threads = [
        threading.Thread(
            target=_client,
            args=(url, frames, expected, warmup, requests, options, start, results[i]),
            name="segbench-client-{}".format(i),
            daemon=True,
        )
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    timeout = float(options.get("timeout", 30.0))
    for thread in threads:
        # A client's every request is bounded by the Runtime's timeout: waiting for all of them
        # longer than that means something in the client hangs, which is itself a failure.
        thread.join(timeout=timeout * (requests + warmup + 1) + 30)
    hung = sum(1 for t in threads if t.is_alive())
    latencies = [v for r in results for v in r.get("latencies", [])]
    errors = [e for r in results for e in r.get("errors", [])]
    finished = max([r["finished"] for r in results if "finished" in r] or [time.perf_counter()])
    wall = max(finished - began, 1e-9)
    record = {
        "url": url,
        "concurrency": concurrency,
        "requests_per_client": requests,
        "warmup_per_client": warmup,
        "answered": len(latencies),
        "errors": len(errors),
        "error_messages": sorted(set(errors))[:5],
        "mismatches": (
            sum(r.get("mismatches", 0) for r in results) if expected is not None else None
        ),
        "hung_clients": hung,
        "wall_s": wall,
        "throughput": len(latencies) / wall,
        "frame": list(frames[0].shape[:2]),
    }
    record["latency_ms"] = stats.summarize(latencies) if latencies else None
    if latencies:
        record["latency_ms"]["p95"] = float(np.percentile(latencies, 95))
        record["latency_ms"]["p50"] = record["latency_ms"]["median"]
    return record


def run(url, levels, frames, requests=50, warmup=2, expected=None, options=None, progress=None):
    """``run_level`` for each of ``levels``; returns the records."""
    records = []
    for level in levels:
        if progress is not None:
            progress("concurrency {}".format(level))
        records.append(run_level(url, level, frames, requests, warmup, expected, options))
    return records


def format_table(records):
    """perf_analyzer-style lines: one per concurrency level."""
    header = "{:>11}  {:>8}  {:>6}  {:>10}  {:>8}  {:>8}  {:>8}  {:>8}".format(
        "concurrency", "requests", "errors", "infer/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms"
    )
    lines = [header]
    for r in records:
        lat = r["latency_ms"] or {}

        def ms(key, lat=lat):
            return "{:8.2f}".format(lat[key]) if key in lat else "{:>8}".format("-")

        lines.append(
            "{:>11}  {:>8}  {:>6}  {:>10.1f}  {}  {}  {}  {}".format(
                r["concurrency"],
                r["answered"],
                r["errors"],
                r["throughput"],
                ms("p50"),
                ms("p90"),
                ms("p95"),
                ms("p99"),
            )
        )
    return "\n".join(lines)


def write_csv(path, records):
    from .._io import write_bytes

    keys = ("concurrency", "answered", "errors", "throughput", "p50", "p90", "p95", "p99", "mean")
    rows = [",".join(keys)]
    for r in records:
        lat = r["latency_ms"] or {}
        values = [r["concurrency"], r["answered"], r["errors"], round(r["throughput"], 3)]
        values += [round(lat[k], 4) if k in lat else "" for k in keys[4:]]
        rows.append(",".join(str(v) for v in values))
    write_bytes(path, ("\n".join(rows) + "\n").encode("utf-8"))
