"""TensorRT from pip for the plugin build: libnvinfer found in the wheels' folders by file name,
--trt-include / --trt-lib checked before CMake runs, and one line saying where headers come from.

The layouts are the file names pip installs: ``tensorrt_libs/`` for tensorrt-cu12-libs 10.x and
tensorrt 8.6.1's tensorrt-libs (``libnvinfer.so.10`` / ``.so.8``), the libraries inside
``tensorrt/`` for the single wheels of 8.4 and 8.5; the files here are empty: nothing is loaded.
"""

import os

import pytest

from segdeploy.errors import MissingDependencyError, SegDeployError
from segdeploy.plugins.dblock import build, trt_locate

WHEEL_10 = [
    "tensorrt_libs/__init__.py",
    "tensorrt_libs/libnvinfer.so.10",
    "tensorrt_libs/libnvinfer_builder_resource.so.10.3.0",
    "tensorrt_libs/libnvinfer_dispatch.so.10",
    "tensorrt_libs/libnvinfer_lean.so.10",
    "tensorrt_libs/libnvinfer_plugin.so.10",
    "tensorrt_libs/libnvinfer_vc_plugin.so.10",
    "tensorrt_libs/libnvonnxparser.so.10",
    "tensorrt/__init__.py",
    "tensorrt/tensorrt.so",
]
WHEEL_86 = [
    "tensorrt_libs/__init__.py",
    "tensorrt_libs/libnvinfer.so.8",
    "tensorrt_libs/libnvinfer_builder_resource.so.8.6.1",
    "tensorrt_libs/libnvinfer_plugin.so.8",
    "tensorrt_libs/libnvonnxparser.so.8",
    "tensorrt_bindings/__init__.py",
    "tensorrt/__init__.py",
]
WHEEL_85 = [
    "tensorrt/__init__.py",
    "tensorrt/libnvinfer.so.8",
    "tensorrt/libnvinfer_builder_resource.so.8.5.3",
    "tensorrt/libnvinfer_plugin.so.8",
    "tensorrt/libnvonnxparser.so.8",
    "tensorrt/tensorrt.so",
]


def layout(root, files):
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return str(root)


@pytest.mark.parametrize(
    "names,chosen",
    [
        (
            ["libnvinfer.so.10", "libnvinfer_plugin.so.10", "libnvinfer_lean.so.10"],
            "libnvinfer.so.10",
        ),
        (["libnvinfer.so.10.3.0", "libnvinfer.so.10"], "libnvinfer.so.10"),
        (["libnvinfer.so.8.2.1", "libnvinfer.so.8", "libnvinfer.so"], "libnvinfer.so"),
        (["libnvinfer.so.8", "libnvinfer.so.10"], "libnvinfer.so.10"),
        (["libnvinfer_plugin.so.10", "libnvonnxparser.so.10", "libnvinfer.so.10.bak"], None),
    ],
)
def test_pick_nvinfer(names, chosen):
    assert trt_locate.pick_nvinfer(names) == chosen


@pytest.mark.parametrize(
    "files,expected,major",
    [
        (WHEEL_10, "tensorrt_libs/libnvinfer.so.10", 10),
        (WHEEL_86, "tensorrt_libs/libnvinfer.so.8", 8),
        (WHEEL_85, "tensorrt/libnvinfer.so.8", 8),
    ],
)
def test_wheel_nvinfer_is_found_by_name(tmp_path, files, expected, major):
    site = layout(tmp_path / "site-packages", files)
    found = trt_locate.find_wheel_nvinfer([str(tmp_path / "nowhere"), site])
    assert found == os.path.join(site, expected)
    assert trt_locate.lib_major(found) == int(
        expected[-1] if expected[-2] == "." else expected[-2:]
    )


def test_no_wheel_no_library(tmp_path):
    site = layout(tmp_path / "site", ["tensorrt/__init__.py", "tensorrt/tensorrt.so"])
    assert trt_locate.find_wheel_nvinfer([site]) is None


def _headers(folder, major, minor=3, patch=0):
    folder.mkdir(parents=True)
    (folder / "NvInfer.h").write_text("// stand-in: name only\n")
    (folder / "NvInferVersion.h").write_text(
        "#define NV_TENSORRT_MAJOR {}\n#define NV_TENSORRT_MINOR {}\n"
        "#define NV_TENSORRT_PATCH {}\n".format(major, minor, patch)
    )
    return str(folder)


def test_cmake_entries_for_a_pip_install(tmp_path):
    site = layout(tmp_path / "site", WHEEL_10)
    include = _headers(tmp_path / "TensorRT" / "include", 10)
    lib_dir = os.path.join(site, "tensorrt_libs")
    entries = build.tensorrt_paths(trt_include=include, trt_lib=lib_dir)
    assert entries == {
        "TensorRT_INCLUDE_DIR": include,
        "TensorRT_NVINFER": os.path.join(lib_dir, "libnvinfer.so.10"),
    }
    # the file itself is taken as given; --no-link-nvinfer needs no library at all
    lib = os.path.join(lib_dir, "libnvinfer.so.10")
    assert build.tensorrt_paths(trt_include=include, trt_lib=lib)["TensorRT_NVINFER"] == lib
    assert build.tensorrt_paths(trt_include=include, link_nvinfer=False) == {
        "TensorRT_INCLUDE_DIR": include
    }


def test_headers_and_library_of_different_releases_are_refused(tmp_path):
    site = layout(tmp_path / "site", WHEEL_86)
    include = _headers(tmp_path / "inc10", 10)
    with pytest.raises(SegDeployError) as info:
        build.tensorrt_paths(trt_include=include, trt_lib=os.path.join(site, "tensorrt_libs"))
    assert "headers 10.3.0" in str(info.value) and "different releases" in str(info.value)


def test_folders_without_what_they_must_hold_are_one_line_errors(tmp_path):
    with pytest.raises(MissingDependencyError) as info:
        build.tensorrt_paths(trt_include=str(tmp_path))
    message = str(info.value)
    assert "\n" not in message and "has no NvInfer.h" in message
    assert "release/" in message and "libnvinfer-dev" in message  # where headers come from
    with pytest.raises(MissingDependencyError, match="neither libnvinfer nor a folder"):
        build.tensorrt_paths(trt_include=None, trt_lib=str(tmp_path))


def test_cli_refuses_an_include_without_headers_before_cmake(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CMAKE", "/bin/true")  # never reached: the check comes first
    monkeypatch.setenv("CUDACXX", "/bin/true")
    argv = ["--out", str(tmp_path / "out"), "--trt-include", str(tmp_path), "--arch", "75"]
    assert build.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no NvInfer.h" in err[0]
