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

from ...errors import MissingDependencyError
from ..cuda_toolchain import find_cuda_include, first_error, wheel_dir
from . import plugin_api
from .plugin_api import tensorrt_version  # noqa: F401  (callers knew it here)

HERE = os.path.dirname(os.path.abspath(__file__))


PLUGIN_SOURCE = plugin_api.SOURCES[plugin_api.V2]


def cuda_host_includes():
    """Include directories for cuda_runtime_api.h (it needs crt/ from the nvcc wheel)."""
    dirs = [find_cuda_include()]
    root = wheel_dir("cuda_nvcc")
    if root and os.path.isdir(os.path.join(root, "include", "crt")):
        dirs.append(os.path.join(root, "include"))
    return dirs


def compile_plugin(include_dir, cxx=None, api=None):
    """Compile the plugin's source to an object against one TensorRT include directory: the
    form ``api`` ('V2' dblock_plugin.cpp, 'V3' dblock_plugin_v3.cpp), by default the one that
    release takes (plugin_api.api_for_version: V3 from TensorRT 10).

    Returns {'tensorrt', 'api', 'include', 'ok', 'object_bytes', 'warnings', 'message'};
    warnings count the diagnostics in the plugin's own sources (TensorRT's headers are system
    headers here).
    """
    cxx = cxx or os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        raise MissingDependencyError("no C++ compiler found; install g++ or set CXX")
    version = tensorrt_version(include_dir)
    api = api or plugin_api.api_for_version(version)
    source = plugin_api.SOURCES[api]
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
        cmd += ["-I", HERE, "-c", os.path.join(HERE, source), "-o", obj]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        text = proc.stdout.decode("utf-8", "replace")
        ok = proc.returncode == 0
        return {
            "tensorrt": version,
            "api": api,
            "include": include_dir,
            "ok": ok,
            "object_bytes": os.path.getsize(obj) if ok else 0,
            "warnings": len(re.findall(r"dblock_plugin\w*\.(?:cpp|h):\d+:\d+: warning", text)),
            "message": "" if ok else first_error(text),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def format_plugin_table(rows):
    out = io.StringIO()
    out.write(
        "\n{:<12} {:<5} {:<8} {:>12} {:>9}  {}\n".format(
            "TensorRT", "form", "result", "object B", "warnings", "headers"
        )
    )
    for r in rows:
        out.write(
            "{:<12} {:<5} {:<8} {:>12} {:>9}  {}\n".format(
                r["tensorrt"],
                r.get("api", ""),
                "ok" if r["ok"] else "FAILED",
                r["object_bytes"],
                r["warnings"],
                r["include"] if r["ok"] else r["message"],
            )
        )
    return out.getvalue()
