"""The SegHead plugin's C++ against real TensorRT headers, run on the CPU (no TensorRT libraries,
no GPU): fields, refusals, (de)serialization round trips, formats, and the arguments enqueue hands
the kernel (tests/plugins/seghead_emu/plugin_harness.cpp)."""

import os
import shutil
import subprocess

import pytest

from segdeploy.plugins.dblock import compile_check as base
from segdeploy.plugins.seghead import compile_check

HERE = os.path.dirname(os.path.abspath(__file__))
TRT_INCLUDES = [d for d in os.environ.get("SEGDEPLOY_TRT_INCLUDES", "").split(os.pathsep) if d]


@pytest.mark.skipif(not TRT_INCLUDES, reason="SEGDEPLOY_TRT_INCLUDES names no TensorRT headers")
@pytest.mark.parametrize("include", TRT_INCLUDES or ["none"])
def test_plugin_behaviour_against_tensorrt_headers(include, tmp_path):
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        pytest.skip("no C++ compiler")
    try:
        cuda = base.cuda_host_includes()
    except base.MissingDependencyError as exc:
        pytest.skip(str(exc))
    exe = str(tmp_path / "harness")
    cmd = [cxx, "-std=c++14", "-O1", "-Wall", "-Wno-deprecated-declarations", "-isystem", include]
    for inc in cuda:
        cmd += ["-isystem", inc]
    cmd += ["-I", os.path.dirname(compile_check.__file__)]
    cmd += [os.path.join(HERE, "seghead_emu", "plugin_harness.cpp"), "-o", exe]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.returncode == 0, proc.stdout.decode()
    run = subprocess.run([exe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = run.stdout.decode()
    assert run.returncode == 0 and "0 failures" in text, text
    version = base.tensorrt_version(include)
    assert "interface " + compile_check.interface_for(version) in text
