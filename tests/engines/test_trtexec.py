import pytest

from segdeploy.engines import trtexec_command as lazy_trtexec_command
from segdeploy.engines.profiles import derive_profile
from segdeploy.engines.trtexec import trtexec_command
from segdeploy.errors import SegDeployError


def test_static_fp32_is_the_minimal_line():
    assert trtexec_command("m.onnx", "m.plan") == "trtexec --onnx=m.onnx --saveEngine=m.plan"


def test_dynamic_fp16_with_cache_workspace_level_and_plugin():
    line = trtexec_command(
        "out/regseg.onnx",
        "out/regseg.plan",
        "fp16",
        profile=derive_profile(dynamic="512x1024:1024x2048", stride=32),
        timing_cache="trt.cache",
        workspace_mib=2048,
        plugins=["libdblock.so"],
        opt_level=4,
    )
    assert line.split() == [
        "trtexec",
        "--onnx=out/regseg.onnx",
        "--saveEngine=out/regseg.plan",
        "--fp16",
        "--minShapes=image:1x3x512x1024",
        "--optShapes=image:1x3x1024x2048",
        "--maxShapes=image:1x3x1024x2048",
        "--memPoolSize=workspace:2048",
        "--timingCacheFile=trt.cache",
        "--builderOptimizationLevel=4",
        "--staticPlugins=libdblock.so",
    ]


def test_static_profile_adds_no_shape_flags():
    line = trtexec_command("m.onnx", "m.plan", profile=derive_profile(res="64x128", stride=16))
    assert "Shapes" not in line


def test_jetson_tx2_spelling():
    line = trtexec_command(
        "m.onnx", "m.plan", "fp16", workspace_mib=512, plugins=["p.so"], tensorrt_version="8.2"
    )
    assert "--workspace=512" in line and "--memPoolSize" not in line
    assert "--plugins=p.so" in line and "--fp16" in line
    with pytest.raises(SegDeployError, match="8.6 or newer"):
        trtexec_command("m.onnx", "m.plan", opt_level=3, tensorrt_version="8.2")


def test_tensorrt_11_has_no_fp16_flag():
    line = trtexec_command("m_fp16.onnx", "m.plan", "fp16", tensorrt_version=(11, 0))
    assert "--fp16" not in line and "--onnx=m_fp16.onnx" in line


def test_paths_with_spaces_are_quoted_and_input_name_is_used():
    line = trtexec_command(
        "my model.onnx",
        "out dir/m.plan",
        input_name="input",
        profile=derive_profile(dynamic="32x32:64x64"),
    )
    assert "--onnx='my model.onnx'" in line and "--saveEngine='out dir/m.plan'" in line
    assert "--minShapes=input:1x3x32x32" in line


def test_bad_arguments():
    with pytest.raises(SegDeployError, match="fp32, fp16 or int8"):
        trtexec_command("m.onnx", "m.plan", "int4")
    with pytest.raises(SegDeployError, match="TensorRT version"):
        trtexec_command("m.onnx", "m.plan", tensorrt_version="latest")


def test_lazy_package_export_matches():
    assert lazy_trtexec_command("a.onnx", "b.plan", "fp16") == trtexec_command(
        "a.onnx", "b.plan", "fp16"
    )
