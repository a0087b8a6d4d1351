"""TensorRT backend and builder.

CPU tests: everything decided before TensorRT is needed (missing card, truncated plan, wrong
backend, missing TensorRT, fingerprint mismatch, CUDA binding choice). ``tensorrt``-marked tests
build real engines from a tiny exported RegSeg and compare their labels with ONNX Runtime; the
conftest skips them, with the reason, where TensorRT or a GPU is missing.
"""

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

from segdeploy import card as card_mod
from segdeploy.engines import cuda_memory, fingerprint, tensorrt_status
from segdeploy.engines.profiles import derive_profile
from segdeploy.errors import EngineError, EngineMismatchError, MissingDependencyError
from segdeploy.runtime.backend import open_engine
from segdeploy.runtime.tensorrt_backend import preflight

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H, W = 64, 128


def make_card(height=H, width=W, dynamic=None, stride=16):
    return {
        "schema": card_mod.SCHEMA,
        "model": {"name": "regseg_tiny", "family": "regseg", "num_classes": 19},
        "input": {
            "name": "image",
            "layout": "NCHW",
            "channel_order": "RGB",
            "dtype": "float32",
            "scale": 1 / 255.0,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "height": height,
            "width": width,
            "dynamic": dynamic,
            "stride": stride,
        },
        "output": {"name": "labels", "kind": "labels", "dtype": "int64", "resolution": "input"},
    }


def fake_plan(tmp_path, payload=b"\x00" * 64, **engine):
    """A file with a plan's name and a sidecar; never handed to TensorRT by these tests."""
    path = tmp_path / "model.plan"
    path.write_bytes(payload)
    info = {
        "backend": "tensorrt",
        "tensorrt": "8.6.1",
        "plan_bytes": len(payload),
        "device": fingerprint.device_section("Tesla T4", (7, 5)),
    }
    info.update(engine)
    card_mod.write_sidecar(str(path), card_mod.with_engine(make_card(), info))
    return str(path)


def test_plan_without_card_is_refused(tmp_path):
    path = tmp_path / "model.plan"
    path.write_bytes(b"x")
    with pytest.raises(EngineError, match="has no model card next to it"):
        open_engine(str(path))


def test_truncated_plan_is_caught_before_tensorrt(tmp_path):
    path = fake_plan(tmp_path, plan_bytes=1000)
    with pytest.raises(EngineError, match=r"is truncated \(64 of 1000 bytes\)"):
        open_engine(path)


def test_card_of_another_backend_is_refused(tmp_path):
    path = fake_plan(tmp_path, backend="onnxruntime")
    with pytest.raises(EngineError, match="does not describe a TensorRT engine"):
        open_engine(path)


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_missing_tensorrt_gives_the_install_hint(tmp_path):
    with pytest.raises(MissingDependencyError, match="python3-libnvinfer"):
        open_engine(fake_plan(tmp_path))


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_status_and_build_without_tensorrt(tmp_path):
    ok, reason = tensorrt_status()
    assert ok is False and "pip install 'segdeploy[tensorrt]'" in reason
    from segdeploy.engines import build_tensorrt_engine

    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not used")
    with pytest.raises(MissingDependencyError):
        build_tensorrt_engine(str(onnx), str(tmp_path / "m.plan"), make_card())
    assert not os.path.exists(str(tmp_path / "m.plan"))


def test_build_refuses_int8_and_missing_onnx(tmp_path):
    from segdeploy.engines.tensorrt_builder import build_tensorrt_engine

    # INT8 engines come only from the Q/DQ graph of segexport --int8 (its card says int8)
    with pytest.raises(EngineError, match="not an INT8 Q/DQ graph"):
        build_tensorrt_engine("m.onnx", str(tmp_path / "m.plan"), make_card(), precision="int8")
    with pytest.raises(EngineError, match="does not exist; run segexport"):
        build_tensorrt_engine(str(tmp_path / "none.onnx"), str(tmp_path / "m.plan"), make_card())


def test_preflight_mismatch_is_one_line(tmp_path):
    path = fake_plan(tmp_path)
    sidecar = card_mod.read_sidecar(path)
    here = {"tensorrt": "8.2.1", "device": fingerprint.device_section("NVIDIA Tegra X2", (6, 2))}
    with pytest.raises(EngineMismatchError) as info:
        preflight(path, sidecar, here)
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith(
        "built on Tesla T4 with TensorRT 8.6.1; this is Jetson TX2 with "
        "8.2.1: rebuild on this device with segexport"
    )
    same = {"tensorrt": "8.6.1", "device": fingerprint.device_section("Tesla T4", (7, 5))}
    assert preflight(path, sidecar, same).ok


@pytest.mark.parametrize(
    "available,override,chosen",
    [
        ({"cuda-python", "pycuda"}, None, "cuda-python"),
        ({"pycuda"}, None, "pycuda"),  # Jetson: no cuda-python wheels
        (set(), None, None),
        ({"cuda-python", "pycuda"}, "pycuda", "pycuda"),
        ({"cuda-python"}, "pycuda", None),
    ],
)
def test_cuda_binding_choice(available, override, chosen):
    assert cuda_memory.choose_binding(available, override) == chosen


def test_cuda_binding_override_must_be_known():
    with pytest.raises(EngineError, match="SEGDEPLOY_CUDA"):
        cuda_memory.choose_binding({"pycuda"}, "numba")


@pytest.mark.skipif(cuda_memory.BINDING is not None, reason="a CUDA binding is installed here")
def test_no_cuda_binding_is_a_missing_dependency():
    with pytest.raises(MissingDependencyError, match="pip3 install pycuda"):
        cuda_memory.device_properties(0)


