"""Build the SegHead TensorRT plugin library on the device with CMake and nvcc.

    python -m segdeploy.plugins.seghead.build --out build/seghead [--tensorrt-root DIR] [--arch 75]

Configures ``CMakeLists.txt`` (beside this file) into ``OUT/cmake``, builds it, and puts the
library at ``OUT/libseghead_plugin.so`` (atomically). The same steps and tool lookup as the
D-block plugin's build (``segdeploy.plugins.dblock.build``); ``--arch`` defaults to the GPU
present. The library is loaded only where the user names it (``segbuild --plugin``,
``Runtime(path, plugins=[...])``, ``segbench --head --plugin``). Python 3.6 compatible.
"""

import argparse
import os
import sys

from ..._cli import run_main
from ..._io import check_writable_dir
from ..._version import __version__
from .. import cmake_build
from ..dblock import build as dblock_build

HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY = "libseghead_plugin.so"
PluginBuildError = dblock_build.PluginBuildError


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
    """Configure and build the plugin; return the library's path (None under ``dry_run``:
    the commands are written to ``stream``). ``trt_include`` /
    ``trt_lib``: TensorRT's headers and libnvinfer where CMake would not find them (pip's
    wheels: see ``dblock.build.tensorrt_paths``)."""
    stream = stream or sys.stdout
    cmake = dblock_build.find_cmake()
    nvcc = dblock_build.find_nvcc()
    check_writable_dir(out_dir)
    if archs is None:
        arch = dblock_build.detect_arch()
        archs = [arch] if arch else []
    build_dir = os.path.join(os.path.abspath(out_dir), "cmake")
    log = os.path.join(os.path.abspath(out_dir), "build.log")
    configure = cmake_build.configure_command(
        cmake, HERE, nvcc, "SEGHEAD", archs, tensorrt_root, link_nvinfer
    )
    entries = dblock_build.tensorrt_paths(tensorrt_root, trt_include, trt_lib, link_nvinfer)
    configure += ["-D{}={}".format(k, v) for k, v in sorted(entries.items())]
    steps = (
        ("configure (CMake, nvcc {})".format(nvcc), configure, "CMake configuration"),
        ("compile kernel and plugin", [cmake, "--build", "."], "the build"),
    )
    return cmake_build.run_build(
        steps, build_dir, log, LIBRARY, out_dir, dblock_build._run, stream, dry_run
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m segdeploy.plugins.seghead.build",
        description="Build the SegHead TensorRT plugin library with CMake and nvcc.",
    )
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    cmake_build.add_build_arguments(
        parser, "build/seghead", "62 (TX2), 61 (GTX 1080 Ti), 75 (T4), 87 (Orin)"
    )
    args = parser.parse_args(argv)
    return run_main(
        parser.prog,
        lambda: cmake_build.build_from_args(build, args, sys.stdout),
        "no plugin library written",
    )


if __name__ == "__main__":
    sys.exit(main())
