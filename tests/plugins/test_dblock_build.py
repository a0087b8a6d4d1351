"""Building the plugin library with CMake + nvcc (where both exist; TensorRT headers optional)."""

import importlib
import os
import shutil
import subprocess

import pytest

from segdeploy.plugins.dblock import build

TRT_INCLUDES = [d for d in os.environ.get("SEGDEPLOY_TRT_INCLUDES", "").split(os.pathsep) if d]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# CMake 3.10.3 from the package registry, what JetPack 4.6 (Ubuntu 18.04) ships as 3.10.2: `make
# py36` installs it into .venv-cmake310 (its wheels are tagged for Python 3.6).
CMAKE_310 = os.environ.get("SEGDEPLOY_CMAKE310") or os.path.join(
    REPO, ".venv-cmake310", "bin", "cmake"
)


def _toolchain_missing():
    try:
        build.find_cmake()
        build.find_nvcc()
    except build.MissingDependencyError as exc:
        return str(exc)
    return None


needs_toolchain = pytest.mark.skipif(
    _toolchain_missing() is not None, reason=str(_toolchain_missing())
)


@needs_toolchain
def test_missing_tensorrt_headers_is_one_clear_error(tmp_path, capsys):
    code = build.main(
        ["--out", str(tmp_path / "out"), "--tensorrt-root", str(tmp_path), "--arch", "75"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "NvInfer.h) were not found; pass --tensorrt-root" in err[0]
    assert not (tmp_path / "out" / build.LIBRARY).exists()


def test_bad_arch_is_refused(tmp_path, capsys):
    assert build.main(["--out", str(tmp_path), "--arch", "sm_75"]) == 2
    assert "--arch takes SM numbers" in capsys.readouterr().err


@needs_toolchain
@pytest.mark.skipif(not TRT_INCLUDES, reason="SEGDEPLOY_TRT_INCLUDES names no TensorRT headers")
def test_builds_the_library_against_tensorrt_headers(tmp_path):
    include = TRT_INCLUDES[-1]
    path = build.build(str(tmp_path), os.path.dirname(include), archs=["75"], link_nvinfer=False)
    assert path == str(tmp_path / build.LIBRARY) and os.path.getsize(path) > 0
    if shutil.which("nm"):
        symbols = subprocess.run(
            ["nm", "-D", path], stdout=subprocess.PIPE, check=True
        ).stdout.decode()
        # Registration with TensorRT's registry at load time, and the kernel launch.
        assert "getPluginRegistry" in symbols
        assert "cudaLaunchKernel" in symbols or "__cudaLaunchKernel" in symbols


@pytest.mark.skipif(
    not os.path.isfile(CMAKE_310), reason="no CMake 3.10 at {} (make py36)".format(CMAKE_310)
)
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc here")
@pytest.mark.parametrize("plugin", ["dblock", "seghead"])
def test_cmake_310_configures_and_builds(tmp_path, monkeypatch, capsys, plugin):
    """CMake 3.10 has no -S/-B: it took the build folder for the source ("The source directory
    .../cmake does not exist"). Configure reaches CMakeLists.txt's own header check without
    headers, and builds the library for sm_75 where SEGDEPLOY_TRT_INCLUDES names some."""
    tool = (
        build if plugin == "dblock" else importlib.import_module("segdeploy.plugins.seghead.build")
    )
    version = subprocess.run([CMAKE_310, "--version"], stdout=subprocess.PIPE, check=True)
    assert version.stdout.decode().split()[2].startswith("3.10.")
    monkeypatch.setenv("CMAKE", CMAKE_310)
    monkeypatch.setenv("PATH", os.path.dirname(CMAKE_310) + os.pathsep + os.environ["PATH"])
    out = tmp_path / "out"
    if not TRT_INCLUDES:
        argv = ["--out", str(out), "--tensorrt-root", str(tmp_path), "--arch", "75"]
        assert tool.main(argv) == 2
        err = capsys.readouterr().err
        assert "NvInfer.h) were not found" in err, err
        with open(str(out / "build.log")) as f:
            log = f.read()
        assert "does not exist" not in log and "The CUDA compiler identification" in log
        return
    include = TRT_INCLUDES[-1]
    argv = ["--out", str(out), "--trt-include", include, "--no-link-nvinfer", "--arch", "75"]
    assert tool.main(argv) == 0
    assert os.path.getsize(str(out / tool.LIBRARY)) > 0
