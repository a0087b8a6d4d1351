"""The ONNX Runtime backend behind the Engine interface."""

import numpy as np
import pytest
from runtime_support import export_tiny

from segdeploy.errors import EngineError, SegDeployError
from segdeploy.runtime.backend import open_engine
from segdeploy.runtime.onnxruntime_backend import OnnxRuntimeEngine, providers_for

H, W = 64, 128


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("ort") / "tiny.onnx"
    export_tiny(path, H, W)
    return path


def _feeds(seed):
    return {"image": np.random.RandomState(seed).standard_normal((1, 3, H, W)).astype(np.float32)}


def test_open_engine_picks_onnxruntime_and_reads_the_card(tiny_onnx):
    with open_engine(tiny_onnx, device="cpu") as engine:
        assert isinstance(engine, OnnxRuntimeEngine)
        assert [(t.name, t.shape) for t in engine.inputs] == [("image", (1, 3, H, W))]
        assert engine.outputs[0].name == "labels" and engine.outputs[0].dtype == np.int64
        assert engine.card["model"]["name"] == "regseg_tiny"
        assert engine.options["providers"] == ["CPUExecutionProvider"]


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_io_binding_and_every_optimization_level_agree_with_plain_run(tiny_onnx, level):
    # Two with statements, not one parenthesised: the device lane collects this under Python 3.6.
    with OnnxRuntimeEngine(tiny_onnx, device="cpu", io_binding=False) as plain:
        with OnnxRuntimeEngine(
            tiny_onnx, device="cpu", graph_optimization=level, threads=1
        ) as bound:
            for seed in (0, 1):
                expected = plain.infer(_feeds(seed))["labels"]
                np.testing.assert_array_equal(bound.infer(_feeds(seed))["labels"], expected)


def test_bound_input_buffer_is_read_afresh_every_run(tiny_onnx):
    # The runtime rewrites one input buffer in place; the binding must see the new contents.
    buf = _feeds(0)["image"]
    with OnnxRuntimeEngine(tiny_onnx, device="cpu") as engine:
        first = engine.infer({"image": buf})["labels"].copy()
        buf[...] = _feeds(1)["image"]
        second = engine.infer({"image": buf})["labels"].copy()
        assert (first != second).any()
        with OnnxRuntimeEngine(tiny_onnx, device="cpu", io_binding=False) as plain:
            np.testing.assert_array_equal(second, plain.infer({"image": buf})["labels"])


def test_feeds_are_checked(tiny_onnx):
    with OnnxRuntimeEngine(tiny_onnx, device="cpu") as engine:
        with pytest.raises(SegDeployError, match="shape"):
            engine.infer({"image": np.zeros((1, 3, H, W + 16), np.float32)})
        with pytest.raises(SegDeployError, match="float32"):
            engine.infer({"image": np.zeros((1, 3, H, W), np.float64)})
        with pytest.raises(SegDeployError, match="missing"):
            engine.infer({})
    with pytest.raises(EngineError, match="closed"):
        engine.infer(_feeds(0))


def test_bad_options_are_explained(tiny_onnx):
    with pytest.raises(EngineError, match="graph_optimization"):
        OnnxRuntimeEngine(tiny_onnx, graph_optimization="max")
    with pytest.raises(EngineError, match="device must be"):
        OnnxRuntimeEngine(tiny_onnx, device="tpu")


def test_providers_follow_what_is_installed():
    cpu_only = ["CPUExecutionProvider"]
    assert providers_for(None, cpu_only)[0] == ["CPUExecutionProvider"]
    with pytest.raises(EngineError, match="onnxruntime-gpu"):
        providers_for("cuda", cpu_only)
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers, kind, index = providers_for("cuda:1", gpu)
    assert providers[0] == ("CUDAExecutionProvider", {"device_id": 1}) and kind == "cuda"
    assert index == 1
    assert providers_for(None, gpu)[0][0][0] == "CUDAExecutionProvider"  # never TRT implicitly
    assert providers_for("tensorrt", gpu)[0][0][0] == "TensorrtExecutionProvider"
