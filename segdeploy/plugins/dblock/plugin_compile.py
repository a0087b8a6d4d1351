"""The D-block TensorRT plugin's own source compiled against a TensorRT release's headers (host
C++ only, no GPU), so that an API change between releases shows here and not on the device.
Python 3.6 compatible.
"""

import io
import os
import re
import shutil
import subprocess
import tempfile

from ...errors import MissingDependencyError, SegDeployError
from ..cuda_toolchain import find_cuda_include, first_error, wheel_dir

HERE = os.path.dirname(os.path.abspath(__file__))


PLUGIN_SOURCE = "dblock_plugin.cpp"


def tensorrt_version(include_dir):
    """'MAJOR.MINOR.PATCH' from NvInferVersion.h in ``include_dir`` (one level of macro aliases)."""
    path = os.path.join(include_dir, "NvInferVersion.h")
    try:
        with open(path, "r") as f:
            text = f.read()
    except OSError:
        raise SegDeployError(
            "{} has no NvInferVersion.h; pass TensorRT's include directory".format(include_dir)
        ) from None
    macros = dict(re.findall(r"#define\s+(\w+)\s+(\w+)", text))

    def value(name):
        v = macros.get(name, "?")
        return macros.get(v, v)

    return ".".join(value("NV_TENSORRT_" + k) for k in ("MAJOR", "MINOR", "PATCH"))


def cuda_host_includes():
    """Include directories for cuda_runtime_api.h (it needs crt/ from the nvcc wheel)."""
    dirs = [find_cuda_include()]
    root = wheel_dir("cuda_nvcc")
    if root and os.path.isdir(os.path.join(root, "include", "crt")):
        dirs.append(os.path.join(root, "include"))
    return dirs


def compile_plugin(include_dir, cxx=None):
    """Compile dblock_plugin.cpp to an object against one TensorRT include directory.

    Returns {'tensorrt', 'include', 'ok', 'object_bytes', 'warnings', 'message'}; warnings count
    the diagnostics in the plugin's own source (TensorRT's headers are system headers here).
    """
    cxx = cxx or os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        raise MissingDependencyError("no C++ compiler found; install g++ or set CXX")
    version = tensorrt_version(include_dir)
    tmp = tempfile.mkdtemp(prefix="dblock-plugin-")
    try:
        obj = os.path.join(tmp, "dblock_plugin.o")
        cmd = [
            cxx,
            "-std=c++14",
            "-O2",
            "-fPIC",
            "-Wall",
            "-Wextra",
            "-Wno-deprecated-declarations",
            "-isystem",
            include_dir,
        ]
        for inc in cuda_host_includes():
            cmd += ["-isystem", inc]
        cmd += ["-I", HERE, "-c", os.path.join(HERE, PLUGIN_SOURCE), "-o", obj]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        text = proc.stdout.decode("utf-8", "replace")
        ok = proc.returncode == 0
        return {
            "tensorrt": version,
            "include": include_dir,
            "ok": ok,
            "object_bytes": os.path.getsize(obj) if ok else 0,
            "warnings": len(re.findall(PLUGIN_SOURCE + r":\d+:\d+: warning", text)),
            "message": "" if ok else first_error(text),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def format_plugin_table(rows):
    out = io.StringIO()
    out.write(
        "\n{:<12} {:<8} {:>12} {:>9}  {}\n".format(
            "TensorRT", "result", "object B", "warnings", "headers"
        )
    )
    for r in rows:
        out.write(
            "{:<12} {:<8} {:>12} {:>9}  {}\n".format(
                r["tensorrt"],
                "ok" if r["ok"] else "FAILED",
                r["object_bytes"],
                r["warnings"],
                r["include"] if r["ok"] else r["message"],
            )
        )
    return out.getvalue()
