"""The CUDA compilers a plugin's compile check uses, found without a GPU: NVRTC (pip
``nvidia-cuda-nvrtc-cu12``, loaded with ctypes) to PTX, ptxas (pip ``nvidia-cuda-nvcc-cu12``) to
SASS with its ``-v`` resource report, and ``cuda_fp16.h`` from ``nvidia-cuda-runtime-cu12``. The
locations can be overridden with ``SEGDEPLOY_NVRTC``, ``SEGDEPLOY_CUDA_INCLUDE`` and
``SEGDEPLOY_PTXAS``. Shared by every kernel under ``segdeploy.plugins``; Python 3.6 compatible.
"""

import ctypes
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile

from ..errors import MissingDependencyError, SegDeployError

CUDA_HOME = os.environ.get("CUDA_HOME") or "/usr/local/cuda"


class CompileError(SegDeployError):
    """NVRTC or ptxas rejected the kernel."""


def wheel_dir(module):
    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations) if spec else []
    for root in roots:
        path = os.path.join(root, module)
        if os.path.isdir(path):
            return path
    return None


def find_nvrtc():
    """Path of libnvrtc from $SEGDEPLOY_NVRTC or the nvidia-cuda-nvrtc-cu12 wheel."""
    path = os.environ.get("SEGDEPLOY_NVRTC")
    if path:
        return path
    root = wheel_dir("cuda_nvrtc")
    found = sorted(glob.glob(os.path.join(root, "lib", "libnvrtc.so*"))) if root else []
    # A CUDA toolkit install (JetPack puts one in /usr/local/cuda) serves as well.
    found = found or sorted(glob.glob(os.path.join(CUDA_HOME, "lib64", "libnvrtc.so*")))
    if not found:
        raise MissingDependencyError(
            "NVRTC is not installed; install it with: pip install nvidia-cuda-nvrtc-cu12"
        )
    return found[0]


def find_cuda_include():
    """Directory with cuda_fp16.h: $SEGDEPLOY_CUDA_INCLUDE or the nvidia-cuda-runtime-cu12 wheel."""
    path = os.environ.get("SEGDEPLOY_CUDA_INCLUDE")
    if not path:
        root = wheel_dir("cuda_runtime")
        path = os.path.join(root, "include") if root else ""
        if not os.path.isfile(os.path.join(path, "cuda_fp16.h")):
            path = os.path.join(CUDA_HOME, "include")
    if not os.path.isfile(os.path.join(path, "cuda_fp16.h")):
        raise MissingDependencyError(
            "the CUDA headers (cuda_fp16.h) are not installed; install them with: "
            "pip install nvidia-cuda-runtime-cu12"
        )
    return path


def find_ptxas():
    """Path of ptxas from $SEGDEPLOY_PTXAS or the nvidia-cuda-nvcc-cu12 wheel."""
    path = os.environ.get("SEGDEPLOY_PTXAS")
    if not path:
        root = wheel_dir("cuda_nvcc")
        path = os.path.join(root, "bin", "ptxas") if root else ""
    if not (path and os.path.isfile(path)):
        raise MissingDependencyError(
            "ptxas is not installed; install it with: pip install nvidia-cuda-nvcc-cu12"
        )
    return path


class Nvrtc(object):
    """The few NVRTC calls needed to compile one source to PTX."""

    def __init__(self, path=None):
        path = path or find_nvrtc()
        # libnvrtc dlopens its builtins library by name: load it first from the same directory.
        for builtins in sorted(
            glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so*"))
        ):
            if ".alt." not in builtins:
                ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
                break
        try:
            self.lib = ctypes.CDLL(path)
        except OSError as exc:
            raise MissingDependencyError(
                "cannot load NVRTC from {} ({}); reinstall nvidia-cuda-nvrtc-cu12".format(path, exc)
            ) from None
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def version(self):
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "version")
        return "{}.{}".format(major.value, minor.value)

    def _check(self, code, what):
        if code != 0:
            raise CompileError(
                "NVRTC {} failed: {}".format(what, self.lib.nvrtcGetErrorString(code).decode())
            )

    def compile(self, source, name, headers, options):
        """PTX text of ``source``; ``headers`` maps include names to their text."""
        prog = ctypes.c_void_p()
        names = list(headers)
        hdr = (ctypes.c_char_p * len(names))(*[headers[n].encode() for n in names])
        inc = (ctypes.c_char_p * len(names))(*[n.encode() for n in names])
        self._check(
            self.lib.nvrtcCreateProgram(
                ctypes.byref(prog), source.encode(), name.encode(), len(names), hdr, inc
            ),
            "create program",
        )
        try:
            opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            code = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            self.lib.nvrtcGetProgramLog(prog, log)
            if code != 0:
                raise CompileError(
                    "NVRTC could not compile {} ({}): {}".format(
                        name, " ".join(options), first_error(log.value.decode("utf-8", "replace"))
                    )
                )
            self._check(self.lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "PTX size")
            ptx = ctypes.create_string_buffer(size.value)
            self._check(self.lib.nvrtcGetPTX(prog, ptx), "PTX")
            return ptx.value.decode()
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


def first_error(log):
    for line in log.splitlines():
        if "error" in line:
            return line.strip()
    return log.strip().splitlines()[0] if log.strip() else "no log"


_FUNC = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def parse_ptxas_report(text):
    """``ptxas -v`` output -> {kernel: {registers, smem_bytes, stack_bytes, spill_stores, ...}}."""
    result = {}
    current = None
    for line in text.splitlines():
        m = _FUNC.search(line)
        if m:
            current = result.setdefault(m.group(1), {"arch": m.group(2)})
            continue
        if current is None:
            continue
        m = _STACK.search(line)
        if m:
            current["stack_bytes"] = int(m.group(1))
            current["spill_stores"] = int(m.group(2))
            current["spill_loads"] = int(m.group(3))
            continue
        m = _USED.search(line)
        if m:
            current["registers"] = int(m.group(1))
            current["smem_bytes"] = int(m.group(2) or 0)
    for name, info in result.items():
        missing = {"registers", "spill_stores", "spill_loads"} - set(info)
        if missing:
            raise CompileError(
                "ptxas -v gave no {} for {}; its output format changed".format(
                    ", ".join(sorted(missing)), name
                )
            )
    return result


def ptxas_assemble(ptx, sm, ptxas=None, workdir=None):
    """Assemble PTX for sm_XX with ``ptxas -v``; return (resources per kernel, cubin bytes)."""
    ptxas = ptxas or find_ptxas()
    tmp = tempfile.mkdtemp(prefix="dblock-ptxas-", dir=workdir)
    try:
        src = os.path.join(tmp, "k.ptx")
        out = os.path.join(tmp, "k.cubin")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run(
            [ptxas, "-arch=sm_{}".format(sm), "-O3", "-v", src, "-o", out],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        text = proc.stdout.decode("utf-8", "replace")
        if proc.returncode != 0:
            raise CompileError(
                "ptxas could not assemble the kernel for sm_{}: {}".format(sm, first_error(text))
            )
        with open(out, "rb") as f:
            cubin = f.read()
        return parse_ptxas_report(text), cubin
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ptxas_version(ptxas=None):
    proc = subprocess.run(
        [ptxas or find_ptxas(), "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    m = re.search(r"release (\d+\.\d+)", proc.stdout.decode("utf-8", "replace"))
    return m.group(1) if m else "unknown"
