"""TensorRT INT8 from the Q/DQ graph: builder settings per release, the trtexec line, the device
policy. The BuilderFlag stand-ins are generated from the real bindings' surfaces recorded in
/work/shared/trt-api (one enum per release, values as TensorRT has them); the tensorrt-marked
test builds a real engine where TensorRT and a GPU are present."""

import enum
import json
import os
from types import SimpleNamespace

import pytest

from segdeploy.engines import devices
from segdeploy.engines.tensorrt_builder import check_int8_source, configure_int8
from segdeploy.engines.trtexec import trtexec_command
from segdeploy.errors import EngineError

API_DIR = os.environ.get("SEGDEPLOY_TRT_API", "/work/shared/trt-api")
RELEASES = ("8.6.1", "10.0.1", "10.13.3.9", "11.0.0.114")


def _trt_surface(release):
    path = os.path.join(API_DIR, release + ".json")
    if not os.path.isfile(path):
        pytest.skip("TensorRT API surface {} not found (set SEGDEPLOY_TRT_API)".format(path))
    with open(path) as f:
        classes = json.load(f)["classes"]
    members = classes["BuilderFlag"]["enum"]
    flag = enum.IntEnum("BuilderFlag", {k: v for k, v in members.items() if isinstance(v, int)})
    return SimpleNamespace(BuilderFlag=flag, __version__=release)


class _Config(object):
    def __init__(self):
        self.flags = []

    def set_flag(self, flag):
        self.flags.append(flag.name)


@pytest.mark.parametrize("release", RELEASES)
def test_int8_builder_settings_follow_the_release(release):
    trt = _trt_surface(release)
    config = _Config()
    record = configure_int8(trt, config)
    if release.startswith("11."):
        # strongly typed: no INT8 flag exists, the Q/DQ graph's types decide
        assert config.flags == [] and record["strongly_typed"] and not record["int8_flag"]
    else:
        assert config.flags == ["INT8"] and record["int8_flag"]
    assert "FP16" not in config.flags  # layers the budget kept FP32 stay FP32


@pytest.mark.parametrize(
    "version, flag", [("8.2", True), ("8.6", True), ("10.3", True), ("11.0", False)]
)
def test_trtexec_int8_line(version, flag):
    line = trtexec_command("m.int8.onnx", "m.plan", "int8", tensorrt_version=version)
    assert line.startswith("trtexec --onnx=m.int8.onnx --saveEngine=m.plan")
    assert ("--int8" in line.split()) is flag
    assert "--fp16" not in line


def test_int8_engines_only_from_the_qdq_graph():
    card = {"precision": "int8"}
    check_int8_source("int8", card, "m.int8.onnx")
    with pytest.raises(EngineError, match="segexport --int8"):
        check_int8_source("int8", {}, "m.onnx")
    with pytest.raises(EngineError, match="INT8 Q/DQ graph"):
        check_int8_source("fp16", card, "m.int8.onnx")


def test_device_policy():
    precision, why = devices.recommend_precision(devices.get("gtx1080ti"), have_int8_graph=True)
    assert precision == "int8" and "1/64" in why
    precision, why = devices.recommend_precision(devices.get("gtx1080ti"))
    assert precision == "fp32" and "--int8" in why
    precision, why = devices.recommend_precision(devices.get("jetson-tx2"), have_int8_graph=True)
    assert precision == "fp16" and "no INT8" in why
    with pytest.raises(EngineError, match="no INT8"):
        devices.check_precision(devices.get("jetson-tx2"), "int8")
    assert devices.recommend_precision(devices.get("t4"))[0] == "fp16"
    assert devices.recommend_precision(devices.get("t4"), have_int8_graph=True)[0] == "int8"


@pytest.mark.tensorrt
def test_real_int8_engine(tmp_path):
    from segdeploy.engines import build_tensorrt_engine

    int8_onnx = os.environ.get("SEGDEPLOY_INT8_ONNX")
    if not int8_onnx:
        pytest.skip("set SEGDEPLOY_INT8_ONNX to a segexport --int8 graph to build it here")
    from segdeploy import card as card_mod

    card = card_mod.read_sidecar(int8_onnx)
    sidecar = build_tensorrt_engine(int8_onnx, str(tmp_path / "m.plan"), card, precision="int8")
    assert sidecar["engine"]["precision"] == "int8"
    assert sidecar["engine"]["build_flags"]["explicit_quantization"]
