"""segbench: protocols as data, statistics, references, reports and the CLI end to end."""

import csv
import json

import numpy as np
import pytest

from segdeploy.bench import cli, protocols, references, report, stats
from segdeploy.bench.backends import parse_backends
from segdeploy.errors import SegDeployError
from segdeploy.export import export_onnx


def test_protocols_reproduce_the_papers():
    regseg = protocols.get("regseg")
    assert (regseg.warmup, regseg.iters, regseg.batch) == (10, 100, 1)
    assert regseg.cudnn_benchmark and regseg.mixed_precision
    assert "h2d" not in regseg.scope  # the input is already on the device
    swiftnet = protocols.get("swiftnet")
    assert swiftnet.iters == 1000 and swiftnet.loop_timer and swiftnet.fold_bn
    assert swiftnet.scope == ("h2d", "forward", "upsample", "argmax", "d2h")
    mmseg = protocols.get("mmseg")
    assert mmseg.iters == 200 and not mmseg.cudnn_benchmark
    assert "preprocess" not in mmseg.scope  # data loading excluded
    for p in protocols.PROTOCOLS.values():
        assert set(p.scope) <= set(protocols.STEPS)


def test_protocol_overrides_and_errors():
    p = protocols.get("swiftnet", warmup=2, iters=7)
    assert (p.warmup, p.iters) == (2, 7)
    assert protocols.get("swiftnet").iters == 1000  # records are immutable
    with pytest.raises(SegDeployError, match="known: regseg"):
        protocols.get("fast")
    with pytest.raises(SegDeployError, match="iters"):
        protocols.get("regseg", iters=0)


def test_summary_statistics():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["mean"] == pytest.approx(22.0) and s["median"] == 3.0
    assert s["min"] == 1.0 and s["max"] == 100.0
    assert s["fps"] == pytest.approx(1000 / 22.0)
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4, 100], ddof=1))
    assert s["p90"] == pytest.approx(np.percentile([1, 2, 3, 4, 100], 90))
    with pytest.raises(SegDeployError):
        stats.summarize([])


def test_resolutions_and_backends_are_parsed_with_helpful_errors():
    assert cli.parse_resolutions("512x1024, 1024x2048", 16) == [(512, 1024), (1024, 2048)]
    with pytest.raises(SegDeployError, match="992x2000 or 1008x2000"):
        cli.parse_resolutions("1000x2000", 16)
    with pytest.raises(SegDeployError, match="HxW"):
        cli.parse_resolutions("512*1024", 16)
    assert parse_backends("torch, ort") == ["torch", "onnxruntime"]
    with pytest.raises(SegDeployError, match="tensorrt"):
        parse_backends("tflite")


def test_paper_figures_are_data():
    (fig,) = references.matching("regseg", "regseg", 1024, 2048)
    assert (fig.fps, fig.device) == (30.0, "t4")
    (swift,) = references.matching("swiftnet_rn18", "swiftnet", 1024, 2048)
    assert swift.fps == 39.9 and swift.device == "gtx1080ti"
    assert references.matching("regseg", "swiftnet") == []
    assert "different device" in references.describe(fig, "AMD EPYC")


@pytest.mark.parametrize("protocol", ["regseg", "swiftnet", "mmseg", "runtime"])
def test_segbench_model_sweep_writes_json_csv_png(tmp_path, capsys, protocol):
    out = tmp_path / "run"
    argv = [
        "--model",
        "regseg_tiny",
        "--backends",
        "torch,onnxruntime",
        "--res",
        "64x128,128x256",
        "--protocol",
        protocol,
        "--warmup",
        "1",
        "--iters",
        "3",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--json",
        str(out) + ".json",
        "--csv",
        str(out) + ".csv",
        "--plot",
        str(out) + ".png",
    ]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "scope:" in text and "speed-up (median)" in text
    assert "torch 64x128" in text and "onnxruntime 128x256" in text
    runs = json.loads((tmp_path / "run.json").read_text())["runs"]
    assert [(r["backend"], tuple(r["resolution"])) for r in runs] == [
        ("torch", (64, 128)),
        ("onnxruntime", (64, 128)),
        ("torch", (128, 256)),
        ("onnxruntime", (128, 256)),
    ]
    for r in runs:
        assert r["protocol"] == protocol and r["latency_ms"]["n"] == 3
        assert "forward" in r["scope"] and r["device"] == "cpu"
        assert r["macs"] > 0 and r["params"] > 0 and 0 < r["floor_share"]
        # each record names the library that ran it (torch runs may precede onnxruntime's import)
        assert r["versions"]["numpy"] and r["versions"][r["backend"]]
        assert r["latency_ms"]["min"] <= r["latency_ms"]["median"] <= r["latency_ms"]["max"]
    assert 3.9 < runs[2]["macs"] / runs[0]["macs"] <= 4.0  # 4x the pixels, SE layers fixed
    rows = list(csv.DictReader((tmp_path / "run.csv").open()))
    assert len(rows) == 4 and rows[0]["scope"]
    png = (tmp_path / "run.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_segbench_engine_file(tmp_path, capsys):
    from segdeploy import models
    from segdeploy.runtime.torch_backend import _card_for

    path = tmp_path / "tiny.onnx"
    card = _card_for(models.get_spec("regseg_tiny"), 19, 64, 128, "labels")
    export_onnx(models.build("regseg_tiny"), str(path), height=64, width=128, card=card)
    assert (
        cli.main(
            [
                "--engine",
                str(path),
                "--protocol",
                "swiftnet",
                "--iters",
                "4",
                "--warmup",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "protocol swiftnet at 64x128" in text
    assert "scope:    h2d (none on a CPU), forward, upsample, argmax, d2h (none on a CPU)" in text
    assert "loop" in text
    # A frame size the engine was not built for: only the runtime protocol resizes.
    assert cli.main(["--engine", str(path), "--res", "128x256", "--iters", "2"]) == 2
    assert "built for it" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "--engine",
                str(path),
                "--res",
                "128x256",
                "--iters",
                "2",
                "--warmup",
                "0",
                "--protocol",
                "runtime",
                "--no-progress",
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--model", "regseg_tiny", "--res", "1000x2000"], ["stride 16", "992x2000"]),
        (["--model", "regsegg"], ["unknown model", "did you mean"]),
        (["--engine", "missing.onnx"], ["does not exist"]),
        (["--model", "regseg_tiny", "--backends", "tflite"], ["--backends"]),
        (["--model", "regseg_tiny", "--iters", "0"], ["--iters"]),
    ],
)
def test_segbench_user_errors_are_one_line(capsys, argv, words):
    assert cli.main(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segbench: error: ") and err.count("\n") == 1
    assert "Traceback" not in err
    for word in words:
        assert word in err


def test_table_speedups_are_against_the_first_column():
    def rec(backend, median):
        lat = {k: median for k in ("mean", "median", "p90", "p99", "min", "max")}
        lat.update(std=0.0, fps=1000.0 / median, n=1)
        return {
            "backend": backend,
            "resolution": [64, 128],
            "protocol": "regseg",
            "latency_ms": lat,
            "fps": 1000.0 / median,
            "macs": None,
            "memory": {"peak_mb": None},
            "floor_share": None,
            "scope_text": "forward",
            "device_name": "cpu",
        }

    table = report.format_table([rec("torch", 100.0), rec("onnxruntime", 50.0)])
    line = [row for row in table.splitlines() if row.startswith("speed-up")][0]
    assert line.split()[-2:] == ["1.00x", "2.00x"]
