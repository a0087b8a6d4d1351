"""segbench --head: the head alone, standard against fused, on the backends at hand."""

import json

import pytest

from segdeploy.bench import head
from segdeploy.bench.cli import main
from segdeploy.errors import SegDeployError


def test_spec_parsing():
    assert head.parse_spec(None) == (19, 8)
    assert head.parse_spec("150:4") == (150, 4)
    for bad in ("19", "a:b", "0:8", "256:8", "19:0"):
        with pytest.raises(SegDeployError, match="--head"):
            head.parse_spec(bad)


def test_head_on_the_cpu(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    out = tmp_path / "head.json"
    argv = ["--head", "19:8", "--res", "128x256", "--backends", "onnxruntime,torch"]
    argv += ["--device", "cpu", "--warmup", "1", "--iters", "3", "--json", str(out)]
    code = main(argv)
    assert code == 0
    text = capsys.readouterr().out
    assert "fused (SegHead)" in text and "standard (Resize + ArgMax)" in text
    result = json.loads(out.read_text())["result"]
    assert result["logits"] == [1, 19, 16, 32] and result["labels"] == [1, 128, 256]
    assert result["classes_present"] >= 5 and 0 < result["slow_fraction"] < 0.5
    rows = result["rows"]
    runtime_row = rows[2]["backend"]  # names the implementation: compiled, or numpy
    assert runtime_row.startswith("onnxruntime + runtime head (")
    assert [(r["backend"], r["head"]) for r in rows] == [
        ("onnxruntime + host build", head.STANDARD),
        ("onnxruntime + host build", head.FUSED),
        (runtime_row, head.STANDARD),
        (runtime_row, head.FUSED),
        ("torch", head.STANDARD),
        ("torch", head.FUSED),
    ]
    for r in rows:
        assert r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"]
    # The fused heads are exact; ONNX Runtime's graph is the host build's reference arithmetic.
    assert rows[0]["equal_to_host_build"] == 1.0
    for fused in (1, 3, 5):
        assert rows[fused]["equal_to_host_build"] == 1.0
    assert rows[4]["equal_to_host_build"] > 0.999  # PyTorch's own bilinear weights


def test_tensorrt_without_the_plugin_is_one_line(capsys):
    code = main(["--head", "--backends", "tensorrt", "--res", "64x64"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--plugin libseghead_plugin.so" in err[0]


def test_plugin_flag_is_accepted_with_head(tmp_path, capsys):
    # --plugin with --head is not refused as 'goes with --engine' (the check sees --head).
    code = main(["--head", "19:8", "--res", "64x64", "--backends", "tensorrt", "--plugin",
                 str(tmp_path / "missing.so")])  # fmt: skip
    assert code == 2
    assert "goes with --engine" not in capsys.readouterr().err


def test_bad_device_is_one_line(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    code = main(["--head", "--res", "64x64", "--backends", "torch", "--device", "cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no CUDA device" in err[0]
    assert main(["--head", "--res", "64x64", "--backends", "torch", "--device", "tpu"]) == 2
    assert "--device takes cpu or cuda" in capsys.readouterr().err
