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
import re
import shutil
import sys
import time

from ..._cli import run_main
from ..._io import atomic_path, check_writable_dir
from ..._version import __version__
from ...errors import SegDeployError
from ..dblock import build as dblock_build

HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY = "libseghead_plugin.so"
PluginBuildError = dblock_build.PluginBuildError


def configure_command(cmake, nvcc, build_dir, archs, tensorrt_root=None, link_nvinfer=True):
    """The CMake configure line, run inside ``build_dir``: ``cmake SRC``, the form CMake 3.10
    (JetPack 4.6) takes (``-S``/``-B`` need 3.13)."""
    cmd = [
        cmake,
        HERE,
        "-DCMAKE_BUILD_TYPE=Release",
        "-DCMAKE_CUDA_COMPILER=" + nvcc,
        "-DSEGHEAD_CUDA_ARCHS=" + ";".join(str(a) for a in archs),
        "-DSEGHEAD_LINK_NVINFER=" + ("ON" if link_nvinfer else "OFF"),
    ]
    if tensorrt_root:
        cmd.append("-DTensorRT_ROOT=" + os.path.abspath(tensorrt_root))
    return cmd


def build(
    out_dir,
    tensorrt_root=None,
    archs=None,
    link_nvinfer=True,
    stream=None,
    trt_include=None,
    trt_lib=None,
):
    """Configure and build the plugin; return the library's path. ``trt_include`` /
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
    if os.path.exists(log):
        os.remove(log)
    configure = configure_command(cmake, nvcc, build_dir, archs, tensorrt_root, link_nvinfer)
    entries = dblock_build.tensorrt_paths(tensorrt_root, trt_include, trt_lib, link_nvinfer)
    configure += ["-D{}={}".format(k, v) for k, v in sorted(entries.items())]
    if not os.path.isdir(build_dir):
        os.makedirs(build_dir)
    steps = (
        ("configure (CMake, nvcc {})".format(nvcc), configure, "CMake configuration"),
        ("compile kernel and plugin", [cmake, "--build", "."], "the build"),
    )
    output = ""
    for index, (title, cmd, what) in enumerate(steps, 1):
        stream.write("[{}/{}] {} ...\n".format(index, len(steps), title))
        stream.flush()
        start = time.time()
        output += dblock_build._run(cmd, log, what, cwd=build_dir)
        stream.write("      done in {:.1f} s\n".format(time.time() - start))
    built = os.path.join(build_dir, LIBRARY)
    if not os.path.isfile(built):
        raise PluginBuildError("the build produced no {}; see {}".format(LIBRARY, log))
    target = os.path.join(os.path.abspath(out_dir), LIBRARY)
    with atomic_path(target) as tmp:
        shutil.copyfile(built, tmp)
        os.chmod(tmp, 0o755)
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", output)
    if any(int(a) or int(b) for a, b in spills):
        stream.write("      warning: ptxas reports register spills; see {}\n".format(log))
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m segdeploy.plugins.seghead.build",
        description="Build the SegHead TensorRT plugin library with CMake and nvcc.",
    )
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    parser.add_argument("--out", default="build/seghead", help="output directory (%(default)s)")
    parser.add_argument(
        "--tensorrt-root",
        metavar="DIR",
        help="TensorRT prefix with include/NvInfer.h and lib/ (JetPack and Debian packages are "
        "found without it)",
    )
    parser.add_argument(
        "--trt-include",
        metavar="DIR",
        help="folder with NvInfer.h (pip's wheels have none: the TensorRT GitHub release "
        "branch's include/, or the tar/deb dev package's)",
    )
    parser.add_argument(
        "--trt-lib",
        metavar="PATH",
        help="libnvinfer to link, or its folder (default: found under --tensorrt-root, the "
        "system paths, or pip's tensorrt_libs/libnvinfer.so.10)",
    )
    parser.add_argument(
        "--arch",
        action="append",
        metavar="SM",
        help="SM number to build for, e.g. 62 (TX2), 61 (GTX 1080 Ti), 75 (T4), 87 (Orin); "
        "repeatable (default: the GPU present)",
    )
    parser.add_argument(
        "--no-link-nvinfer",
        action="store_true",
        help="do not link libnvinfer (its symbols resolve when TensorRT loads the plugin)",
    )
    args = parser.parse_args(argv)

    def body():
        archs = None
        if args.arch:
            if not all(re.match(r"^\d{2,3}$", a) for a in args.arch):
                raise SegDeployError(
                    "--arch takes SM numbers such as 75 or 62, got {}".format(", ".join(args.arch))
                )
            archs = args.arch
        path = build(
            args.out,
            args.tensorrt_root,
            archs,
            link_nvinfer=not args.no_link_nvinfer,
            trt_include=args.trt_include,
            trt_lib=args.trt_lib,
        )
        sys.stdout.write(path + "\n")

    return run_main(parser.prog, body, "no plugin library written")


if __name__ == "__main__":
    sys.exit(main())