# --- real engines (TensorRT + GPU) ---------------------------------------------------------------


def export_tiny_onnx(path, dynamic=False):
    """The lane's committed tiny labels graph (tests/device/tiny_onnx.py: Conv + ArgMax, 64x128,
    int64 labels as segexport's labels variant), copied to ``path``: no torch on the device."""
    source = os.path.join(REPO, "tests", "device", "data")
    name = "tiny_labels_dynamic.onnx" if dynamic else "tiny_labels.onnx"
    shutil.copy(os.path.join(source, name), str(path))
    return str(path)


def onnxruntime_labels(onnx_path, image):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    return session.run(None, {"image": image})[0]


@pytest.fixture
def frames():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 3, H, W)).astype(np.float32) for _ in range(3)]


def build(tmp_path, precision, dynamic=False, **options):
    from segdeploy.engines import build_tensorrt_engine

    onnx = export_tiny_onnx(tmp_path / "tiny.onnx", dynamic)
    plan = str(tmp_path / "tiny_{}.plan".format(precision))
    profile = derive_profile(
        res="{}x{}".format(H, W), dynamic="32x64:128x256" if dynamic else None, stride=16
    )
    sidecar = build_tensorrt_engine(
        onnx,
        plan,
        make_card(),
        precision=precision,
        profile=profile,
        workspace_mib=256,
        log=lambda *a: None,
        **options,
    )
    return onnx, plan, sidecar


def agreement(a, b):
    return float(np.mean(a.astype(np.int64) == b.astype(np.int64)))


@pytest.mark.tensorrt
def test_fp32_engine_matches_onnxruntime(tmp_path, frames):
    onnx, plan, sidecar = build(tmp_path, "fp32", timing_cache=str(tmp_path / "trt.cache"))
    engine = sidecar["engine"]
    assert engine["precision"] == "fp32" and engine["plan_bytes"] == os.path.getsize(plan)
    assert engine["device"]["compute_capability"] and engine["tensorrt"]
    assert os.path.getsize(str(tmp_path / "trt.cache")) > 0
    with open(card_mod.sidecar_path(plan)) as f:
        assert json.load(f)["engine"]["plan_sha256"] == fingerprint.sha256_file(plan)
    with open_engine(plan) as trt_engine:
        (out,) = trt_engine.outputs
        assert np.dtype(out.dtype) in (np.dtype(np.int32), np.dtype(np.int64))
        for image in frames:
            labels = trt_engine.infer({"image": image})["labels"]
            assert labels.shape == (1, H, W)
            assert agreement(labels, onnxruntime_labels(onnx, image)) >= 0.999


@pytest.mark.tensorrt
def test_fp16_engine_agreement_is_reported(tmp_path, frames, record_property):
    from segdeploy.engines import trt_compat

    trt = pytest.importorskip("tensorrt")
    if not trt_compat.has_fp16_flag(trt):
        pytest.skip("TensorRT {} builds FP16 only from an FP16-typed ONNX".format(trt.__version__))
    onnx, plan, _ = build(tmp_path, "fp16")
    with open_engine(plan) as engine:
        scores = [
            agreement(engine.infer({"image": x})["labels"], onnxruntime_labels(onnx, x))
            for x in frames
        ]
    record_property("fp16_label_agreement", min(scores))
    print("FP16 label agreement with ONNX Runtime: {:.4%}".format(min(scores)))
    assert min(scores) > 0.9


@pytest.mark.tensorrt
def test_dynamic_engine_runs_every_size_in_its_profile(tmp_path):
    onnx, plan, sidecar = build(tmp_path, "fp32", dynamic=True)
    assert sidecar["input"]["dynamic"] == {"min": [32, 64], "opt": [64, 128], "max": [128, 256]}
    rng = np.random.default_rng(1)
    with open_engine(plan) as engine:
        for h, w in ((32, 64), (128, 256), (64, 128)):
            image = rng.standard_normal((1, 3, h, w)).astype(np.float32)
            labels = engine.infer({"image": image})["labels"]
            assert labels.shape == (1, h, w)
            assert agreement(labels, onnxruntime_labels(onnx, image)) >= 0.999
        with pytest.raises(EngineError, match="rebuild with a --dynamic range"):
            engine.infer({"image": np.zeros((1, 3, 256, 256), np.float32)})


@pytest.mark.tensorrt
def test_damaged_plans_are_refused(tmp_path):
    _, plan, _ = build(tmp_path, "fp32")
    with open(plan, "rb") as f:
        data = f.read()
    with open(plan, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(EngineError, match="is truncated"):
        open_engine(plan)
    with open(plan, "wb") as f:  # right size, not a plan: TensorRT itself must refuse it
        f.write(b"\x00" * len(data))
    with pytest.raises(EngineError, match="is not a TensorRT plan"):
        open_engine(plan)


@pytest.mark.tensorrt
def test_infer_from_a_second_thread(tmp_path, frames):
    """CUDA contexts are per thread: an engine opened in one thread runs in another."""
    import threading

    onnx, plan, _ = build(tmp_path, "fp32")
    engine = open_engine(plan)
    got = {}

    def work():
        try:
            got["labels"] = np.array(engine.infer({"image": frames[0]})["labels"])
        except Exception as exc:  # reported in the test's thread
            got["error"] = exc

    try:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        assert "error" not in got, got.get("error")
        assert agreement(got["labels"], onnxruntime_labels(onnx, frames[0])) > 0.99
        assert engine.copy_outputs is False or "I/O coherency" in engine.copy_outputs_reason
    finally:
        engine.close()
