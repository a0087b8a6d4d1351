"""Build the DBlockConv TensorRT plugin library on the device with CMake and nvcc.

    python -m segdeploy.plugins.dblock.build --out build/dblock [--tensorrt-root DIR] [--arch 75]
        [--trt-include DIR] [--trt-lib FILE_OR_DIR]

Configures ``CMakeLists.txt`` (beside this file) into ``OUT/cmake`` the way CMake 3.10 (JetPack
4.6) takes it (``cd OUT/cmake && cmake SRC``: ``-S``/``-B`` need 3.13), builds it, and puts the
library at ``OUT/libdblock_plugin.so`` (atomically: a failed build leaves no library behind).
``--arch`` defaults to the GPU present (via nvidia-smi) when there is one. The library is loaded
only where the user names it: ``segbuild --plugin OUT/libdblock_plugin.so`` or
``Runtime(path, plugins=[...])``. TensorRT from pip: libnvinfer is found in the wheel's folder
(``tensorrt_libs/libnvinfer.so.10``); headers come from ``--trt-include`` (see trt_locate). Python
3.6 compatible.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

from ..._cli import run_main
from ..._io import check_writable_dir
from ..._version import __version__
from ...errors import MissingDependencyError, SegDeployError
from .. import cmake_build
from ..cmake_build import PluginBuildError
from . import trt_locate

HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY = "libdblock_plugin.so"


def find_nvcc():
    for candidate in (
        os.environ.get("CUDACXX"),
        shutil.which("nvcc"),
        os.path.join(os.environ.get("CUDA_HOME") or "/usr/local/cuda", "bin", "nvcc"),
    ):
        if candidate and os.path.isfile(candidate):
            return candidate
    raise MissingDependencyError(
        "nvcc (the CUDA compiler) was not found; install the CUDA toolkit (JetPack has it in "
        "/usr/local/cuda/bin) or set CUDACXX to its path"
    )


def find_cmake():
    """$CMAKE when set (e.g. a pip-installed CMake beside apt's), else cmake on PATH."""
    path = os.environ.get("CMAKE") or shutil.which("cmake")
    if not path or not os.path.isfile(path):
        raise MissingDependencyError(
            "cmake was not found; install it (apt-get install cmake, or pip install cmake), or "
            "set CMAKE to its path"
        )
    return path


def detect_arch():
    """SM number of GPU 0 from nvidia-smi (e.g. '75'), or None when it cannot be asked."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        proc = subprocess.run(
            [smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.match(r"\s*(\d+)\.(\d+)", proc.stdout.decode("utf-8", "replace"))
    return match.group(1) + match.group(2) if proc.returncode == 0 and match else None


# Messages of CMakeLists.txt's own checks -> what the user should do.
_KNOWN_FAILURES = (
    (
        "NvInfer.h not found",
        "TensorRT's headers (NvInfer.h) were not found; pass --tensorrt-root with the TensorRT "
        "directory that has include/NvInfer.h, or --trt-include; " + trt_locate.HEADERS_HINT,
    ),
    (
        "libnvinfer not found",
        "libnvinfer was not found; pass --tensorrt-root with the TensorRT directory that has "
        "lib/libnvinfer.so, or --trt-lib with the file (pip: .../site-packages/tensorrt_libs/"
        "libnvinfer.so.10)",
    ),
)


def _run(cmd, log, what, cwd=None):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd)
    text = proc.stdout.decode("utf-8", "replace")
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n" + text)
    if proc.returncode != 0:
        for marker, hint in _KNOWN_FAILURES:
            if marker in text:
                raise PluginBuildError(hint)
        lines = [ln for ln in text.splitlines() if "error" in ln.lower()] or text.splitlines()
        raise PluginBuildError(
            "{} failed ({}); the full log is {}".format(
                what, lines[0].strip() if lines else "no output", log
            )
        )
    return text


def plugin_form(tensorrt_root, stream, include=None):
    """The CMake flag choosing IPluginV3 (TensorRT >= 10) or IPluginV2DynamicExt (8.x) from the
    headers' NV_TENSORRT_MAJOR (``include``, else found under ``tensorrt_root``); none where the
    headers are not found here (CMake then reads them itself)."""
    from . import plugin_api

    api, why = plugin_api.choose(tensorrt_root, include)
    stream.write("      plugin form: {}\n".format(why))
    return ["-DDBLOCK_PLUGIN_API=" + api] if api else []


def tensorrt_paths(tensorrt_root=None, trt_include=None, trt_lib=None, link_nvinfer=True):
    """CMake cache entries for TensorRT: the headers folder and the libnvinfer file, each when
    given or found (pip wheel) and else left to CMakeLists.txt's search. One-line errors for
    folders without what they must hold, and for headers and library of different majors."""
    entries = {}
    if trt_include:
        if not trt_locate.has_headers(trt_include):
            raise MissingDependencyError(
                "--trt-include {} has no NvInfer.h; {}".format(trt_include, trt_locate.HEADERS_HINT)
            )
        entries["TensorRT_INCLUDE_DIR"] = os.path.abspath(trt_include)
    lib = None
    if link_nvinfer:
        if trt_lib:
            lib = trt_lib if os.path.isfile(trt_lib) else trt_locate.nvinfer_in(trt_lib)
            if not lib:
                raise MissingDependencyError(
                    "--trt-lib {} is neither libnvinfer nor a folder with libnvinfer.so*".format(
                        trt_lib
                    )
                )
        elif not tensorrt_root:
            lib = trt_locate.find_wheel_nvinfer()
        if lib:
            entries["TensorRT_NVINFER"] = os.path.abspath(lib)
    if trt_include and lib:
        headers, major = trt_locate.header_version(trt_include), trt_locate.lib_major(lib)
        if headers and major is not None and int(headers.split(".")[0]) != major:
            raise SegDeployError(
                "TensorRT headers {} ({}) and libnvinfer {} are different releases; take the "
                "headers of the release that is installed".format(headers, trt_include, lib)
            )
    return entries


def build(
    out_dir,
    tensorrt_root=None,
    archs=None,
    link_nvinfer=True,
    stream=None,
    trt_include=None,
    trt_lib=None,
    dry_run=False,
):
    """Configure and build the plugin; return the library's path. ``dry_run``: write the
    commands (cd, configure, build) to ``stream`` and run nothing; returns None."""
    stream = stream or sys.stdout
    cmake = find_cmake()
    nvcc = find_nvcc()
    check_writable_dir(out_dir)
    if archs is None:
        arch = detect_arch()
        archs = [arch] if arch else []
    build_dir = os.path.join(os.path.abspath(out_dir), "cmake")
    log = os.path.join(os.path.abspath(out_dir), "build.log")
    entries = tensorrt_paths(tensorrt_root, trt_include, trt_lib, link_nvinfer)
    configure = cmake_build.configure_command(
        cmake, HERE, nvcc, "DBLOCK", archs, tensorrt_root, link_nvinfer
    )
    for key, value in sorted(entries.items()):
        configure.append("-D{}={}".format(key, value))
    if "TensorRT_NVINFER" in entries and not trt_lib:
        stream.write("      libnvinfer of the pip wheel: {}\n".format(entries["TensorRT_NVINFER"]))
    configure += plugin_form(tensorrt_root, stream, include=trt_include)
    steps = (
        ("configure (CMake, nvcc {})".format(nvcc), configure, "CMake configuration"),
        ("compile kernel and plugin", [cmake, "--build", "."], "the build"),
    )
    return cmake_build.run_build(steps, build_dir, log, LIBRARY, out_dir, _run, stream, dry_run)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m segdeploy.plugins.dblock.build",
        description="Build the DBlockConv TensorRT plugin library with CMake and nvcc.",
    )
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    cmake_build.add_build_arguments(parser, "build/dblock", "62 (TX2), 61 (GTX 1080 Ti), 75 (T4)")
    args = parser.parse_args(argv)
    return run_main(
        parser.prog,
        lambda: cmake_build.build_from_args(build, args, sys.stdout),
        "no plugin library written",
    )


if __name__ == "__main__":
    sys.exit(main())
