"""The CPU engine choice where features meet (issue 23, items 1, 3, 7): a uint8 graph is timed
on uint8 frames; the default engine (NAME.ort, the one the README names) stays unless another is
faster beyond the rounds' spread, and is written in any case; --fp16 on a CPU says what it does
instead; the help texts name OpenVINO."""

import json
import os

import pytest

from segdeploy.export import cpu_choice
from segdeploy.export.cli import main as segexport

BASE = ["--model", "regseg_tiny", "--res", "64x128", "--verify-inputs", "1", "--threads", "2"]
ORT, OV = ("onnxruntime", "fp32"), ("openvino", "f32")


@pytest.fixture
def choice_on(monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.delenv(cpu_choice.ENGINES_VARIABLE, raising=False)  # conftest pins onnxruntime


def _report(out):
    return json.loads((out / "report.json").read_text())


def test_uint8_graph_is_timed_on_uint8_frames(tmp_path, capsys, choice_on):
    out = tmp_path / "u8"
    assert segexport(BASE + ["--input", "uint8", "--out", str(out)]) == 0, capsys.readouterr().err
    report = _report(out)
    rows = report["engine"]["selection"]["candidates"]
    assert {(r["backend"], r["precision"]) for r in rows} >= {ORT, OV}
    assert all(len(r["rounds_ms"]) == cpu_choice.ROUNDS for r in rows)
    assert (out / "regseg_tiny.ort").is_file()  # the README's engine, whatever was chosen
    assert "regseg_tiny.ort" in report["manifest"]["files"]


def test_the_default_stays_unless_another_is_clearly_faster():
    eligible = {ORT, OV}
    noise = {ORT: [294.1, 290.0, 301.0, 296.0, 292.0], OV: [284.6, 288.0, 280.0, 291.0, 286.0]}
    chosen, why = cpu_choice.decide(noise, eligible)
    assert chosen == ORT and why.startswith(
        "kept onnxruntime fp32: openvino f32 at 286.0 ms is 3% faster"
    )
    clear = {ORT: [300.0, 302.0, 299.0, 301.0, 300.0], OV: [200.0, 201.0, 199.0, 202.0, 200.0]}
    chosen, why = cpu_choice.decide(clear, eligible)
    assert (
        chosen == OV
        and why.startswith("built openvino f32 as well: 200.0 ms, ")
        and "50% faster" in why
    )
    # 30 % faster in the median, but the rounds overlap: not clear
    wide = {ORT: [300.0, 150.0, 310.0, 305.0, 290.0], OV: [230.0, 231.0, 229.0, 400.0, 232.0]}
    assert cpu_choice.decide(wide, eligible)[0] == ORT
    # the fastest is not eligible (over its accuracy budget): not chosen
    assert cpu_choice.decide(clear, {ORT})[0] == ORT
    assert cpu_choice.decide({ORT: [10.0] * 5, OV: [20.0] * 5}, eligible)[1].startswith(
        "kept onnxruntime fp32 (10.0 ms): the fastest"
    )


def test_a_clearly_faster_engine_is_built_beside_the_ort(tmp_path, capsys, choice_on, monkeypatch):
    monkeypatch.setattr(cpu_choice, "decide", lambda samples, eligible: (OV, "stand-in choice"))
    out = tmp_path / "o"
    assert segexport(BASE + ["--out", str(out)]) == 0, capsys.readouterr().err
    report = _report(out)
    assert report["artifacts"]["engine"].endswith("regseg_tiny.xml")
    files = report["manifest"]["files"]
    assert {"regseg_tiny.xml", "regseg_tiny.bin", "regseg_tiny.ort", "regseg_tiny.ort.json"} <= set(
        files
    )
    from segdeploy import Runtime
    from segdeploy.samples import street_scene

    frame = street_scene(64, 128)
    with Runtime(str(out / "regseg_tiny.ort")) as a, Runtime(str(out / "regseg_tiny.xml")) as b:
        assert (a.infer(frame) == b.infer(frame)).mean() > 0.999


def test_fp16_on_a_cpu_says_what_it_does_instead_and_the_card_says_so(tmp_path, capsys):
    out = tmp_path / "o"
    argv = BASE + ["--fp16", "--backend", "onnxruntime", "--out", str(out)]
    assert segexport(argv) == 0
    printed = capsys.readouterr().out
    lines = [ln for ln in printed.splitlines() if "--fp16:" in ln]
    assert len(lines) == 1 and "this one is FP32" in lines[0], printed
    card = json.loads((out / "regseg_tiny.ort.json").read_text())
    assert card["engine"]["precision"] == "fp32"
    assert card["engine"]["requested_precision"] == "fp16"
    assert card["engine"]["precision_note"] == lines[0].strip()


def test_fp16_line_offers_bf16_with_calib_where_the_cpu_has_it(monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.delenv(cpu_choice.ENGINES_VARIABLE, raising=False)
    from segdeploy.engines import openvino_builder

    class Args(object):
        backend, calib, images = "auto", None, None

    monkeypatch.setattr(openvino_builder, "cpu_has_bf16", lambda core=None: True)
    assert "add --calib DIR (real frames)" in cpu_choice.fp16_on_cpu(Args(), "m")
    Args.calib = "frames/"
    assert "checked on your real frames" in cpu_choice.fp16_on_cpu(Args(), "m")
    monkeypatch.setattr(openvino_builder, "cpu_has_bf16", lambda core=None: False)
    assert "no native bf16" in cpu_choice.fp16_on_cpu(Args(), "m")


def test_backend_openvino_builds_the_ir(tmp_path, capsys):
    pytest.importorskip("openvino")
    out = tmp_path / "o"
    assert segexport(BASE + ["--backend", "openvino", "--out", str(out)]) == 0
    assert _report(out)["artifacts"]["engine"].endswith("regseg_tiny.xml")
    assert os.path.isfile(str(out / "regseg_tiny.bin"))


def test_help_names_every_engine(capsys):
    from segdeploy.bench.cli import main as segbench

    with pytest.raises(SystemExit):
        segexport(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "OpenVINO" in text and "TensorRT when present, else ONNX Runtime" not in text
    assert "--backend {auto,onnxruntime,openvino,tensorrt}" in text
    assert "openvino: NAME.xml" in text
    with pytest.raises(SystemExit):
        segbench(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ".xml" in text and "grpc://" in text


def test_readme_main_job_names_the_engine_segexport_always_writes():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(repo, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    job = readme.split("## The main job", 1)[1].split("```", 2)[1]
    assert "segbench  --engine out/regseg.ort" in job
    assert "segexport always writes ONNX Runtime's `out/regseg.ort`" in readme
