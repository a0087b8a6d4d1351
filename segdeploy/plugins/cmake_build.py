"""The steps every plugin's build takes on the device: configure its CMakeLists.txt inside
``OUT/cmake`` (``cd OUT/cmake && cmake SRC``: the form CMake 3.10 of JetPack 4.6 takes; ``-S`` /
``-B`` need 3.13), build, copy the library to ``OUT`` atomically (a failed build leaves none), and
warn when ptxas reports spills; ``--print-cmake`` prints the commands instead. Also the command
line the plugins' ``build`` modules share. Python 3.6 compatible.
"""

import os
import re
import shutil
import time

from .._io import atomic_path
from ..errors import SegDeployError


class PluginBuildError(SegDeployError):
    """CMake or the compiler failed to build a plugin."""


def configure_command(cmake, source_dir, nvcc, prefix, archs, tensorrt_root=None,
                      link_nvinfer=True):  # fmt: skip
    """The CMake configure line, run inside the build folder: ``cmake SRC`` (CMake 3.10, of
    JetPack 4.6, has no ``-S`` / ``-B``: they need 3.13). ``prefix`` names the plugin's own
    options (``DBLOCK``: ``-DDBLOCK_CUDA_ARCHS``, ``-DDBLOCK_LINK_NVINFER``)."""
    cmd = [
        cmake,
        source_dir,
        "-DCMAKE_BUILD_TYPE=Release",
        "-DCMAKE_CUDA_COMPILER=" + nvcc,
        "-D{}_CUDA_ARCHS={}".format(prefix, ";".join(str(a) for a in archs)),
        "-D{}_LINK_NVINFER={}".format(prefix, "ON" if link_nvinfer else "OFF"),
    ]
    if tensorrt_root:
        cmd.append("-DTensorRT_ROOT=" + os.path.abspath(tensorrt_root))
    return cmd


def run_build(steps, build_dir, log, library, out_dir, run, stream, dry_run=False):
    """Run ``steps`` ((title, command, what) in ``build_dir``, logged to ``log`` through
    ``run(cmd, log, what, cwd)``) and install ``build_dir/library`` as ``out_dir/library``.
    Returns its path, or None under ``dry_run`` (the commands are written to ``stream``)."""
    if dry_run:
        stream.write("mkdir -p {0} && cd {0}\n".format(build_dir))
        for _, cmd, _ in steps:
            stream.write(" ".join(cmd) + "\n")
        return None
    if os.path.exists(log):
        os.remove(log)
    if not os.path.isdir(build_dir):
        os.makedirs(build_dir)
    output = ""
    for index, (title, cmd, what) in enumerate(steps, 1):
        stream.write("[{}/{}] {} ...\n".format(index, len(steps), title))
        stream.flush()
        start = time.time()
        output += run(cmd, log, what, cwd=build_dir)
        stream.write("      done in {:.1f} s\n".format(time.time() - start))
    built = os.path.join(build_dir, library)
    if not os.path.isfile(built):
        raise PluginBuildError("the build produced no {}; see {}".format(library, log))
    target = os.path.join(os.path.abspath(out_dir), library)
    with atomic_path(target) as tmp:
        shutil.copyfile(built, tmp)
        os.chmod(tmp, 0o755)
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", output)
    if any(int(a) or int(b) for a, b in spills):
        stream.write("      warning: ptxas reports register spills; see {}\n".format(log))
    return target


def add_build_arguments(parser, out_default, arch_examples):
    """The options of ``python -m segdeploy.plugins.<kernel>.build``."""
    parser.add_argument("--out", default=out_default, help="output directory (%(default)s)")
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
        help="SM number to build for, e.g. {}; repeatable (default: the GPU present)".format(
            arch_examples
        ),
    )
    parser.add_argument(
        "--print-cmake",
        action="store_true",
        help="print the CMake commands this would run (with the paths it found) and stop",
    )
    parser.add_argument(
        "--no-link-nvinfer",
        action="store_true",
        help="do not link libnvinfer (its symbols resolve when TensorRT loads the plugin)",
    )


def parse_archs(values):
    """``--arch`` values, checked: SM numbers such as 75; None when none were given."""
    if not values:
        return None
    if not all(re.match(r"^\d{2,3}$", a) for a in values):
        raise SegDeployError(
            "--arch takes SM numbers such as 75 or 62, got {}".format(", ".join(values))
        )
    return list(values)


def build_from_args(build, args, stream):
    """Run a plugin's ``build`` with the parsed options; print the library's path."""
    path = build(
        args.out,
        args.tensorrt_root,
        parse_archs(args.arch),
        link_nvinfer=not args.no_link_nvinfer,
        trt_include=args.trt_include,
        trt_lib=args.trt_lib,
        dry_run=args.print_cmake,
    )
    if path:
        stream.write(path + "\n")
