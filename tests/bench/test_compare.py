"""segbench --compare: any registered models exported, built on one engine, timed interleaved
under one protocol; the table, JSON, CSV and plot; one-line refusals before any export."""

import csv
import json

import numpy as np
import pytest
import torch

from segdeploy import models
from segdeploy.bench import cli, compare, compare_report, complexity
from segdeploy.models import registry

NEW_MODEL = "compare_test_net"  # registered only for this module: "any registered name"


class TwoConvNet(torch.nn.Module):
    """A model no other code knows about: stride 4, 5 classes."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, num_classes, 3, stride=2, padding=1),
        )

    def forward(self, x):
        y = self.body(x)
        return torch.nn.functional.interpolate(
            y, size=x.shape[-2:], mode="bilinear", align_corners=False
        )


@pytest.fixture
def new_model(monkeypatch):
    spec = registry.ModelSpec(
        name=NEW_MODEL,
        builder=lambda num_classes=5: TwoConvNet(num_classes),
        family="test",
        stride=4,
        num_classes=5,
        tiny=True,
        paper={"fps": 123.0, "fps_device": "tx2", "fps_protocol": "its own",
               "resolution": (512, 1024), "source": "a test"},
    )  # fmt: skip
    monkeypatch.setitem(registry._REGISTRY, NEW_MODEL, spec)
    return spec


def test_compare_times_any_registered_models_interleaved(tmp_path, capsys, new_model):
    out = {k: str(tmp_path / ("c." + k)) for k in ("json", "csv", "png")}
    argv = ["--compare", "regseg_tiny," + NEW_MODEL, "--res", "32x64"]
    argv += ["--warmup", "1", "--iters", "3", "--threads", "1"]
    argv += ["--json", out["json"], "--csv", out["csv"], "--plot", out["png"]]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    result = json.load(open(out["json"]))
    assert result["models"] == ["regseg_tiny", NEW_MODEL]
    assert result["command"].startswith("segbench --compare regseg_tiny," + NEW_MODEL)
    # regseg is not in the list: speeds are relative to the first model
    assert result["reference"] == "regseg_tiny"
    assert result["resolution"] == [32, 64] and result["iters"] == 3
    assert result["backend"] in ("onnxruntime", "openvino")
    try:
        import openvino  # noqa: F401

        assert result["backend_choice"].startswith("measured on regseg_tiny: onnxruntime ")
    except ImportError:
        assert result["backend_choice"] == "OpenVINO is not installed"
    rows = {r["model"]: r for r in result["rows"]}
    for name, row in rows.items():
        counted = complexity(models.build(name), (32, 64))
        assert (row["params"], row["macs"]) == (int(counted.params), int(counted.macs))
        assert len(row["samples_ms"]) == 3 and row["latency_ms"]["n"] == 3
        assert row["floor_share"] == pytest.approx(row["floor_ms"] / row["latency_ms"]["median"])
    ref, new = rows["regseg_tiny"], rows[NEW_MODEL]
    assert ref["speed_vs_reference"] == 1.0
    paired = np.median(np.asarray(ref["samples_ms"]) / np.asarray(new["samples_ms"]))
    assert new["speed_vs_reference"] == pytest.approx(paired, rel=1e-3)
    assert new["paper"]["fps"] == 123.0 and new["paper"]["device"] == "tx2"
    assert ref["paper"] is None  # no published figure for the test variant
    # the table: every model, its GMACs and the paper's claim with its device and size
    assert "x regseg_tiny" in text and "123.0 (tx2, 512x1024, protocol its own)" in text
    for name in result["models"]:
        assert name in text
    with open(out["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == result["models"]
    assert tuple(table[0]) == compare_report.CSV_FIELDS
    assert float(table[1]["gmacs"]) == pytest.approx(new["macs"] / 1e9)
    with open(out["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_paper_figures_come_from_references_then_the_registry():
    regseg = compare.paper_figure("regseg", models.get_spec("regseg"), 512, 1024)
    assert regseg["fps"] == 30.0 and regseg["device"] == "t4"
    assert regseg["resolution"] == [1024, 2048] and regseg["protocol"] == "regseg"
    swift = compare.paper_figure("swiftnet_rn18", models.get_spec("swiftnet_rn18"), 512, 1024)
    assert swift["fps"] == 134.9 and swift["resolution"] == [512, 1024]  # same size first
    assert compare.paper_figure("regseg_tiny", models.get_spec("regseg_tiny"), 64, 64) is None


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--compare", "regseg,nosuchnet"], ["unknown model 'nosuchnet'", "known models: "]),
        (["--compare", "regseg_tiny", "--precision", "fp16"], ["fp16 needs TensorRT on a GPU"]),
        (["--compare", "regseg_tiny", "--precision", "int8"], ["calibration frames"]),
        (
            ["--compare", "regseg_tiny", "--res", "64x100"],
            ["regseg_tiny: --res 64x100 is not a multiple of its stride", "64x112 works"],
        ),
        (["--compare", "regseg_tiny", "--res", "64x128,128x256"], ["one --res"]),
        (["--engine", "x.onnx", "--precision", "fp32"], ["--precision goes with --compare"]),
    ],
)
def test_compare_refusals_are_one_line_before_any_export(capsys, monkeypatch, argv, words):
    exported = []
    monkeypatch.setattr(compare, "_gpu_with_tensorrt", lambda: False)  # this CPU's answers
    monkeypatch.setattr(compare, "export_models", lambda *a, **k: exported.append(a) or [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("segbench: error: ")
    for word in words:
        assert word in err
    assert exported == []


def test_interleaved_rounds_rotate_the_first_model():
    from segdeploy.bench.interleave import time_interleaved

    order = []
    calls = {name: (lambda n: lambda: order.append(n))(name) for name in "abc"}
    samples = time_interleaved(calls, warmup=1, iters=3)
    assert order == list("abc") + list("abc") + list("bca") + list("cab")
    assert [len(samples[n]) for n in "abc"] == [3, 3, 3]


def _eval_support():
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "eval"))
    import eval_support

    return eval_support


def test_compare_with_checkpoints_and_a_dataset_adds_segevals_miou(tmp_path, capsys):
    """--checkpoints DIR loads NAME.pth into each model; --dataset scores each exported graph as
    segeval does: the figure equals segeval's on the same graph, and it depends on the weights."""
    from segdeploy import Runtime
    from segdeploy.eval import evaluate
    from segdeploy.export import export_onnx, fold_batchnorm, make_card

    support = _eval_support()
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    model = support.fanin_model(seed=2)
    torch.save(model.state_dict(), str(ckpts / "regseg_tiny.pth"))
    # the reference: the same weights exported at the same size, opened by segeval's path
    spec = models.get_spec("regseg_tiny")
    onnx_path = str(tmp_path / "ref.onnx")
    card = make_card(spec, spec.num_classes, 64, 128, "labels")
    export_onnx(fold_batchnorm(model), onnx_path, height=64, width=128, card=card)
    names = [str(i) for i in range(19)]
    with Runtime(onnx_path) as runtime:
        labels = runtime.infer(support.frame(50))
        assert len(np.unique(labels)) >= 5  # labels vary: the score can be wrong
        support.make_folder(str(tmp_path / "data"), runtime, names, count=3)
    reference = evaluate(onnx_path, "folder", root=str(tmp_path / "data"), progress=False)
    assert 0.0 < reference.miou < 1.0

    out = str(tmp_path / "c.json")
    argv = ["--compare", "regseg_tiny", "--res", "64x128", "--warmup", "1", "--iters", "2"]
    argv += ["--threads", "1", "--checkpoints", str(ckpts), "--json", out]
    argv += ["--dataset", "folder", "--root", str(tmp_path / "data")]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    row = json.load(open(out))["rows"][0]
    assert row["checkpoint"] == str(ckpts / "regseg_tiny.pth")
    assert row["miou"] == pytest.approx(reference.miou, abs=1e-9)
    assert "mIoU %" in text and "{:.2f}".format(100 * reference.miou) in text


def test_compare_refuses_a_dataset_without_checkpoints_and_a_missing_checkpoint(tmp_path, capsys):
    base = ["--compare", "regseg_tiny", "--res", "32x64", "--iters", "1"]
    assert cli.main(base + ["--dataset", "folder", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--checkpoints DIR" in err and len(err.strip().splitlines()) == 1
    assert cli.main(base + ["--checkpoints", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint for regseg_tiny" in err and len(err.strip().splitlines()) == 1
