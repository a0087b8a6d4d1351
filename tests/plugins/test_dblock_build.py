"""Building the plugin library with CMake + nvcc (where both exist; TensorRT headers optional)."""

import os
import shutil
import subprocess

import pytest

from segdeploy.plugins.dblock import build

TRT_INCLUDES = [d for d in os.environ.get("SEGDEPLOY_TRT_INCLUDES", "").split(os.pathsep) if d]


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
