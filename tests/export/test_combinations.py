"""segexport's options together (issue 23, "A combination test"): an all-pairs design over
--fp16, --int8 --calib, --input uint8, --output logits, --dynamic, --dblock-plugin, --triton,
--backend auto|onnxruntime|openvino|tensorrt --print-trtexec and --onnx FILE, each row run with
OpenVINO importable and with it blocked, on the tiny RegSeg with varied weights (>= 5 classes).

Every run either exports, every artifact it lists opens in Runtime with labels agreeing with the
FP32 graph, and the `Next:` commands it prints run as printed; or it is refused before any step
is printed, in one line. The table (row -> exported / refused: reason) is printed at the end of
the pytest run (tests/conftest.py). The rows that calibrate INT8 are marked slow."""

import json
import os
import subprocess
import sys

import combination_support as design
import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "runtime"))
from runtime_support import tiny_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H, W = 64, 128
ROWS = design.all_pairs()
# precision -> the least label agreement with the FP32 graph an artifact of it must reach
AGREEMENT = {"fp32": 0.999, "fp16": 0.98, "int8": 0.9}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The checkpoint, calibration frames, the FP32 reference graph (also the --onnx FILE), the
    frames labels are compared on, and an interpreter shim that blocks OpenVINO."""
    from segdeploy import Runtime
    from segdeploy.bench.frames import street_scene, write_scenes
    from segdeploy.export.cli import main as segexport

    root = tmp_path_factory.mktemp("combinations")
    ckpt = root / "tiny.pth"
    torch.save({"model": tiny_model(0).state_dict()}, str(ckpt))
    calib = root / "calib"
    write_scenes(str(calib), 8, H, W)
    ref_dir = root / "ref"
    argv = ["--model", "regseg_tiny", "--checkpoint", str(ckpt), "--res", "{}x{}".format(H, W)]
    argv += ["--backend", "onnxruntime", "--verify-inputs", "1", "--out", str(ref_dir), "-q"]
    assert segexport(argv) == 0
    frames = [street_scene(H, W, 300 + i) for i in range(3)]
    with Runtime(str(ref_dir / "regseg_tiny.onnx")) as ref:
        labels = [ref.infer(f).copy() for f in frames]
    classes = np.unique(np.concatenate([x.ravel() for x in labels]))
    assert len(classes) >= 5, classes  # agreement on one class would prove nothing
    shim = root / "no_openvino"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import sys\nsys.modules['openvino'] = None  # as if OpenVINO were not installed\n"
    )
    return {
        "root": root,
        "ckpt": str(ckpt),
        "calib": str(calib),
        "onnx": str(ref_dir / "regseg_tiny.onnx"),
        "frames": frames,
        "labels": labels,
        "shim": str(shim),
    }


def argv_for(row, setup, out):
    argv = ["--out", str(out), "--verify-inputs", "1", "--threads", "2"]
    if row["onnx"]:
        argv += ["--onnx", setup["onnx"]]
    else:
        argv += ["--model", "regseg_tiny", "--checkpoint", setup["ckpt"]]
        argv += ["--res", "{}x{}".format(H, W)]
    if row["fp16"]:
        argv.append("--fp16")
    if row["int8"]:
        argv += ["--int8", "--calib", setup["calib"], "--budget", "99:40"]
    if row["input"] == "uint8":
        argv += ["--input", "uint8"]
    if row["output"] == "logits":
        argv += ["--output", "logits"]
    if row["dynamic"]:
        argv += ["--dynamic", "{}x{}:{}x{}".format(H // 2, W // 2, H * 2, W * 2)]
    if row["dblock"]:
        argv.append("--dblock-plugin")
    if row["triton"]:
        argv += ["--triton", str(out) + "-triton"]
    argv += ["--backend", row["backend"]]
    if row["backend"] == "tensorrt":
        argv.append("--print-trtexec")
    return argv


def _agreement(path, setup):
    from segdeploy import Runtime

    options = {"custom_ops": ["dblock"]} if ".dblock." in os.path.basename(path) else {}
    with Runtime(path, **options) as runtime:
        precision = runtime.card.get("precision") or "fp32"
        got = [runtime.infer(f) for f in setup["frames"]]
    agree = float(np.mean([(g == r).mean() for g, r in zip(got, setup["labels"])]))
    return precision, agree


def check_artifacts(report, setup):
    """Every engine file the export lists opens in Runtime and agrees with the FP32 graph."""
    checked = []
    paths = sorted(report["artifacts"].items())
    triton = report["artifacts"].get("triton")
    if triton:  # the model file inside the Triton repository opens like the others
        for folder, _, names in os.walk(triton):
            paths += [("triton", os.path.join(folder, n)) for n in names if n.endswith(".onnx")]
        assert any(key == "triton" for key, _ in paths[-1:]), triton
    for key, path in paths:
        if not isinstance(path, str) or not path.endswith((".onnx", ".ort", ".xml")):
            continue
        precision, agree = _agreement(path, setup)
        need = AGREEMENT.get(precision.split("+")[0], AGREEMENT["int8"])
        assert agree >= need, (key, path, precision, agree)
        if key == "triton":
            shown = os.path.relpath(path, os.path.dirname(triton))
        else:
            shown = os.path.basename(path)
        checked.append("{} {:.1%}".format(shown, agree))
    return checked


def run_next(printed, setup, blocked):
    lines = printed.split("\nNext", 1)[1].splitlines()[1:]
    commands = [line.strip() for line in lines if line.startswith("  ") and line.strip()]
    assert len(commands) == 3, printed
    path = ([setup["shim"]] if blocked else []) + [REPO, os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), OMP_NUM_THREADS="2")
    for command in commands:
        result = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, (command, result.stderr[-2000:])
    return len(commands)


def _params():
    out = []
    for i, row in enumerate(ROWS):
        marks = [pytest.mark.slow] if row["int8"] else []  # calibration: the slow half
        out.append(pytest.param(row, id="row{}".format(i), marks=marks))
    return out


@pytest.mark.parametrize("row", _params())
def test_combination(row, setup, tmp_path, capsys, monkeypatch):
    from segdeploy.export.cli import main as segexport

    monkeypatch.delenv("SEGDEPLOY_CPU_ENGINES", raising=False)  # the measured CPU choice
    if not row["openvino"]:
        monkeypatch.setitem(sys.modules, "openvino", None)  # import fails, find_spec is None
    elif pytest.importorskip("openvino") is None:
        pytest.skip("OpenVINO is not installed")
    out = tmp_path / "out"
    code = segexport(argv_for(row, setup, out))
    captured = capsys.readouterr()
    label = design.label(row)
    if design.refused(row) or code != 0:
        lines = captured.err.strip().splitlines()
        assert code == 2 and len(lines) == 1, captured.err
        assert "[1/" not in captured.out, "refused after work began:\n" + captured.out
        assert design.refused(row), "refused, but not by design: " + lines[0]
        design.TABLE.append((label, "refused: " + lines[0].split("error: ", 1)[-1]))
        return
    with open(str(out / "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    checked = check_artifacts(report, setup)
    monkeypatch.undo()  # the Next: commands run in their own processes (shimmed when blocked)
    commands = run_next(captured.out, setup, not row["openvino"])
    engine = report["artifacts"].get("engine") or report["artifacts"]["onnx"]
    design.TABLE.append(
        (
            label,
            "exported: engine {}; {} agree with FP32 ({}); {} Next: commands ran".format(
                os.path.basename(engine), len(checked), ", ".join(checked), commands
            ),
        )
    )


def test_the_design_covers_every_pair():
    import itertools

    exporting = [r for r in ROWS if not design.refused(r)]
    for (n1, l1), (n2, l2) in itertools.combinations(design.FACTORS, 2):
        for a in l1:
            for b in l2:
                pair = ((n1, a), (n2, b))
                by_design = any(set(pair) == set(p) for p in design.REFUSED)
                rows = ROWS if by_design else exporting  # a refused pair: its own row
                assert any(r[n1] == a and r[n2] == b for r in rows), (n1, a, n2, b)
    assert len(ROWS) < 20  # far below the 2048 exhaustive rows
