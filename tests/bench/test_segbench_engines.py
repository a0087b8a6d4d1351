"""segbench on engine files: dynamic profiles, several engines in one table, what bench.json
records, like-with-like speed-ups, the spread warning, the engine's own memory, -q / -v."""

import json
import os
import sys

import numpy as np
import pytest

from segdeploy.bench import cli, memory, report, stats
from segdeploy.errors import SegDeployError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "runtime"))
from runtime_support import tiny_card, tiny_model  # noqa: E402

FAST = ["--iters", "3", "--warmup", "1", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """A static 64x128 tiny RegSeg and a dynamic one (32x64 .. 128x256, opt 64x128)."""
    from segdeploy import card as card_mod
    from segdeploy.export import export_onnx

    out = tmp_path_factory.mktemp("engines")
    static = out / "static.onnx"
    export_onnx(tiny_model(), str(static), height=64, width=128, card=tiny_card())
    dynamic = out / "dynamic.onnx"
    card = tiny_card()
    card["input"]["dynamic"] = {"min": [32, 64], "opt": [64, 128], "max": [128, 256]}
    export_onnx(tiny_model(), str(dynamic), height=64, width=128, dynamic=True, card=card)
    card_mod.write_sidecar(str(dynamic), card)  # as segexport writes it
    return str(static), str(dynamic)


def test_dynamic_engine_runs_at_sizes_inside_its_profile(engines, tmp_path, capsys):
    _, dynamic = engines
    out = tmp_path / "b.json"
    argv = ["--engine", dynamic, "--res", "96x192,128x256", "--json", str(out)] + FAST
    assert cli.main(argv) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [r["resolution"] for r in runs] == [[96, 192], [128, 256]]
    assert [r["frame"] for r in runs] == [[96, 192], [128, 256]]
    # more pixels, more work: the counted multiply-adds follow the size actually run
    assert runs[1]["macs"] > runs[0]["macs"]
    capsys.readouterr()  # (3 iterations on a shared machine may well warn about the spread)
    # outside the profile, or off the stride: one line each
    assert cli.main(["--engine", dynamic, "--res", "256x512"] + FAST) == 2
    err = capsys.readouterr().err
    assert "outside" in err and "32x64 to 128x256" in err and err.count("\n") == 1
    assert cli.main(["--engine", dynamic, "--res", "100x200"] + FAST) == 2
    assert "stride" in capsys.readouterr().err


def test_several_engines_in_one_table_and_bench_json(engines, tmp_path, capsys):
    static, dynamic = engines
    out = tmp_path / "bench.json"
    argv = ["--engine", static, "--engine", dynamic, "--json", str(out)] + FAST
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    start = [i for i, line in enumerate(lines) if line.startswith("mean ms")][0] - 1
    table = "\n".join(lines[start:])
    assert lines[start].split() == ["static.onnx", "dynamic.onnx"]  # a column per engine file
    speedup = [line for line in table.splitlines() if line.startswith("speed-up")][0]
    assert speedup.split()[2] == "1.00x" and speedup.split()[3].endswith("x")
    data = json.loads(out.read_text())
    assert data["command"].startswith("segbench --engine ") and dynamic in data["command"]
    assert [r["engine"]["path"] for r in data["runs"]] == [static, dynamic]
    for run in data["runs"]:
        assert run["engine"]["backend"] == "onnxruntime"
        assert run["engine"]["precision"] == "fp32"
        assert run["command"] == data["command"]
    assert data["runs"][0]["engine"]["dynamic"] is None
    assert data["runs"][1]["engine"]["dynamic"]["max"] == [128, 256]


def test_quiet_prints_one_result_line_per_run_and_verbose_adds_detail(engines, capsys):
    static, dynamic = engines
    assert cli.main(["-q", "--engine", static, "--engine", dynamic] + FAST) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and "median" in out[0] and "FPS" in out[0] and "scope" not in out[0]
    assert cli.main(["-v", "--engine", static] + FAST) == 0
    assert "detail:   memory by" in capsys.readouterr().out


def _rec(res, median, protocol="regseg", cv=0.01, path=None):
    lat = {k: median for k in ("mean", "median", "p90", "p99", "min", "max")}
    lat.update(std=cv * median, cv=cv, fps=1000.0 / median, n=3)
    return {
        "backend": "onnxruntime",
        "resolution": list(res),
        "frame": list(res),
        "protocol": protocol,
        "batch": 1,
        "latency_ms": lat,
        "spread_warning": stats.spread_warning(lat),
        "fps": 1000.0 / median,
        "macs": None,
        "memory": {"peak_mb": 10.0},
        "floor_share": None,
        "scope_text": "forward",
        "device_name": "cpu",
        "engine": {"path": path, "backend": "onnxruntime", "precision": "fp32"},
    }


def test_speedups_compare_like_with_like():
    records = [
        _rec((64, 128), 10.0, path="a.onnx"),
        _rec((128, 256), 40.0, path="a.onnx"),
        _rec((64, 128), 5.0, path="b.onnx"),
        _rec((128, 256), 10.0, path="b.onnx"),
        _rec((256, 512), 90.0, path="b.onnx"),  # alone at its size: no speed-up at all
    ]
    assert report.speedups(records) == [1.0, 1.0, 2.0, 4.0, None]
    table = report.format_table(records)
    line = [row for row in table.splitlines() if row.startswith("speed-up")][0]
    assert line.split()[2:] == ["1.00x", "1.00x", "2.00x", "4.00x", "-"]
    assert "same resolution" in table
    # the same size under another protocol is other work: no speed-up against it either
    assert report.speedups([_rec((64, 128), 10.0), _rec((64, 128), 5.0, "mmseg")]) == [None, None]


def test_spread_warning_above_ten_percent():
    assert stats.summarize([10.0, 10.0, 10.0])["cv"] == 0.0
    noisy = stats.summarize([10.0, 14.0, 7.0, 12.0])
    assert noisy["cv"] == pytest.approx(np.std([10, 14, 7, 12], ddof=1) / 10.75)
    assert "coefficient of variation" in stats.spread_warning(noisy)
    assert stats.spread_warning(stats.summarize([10.0, 10.2, 9.9])) is None
    table = report.format_table([_rec((64, 128), 10.0, cv=0.02), _rec((64, 128), 9.0, cv=0.3)])
    cv_row = [row for row in table.splitlines() if row.startswith("spread (CV)")][0]
    assert cv_row.split()[-4:] == ["2.0", "%", "30.0", "%!"]
    assert "unstable" in table
    block = report.format_run(dict(_full_record(cv=0.3)))
    assert "WARNING: unstable" in block


def _full_record(cv):
    rec = _rec((64, 128), 10.0, cv=cv, path="a.onnx")
    rec.update(
        model="regseg_tiny",
        warmup=1,
        iters=3,
        device="cpu",
        timer="host",
        params=None,
        floor_ms=None,
        peak_gflops=None,
        peak_source="-",
        loop_fps=100.0,
        versions={},
    )
    rec["memory"] = {"peak_mb": 10.0, "kind": "test", "open_mb": 5.0}
    return rec


def test_engine_memory_is_the_engine_s_not_the_process_peak():
    big = np.ones(300 * 2**20 // 8)  # 300 MiB touched, then freed: the process peak stays
    del big
    assert memory.process_peak_mb() - memory.current_rss_mb() >= 250
    probe = memory.EngineMemory().start()
    engine = np.ones(60 * 2**20 // 8)  # what "the engine" holds: 60 MiB
    probe.opened()
    figures = probe.stop()
    assert 50 <= figures["open_mb"] <= 120
    assert 50 <= figures["peak_mb"] <= 120
    del engine
    # a transient inside the measured span counts toward the peak, not toward "opened"
    probe = memory.EngineMemory().start()
    probe.opened()
    spike = np.ones(80 * 2**20 // 8)
    del spike
    figures = probe.stop()
    assert figures["peak_mb"] >= 70 and figures["open_mb"] < 20


def test_segbench_engine_memory_row_is_small_for_a_tiny_engine(engines, tmp_path):
    static, _ = engines
    out = tmp_path / "m.json"
    np.ones(400 * 2**20 // 8).sum()  # the process peak is now far above any tiny engine
    assert cli.main(["--engine", static, "--json", str(out)] + FAST) == 0
    (run,) = json.loads(out.read_text())["runs"]
    mem = run["memory"]
    assert mem["peak_mb"] is not None and mem["peak_mb"] < 200
    assert mem["process_peak_mb"] > mem["rss_before_mb"]
    assert "opening and running" in mem["kind"]


def test_sizes_for_static_engine_refuses_other_sizes(engines):
    from segdeploy.bench import engine_runs, protocols

    card = tiny_card()
    regseg = protocols.get("regseg")
    assert engine_runs.sizes_for("e", card, None, regseg, cli.parse_resolutions) == [
        ((64, 128), (64, 128))
    ]
    with pytest.raises(SegDeployError, match="built for it"):
        engine_runs.sizes_for("e", card, "128x256", regseg, cli.parse_resolutions)
    runtime = protocols.get("runtime")
    assert engine_runs.sizes_for("e", card, "128x256", runtime, cli.parse_resolutions) == [
        ((64, 128), (128, 256))
    ]


def test_engine_memory_sampled_where_the_peak_cannot_be_reset(monkeypatch):
    import time

    monkeypatch.setattr(memory, "reset_peak", lambda: False)
    probe = memory.EngineMemory().start()
    assert probe.method.startswith("resident set sampled")
    held = np.ones(80 * 2**20 // 8)
    time.sleep(0.1)  # several sampling periods
    del held
    figures = probe.stop()
    assert figures["peak_mb"] >= 70 and figures["rss_mb"] - figures["rss_before_mb"] < 40
