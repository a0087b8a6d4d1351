"""segbuild on a real GPU: build, foreign timing cache, adopt a plan built elsewhere, run it.

Marked ``tensorrt``: skipped (with the reason) where TensorRT or a CUDA device is missing, which
is every CI machine; the GPU runbook runs them (``pytest -m tensorrt tests/engines``).
"""

import os
import shutil

import numpy as np
import pytest

from segdeploy import card as card_mod
from segdeploy.engines import build_cli
from segdeploy.runtime.backend import open_engine

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def exported(tmp_path):
    """The lane's committed tiny labels graph with its card (tests/device/tiny_onnx.py) and an
    input tensor: no torch, onnx or OpenCV on the device."""
    onnx_path = tmp_path / "tiny.onnx"
    shutil.copy(os.path.join(REPO, "tests", "device", "data", "tiny_labels.onnx"), str(onnx_path))
    image = np.random.RandomState(5).standard_normal((1, 3, 64, 128)).astype(np.float32)
    return onnx_path, image


def _labels(path, image):
    """Labels of the ONNX file (ONNX Runtime) or of a plan (the TensorRT engine, card checked)."""
    if str(path).endswith(".onnx"):
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"image": image})[0]
    with open_engine(str(path)) as engine:
        return np.array(engine.infer({"image": image})["labels"])


@pytest.mark.tensorrt
def test_segbuild_builds_a_plan_runtime_accepts(exported, tmp_path, capsys):
    onnx_path, image = exported
    plan = tmp_path / "tiny.plan"
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b"a cache from another GPU, or damaged")
    argv = [str(onnx_path), "--out", str(plan), "--workspace", "256", "--timing-cache", str(cache)]
    assert build_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "warning: timing cache" in out  # the foreign cache was replaced, the build went on
    assert plan.is_file() and os.path.getsize(str(cache)) > 0
    reference = _labels(onnx_path, image)
    assert len(np.unique(reference)) >= 5
    assert np.mean(_labels(plan, image) == reference) >= 0.999
    assert build_cli.main(argv) == 0  # the cache it wrote is reused without a warning
    assert "warning: timing cache" not in capsys.readouterr().out


@pytest.mark.tensorrt
def test_adopt_writes_the_sidecar_of_a_trtexec_style_plan(exported, tmp_path):
    onnx_path, image = exported
    plan = tmp_path / "built.plan"
    assert build_cli.main([str(onnx_path), "--out", str(plan), "--workspace", "256"]) == 0
    bare = tmp_path / "bare.plan"  # what trtexec leaves: a plan and no card
    shutil.copy(str(plan), str(bare))
    with pytest.raises(Exception, match="has no model card"):
        _labels(bare, image)
    assert build_cli.main(["--adopt", str(bare), "--onnx", str(onnx_path)]) == 0
    sidecar = card_mod.read_sidecar(str(bare))
    assert sidecar["engine"]["build_flags"]["adopted"]
    assert sidecar["engine"]["plan_bytes"] == os.path.getsize(str(bare))
    np.testing.assert_array_equal(_labels(bare, image), _labels(plan, image))
