"""segbench where features meet (issue 23): a missing plan says what builds one and what is
beside it; long runs say how long up front and print plain progress lines off a terminal;
SIGTERM prints what was done; the --precisions table keeps precisions apart and prints no rows
of dashes."""

import io
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from segdeploy.bench import cli, progress, report

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "runtime"))
from runtime_support import export_tiny  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ["--iters", "3", "--warmup", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("seams") / "regseg.onnx"
    export_tiny(path, height=64, width=128)
    return str(path)


def test_missing_plan_says_what_builds_one_and_what_is_beside_it(onnx_file, capsys):
    folder = os.path.dirname(onnx_file)
    plan = os.path.join(folder, "regseg.plan")
    assert cli.main(["--engine", plan, "--res", "1024x2048"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "segbuild {}.onnx".format(os.path.join(folder, "regseg")) in err
    assert "segexport --backend tensorrt" in err
    assert "beside it: " + onnx_file in err
    # nothing with that stem anywhere near: said so, still one line
    assert cli.main(["--engine", os.path.join(folder, "other.plan")]) == 2
    err = capsys.readouterr().err
    assert "no other engine named" in err and err.count("\n") == 1


class _Clock(object):
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_estimates_up_front_and_prints_plain_lines_off_a_terminal(monkeypatch):
    stream, clock = io.StringIO(), _Clock()  # StringIO: not a terminal
    p = progress.Progress(runs=2, stream=stream, clock=clock)
    p.start("regseg.xml 1024x2048")
    p.estimate(1.5, 1000)  # 1.5 s an iteration, 1000 iterations: 25 minutes
    first = stream.getvalue()
    assert "1000 timed iterations at ~1500 ms each" in first and "about 25 min 00 s" in first
    assert "1 more run after it" in first and "--iters {}".format(progress.QUICK_ITERS) in first
    for done in range(1, 1001):
        clock.now += 1.5
        p(done)
    lines = stream.getvalue().splitlines()[1:]
    # a line at each tenth (they are 150 s apart), the last one saying the run is complete
    assert len(lines) == 10, lines
    assert lines[0].startswith("segbench: regseg.xml 1024x2048: 100/1000 iterations")
    assert "about 22 min 30 s left" in lines[0]
    assert "1000/1000" in lines[-1] and "left" not in lines[-1]
    assert p.summary().startswith("1 of 2 runs finished")
    # a short run: no estimate, no progress lines
    stream2 = io.StringIO()
    q = progress.Progress(stream=stream2, clock=_Clock())
    q.start("run")
    q.estimate(0.001, 50)
    for done in range(1, 51):
        q(done)
    assert stream2.getvalue() == ""
    # a run of 20 s: the estimate without the fast form
    q.start("medium")
    q.estimate(0.2, 100)
    assert "about 20 s" in stream2.getvalue() and "--iters" not in stream2.getvalue()
    # interrupted halfway: what was done
    r = progress.Progress(runs=2, stream=io.StringIO(), clock=_Clock())
    r.start("first")
    r.estimate(0.001, 50)
    r(50)
    r.start("second")
    r.estimate(0.001, 50)
    r(20)
    assert r.summary() == (
        "1 of 2 runs finished (second stopped at 20/50 iterations); no results were written"
    )


def test_segbench_prints_the_estimate_on_stderr_and_not_under_quiet(onnx_file, capsys, monkeypatch):
    monkeypatch.setattr(progress, "ESTIMATE_FROM_S", 0.0)  # announce even this short run
    assert cli.main(["--engine", onnx_file] + FAST) == 0
    err = capsys.readouterr().err
    assert "3 timed iterations at ~" in err and "(timed in the warm-up)" in err
    assert cli.main(["--engine", onnx_file, "-q"] + FAST) == 0
    assert "timed iterations" not in capsys.readouterr().err


def test_sigterm_prints_what_was_done_and_exits_143(onnx_file, tmp_path):
    # A stand-in engine that takes a second per iteration, timed through the real CLI.
    script = tmp_path / "slow.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time
            from segdeploy.runtime import onnxruntime_backend as ob
            infer = ob.OnnxRuntimeEngine._infer_impl
            def slow(self, feeds):
                time.sleep(0.5)
                return infer(self, feeds)
            ob.OnnxRuntimeEngine._infer_impl = slow
            from segdeploy.bench.cli import main
            sys.exit(main(sys.argv[1:]))
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, str(script), "--engine", onnx_file, "--iters", "200", "--warmup", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    # the estimate comes after the warm-up; then stop it
    line = proc.stderr.readline()
    assert "200 timed iterations" in line and "--iters 20" in line, line
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("segbench: interrupted; 0 of 1 run finished (regseg.onnx 64x128 stopped at ")
    ), err
    assert "Traceback" not in err


def _record(backend, precision, path):
    return {
        "model": "regseg",
        "backend": backend,
        "precision": precision,
        "engine": {"path": path, "backend": backend, "precision": precision},
        "protocol": "regseg",
        "resolution": [64, 128],
        "frame": [64, 128],
        "batch": 1,
        "warmup": 1,
        "iters": 3,
        "device": "cpu",
        "device_name": "cpu",
        "timer": "t",
        "scope_text": "s",
        "latency_ms": dict(
            mean=2.0, median=2.0, p90=2.0, p99=2.0, min=2.0, max=2.0, std=0.0, cv=0.0
        ),
        "fps": 500.0,
        "loop_fps": 500.0,
        "params": None,
        "macs": None,
        "peak_gflops": None,
        "peak_source": "-",
        "floor_ms": None,
        "floor_share": None,
        "memory": {"peak_mb": 1.0, "kind": "k", "open_mb": None},
        "versions": {},
    }


def test_precision_columns_and_titles_keep_the_precision_and_print_no_dashes():
    records = [
        _record("onnxruntime", "fp32", "m.onnx"),
        _record("openvino", "fp32", "m.onnx"),
        _record("openvino", "bf16", "m.onnx"),
        _record("onnxruntime", "int8", "m.int8.onnx"),
    ]
    heads = [report._column_name(r, records) for r in records]
    assert heads == ["onnxruntime fp32", "openvino fp32", "openvino bf16", "onnxruntime int8"]
    titles = [report.format_run(r).splitlines()[0] for r in records]
    assert len(set(titles)) == len(titles) and "openvino bf16" in titles[2]
    text = "\n".join(report.format_run(r) for r in records) + report.format_table(records)
    assert "- params" not in text and "floor:" not in text and "once opened" not in text
    assert "multiply-adds" not in text and "floor share" not in text
    # with counts known the rows are there
    for r in records:
        r.update(params=1000, macs=2 * 10**9, floor_ms=1.0, floor_share=0.5, peak_gflops=10.0)
    text = report.format_run(records[0]) + report.format_table(records)
    assert "1.00 k params, 2.00 G multiply-adds" in text and "floor share" in text


def test_precisions_table_on_a_real_graph(onnx_file, capsys):
    pytest.importorskip("onnxruntime")
    assert cli.main(["--engine", onnx_file, "--precisions", "fp32", "--no-progress"] + FAST) == 0
    out = capsys.readouterr().out
    assert "- params" not in out and "floor:    - ms" not in out
    assert "multiply-adds   -" not in out
