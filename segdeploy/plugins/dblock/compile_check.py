"""Compilation proofs of the D-block kernel: NVRTC to PTX, ptxas to SASS, resources, occupancy.

    python -m segdeploy.plugins.dblock.compile_check [--json out.json] [--csv out.csv]

NVRTC (pip ``nvidia-cuda-nvrtc-cu12``, loaded with ctypes from the wheel's lib directory, with
``cuda_fp16.h`` from ``nvidia-cuda-runtime-cu12``) compiles ``dblock_kernel.cu`` to PTX for each
virtual architecture in ``PTX_ARCHS``; ptxas (pip ``nvidia-cuda-nvcc-cu12``) assembles the PTX for
each real architecture in ``SASS_ARCHS`` with ``-v``, whose report gives registers, shared memory,
stack and spills per kernel. The occupancy each implies on the target devices (T4, GTX 1080 Ti,
Jetson TX2) comes from ``segdeploy.engines.devices.occupancy``. No GPU is needed.

The wheels' locations can be overridden with ``SEGDEPLOY_NVRTC`` (path of libnvrtc.so),
``SEGDEPLOY_CUDA_INCLUDE`` (a directory with cuda_fp16.h) and ``SEGDEPLOY_PTXAS``.
Python 3.6 compatible.
"""

import argparse
import csv
import ctypes
import glob
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile

from ..._cli import run_main
from ..._io import write_bytes, write_json
from ..._version import __version__
from ...engines import devices
from ...errors import MissingDependencyError, SegDeployError

HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL = "dblock_kernel.cu"
HEADERS = ("dblock_common.cuh",)
KERNELS = ("dblock_conv_f32", "dblock_conv_f16")
THREADS_PER_BLOCK = 128  # dblock_kernel.cu: 32 x kBlockRows
PTX_ARCHS = (61, 62, 75, 86, 89, 90)
SASS_ARCHS = (61, 62, 75, 86)
# Target device -> its architecture (devices.TABLE has the compute capability).
TARGETS = ("t4", "gtx1080ti", "jetson-tx2")
# The oldest toolkit of the targets is CUDA 10.2 (JetPack 4.6, TX2): C++11 keeps the source in
# the language every target's nvcc accepts.
NVRTC_OPTIONS = ("--std=c++11",)


CUDA_HOME = os.environ.get("CUDA_HOME") or "/usr/local/cuda"


class CompileError(SegDeployError):
    """NVRTC or ptxas rejected the kernel."""


def _wheel_dir(module):
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
    root = _wheel_dir("cuda_nvrtc")
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
        root = _wheel_dir("cuda_runtime")
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
        root = _wheel_dir("cuda_nvcc")
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
                        name, " ".join(options), _first_error(log.value.decode("utf-8", "replace"))
                    )
                )
            self._check(self.lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "PTX size")
            ptx = ctypes.create_string_buffer(size.value)
            self._check(self.lib.nvrtcGetPTX(prog, ptx), "PTX")
            return ptx.value.decode()
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _first_error(log):
    for line in log.splitlines():
        if "error" in line:
            return line.strip()
    return log.strip().splitlines()[0] if log.strip() else "no log"


def read_sources():
    with open(os.path.join(HERE, KERNEL), "r") as f:
        source = f.read()
    headers = {}
    for name in HEADERS:
        with open(os.path.join(HERE, name), "r") as f:
            headers[name] = f.read()
    return source, headers


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
                "ptxas could not assemble the kernel for sm_{}: {}".format(sm, _first_error(text))
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


def run(ptx_archs=PTX_ARCHS, sass_archs=SASS_ARCHS, keep_dir=None):
    """Compile everything; return the report (dict, JSON-ready)."""
    nvrtc = Nvrtc()
    include = find_cuda_include()
    ptxas = find_ptxas()
    source, headers = read_sources()
    report = {
        "kernel": KERNEL,
        "threads_per_block": THREADS_PER_BLOCK,
        "nvrtc": nvrtc.version(),
        "ptxas": ptxas_version(ptxas),
        "nvrtc_options": list(NVRTC_OPTIONS),
        "ptx": [],
        "sass": [],
        "occupancy": [],
    }
    ptx_by_arch = {}
    for arch in ptx_archs:
        options = ["--gpu-architecture=compute_{}".format(arch), "-I" + include]
        ptx = nvrtc.compile(source, KERNEL, headers, options + list(NVRTC_OPTIONS))
        entries = sorted(set(re.findall(r"\.entry\s+(\w+)", ptx)))
        missing = sorted(set(KERNELS) - set(entries))
        if missing:
            raise CompileError("the PTX for compute_{} lacks {}".format(arch, ", ".join(missing)))
        ptx_by_arch[arch] = ptx
        report["ptx"].append(
            {"arch": "compute_{}".format(arch), "bytes": len(ptx), "entries": entries}
        )
        if keep_dir:
            write_bytes(os.path.join(keep_dir, "dblock_compute_{}.ptx".format(arch)), ptx.encode())
    for sm in sass_archs:
        ptx = ptx_by_arch.get(sm)
        if ptx is None:
            ptx = nvrtc.compile(
                source,
                KERNEL,
                headers,
                ["--gpu-architecture=compute_{}".format(sm), "-I" + include] + list(NVRTC_OPTIONS),
            )
        resources, cubin = ptxas_assemble(ptx, sm, ptxas)
        if keep_dir:
            write_bytes(os.path.join(keep_dir, "dblock_sm_{}.cubin".format(sm)), cubin)
        for name in KERNELS:
            info = dict(resources[name])
            info["kernel"] = name
            info["arch"] = "sm_{}".format(sm)
            info["cubin_bytes"] = len(cubin)
            report["sass"].append(info)
    for key in TARGETS:
        record = devices.get(key)
        cc = record.compute_capability
        sm = cc[0] * 10 + cc[1]
        for row in report["sass"]:
            if row["arch"] != "sm_{}".format(sm):
                continue
            occ = devices.occupancy(cc, THREADS_PER_BLOCK, row["registers"], row["smem_bytes"])
            occ.update(
                {"device": key, "name": record.name, "kernel": row["kernel"], "arch": row["arch"]}
            )
            report["occupancy"].append(occ)
    return report


def spills(report):
    """Total spill bytes (stores + loads) over every kernel and architecture."""
    return sum(r["spill_stores"] + r["spill_loads"] for r in report["sass"])


def format_report(report):
    out = io.StringIO()
    out.write(
        "D-block kernel {}: NVRTC {}, ptxas {}, {} threads per block\n".format(
            report["kernel"], report["nvrtc"], report["ptxas"], report["threads_per_block"]
        )
    )
    out.write(
        "PTX (NVRTC): {}\n".format(", ".join("{} ok".format(p["arch"]) for p in report["ptx"]))
    )
    out.write(
        "\n{:<16} {:<6} {:>5} {:>10} {:>6} {:>12} {:>11}\n".format(
            "kernel", "arch", "regs", "smem B", "stack", "spill st B", "spill ld B"
        )
    )
    for r in report["sass"]:
        out.write(
            "{:<16} {:<6} {:>5} {:>10} {:>6} {:>12} {:>11}\n".format(
                r["kernel"],
                r["arch"],
                r["registers"],
                r["smem_bytes"],
                r["stack_bytes"],
                r["spill_stores"],
                r["spill_loads"],
            )
        )
    out.write(
        "\n{:<20} {:<16} {:<6} {:>13} {:>11} {:>10}  {}\n".format(
            "device", "kernel", "arch", "blocks/SM", "warps/SM", "occupancy", "limited by"
        )
    )
    for o in report["occupancy"]:
        out.write(
            "{:<20} {:<16} {:<6} {:>13} {:>11} {:>9.0f}%  {}\n".format(
                o["name"],
                o["kernel"],
                o["arch"],
                o["blocks"],
                o["warps"],
                100 * o["occupancy"],
                o["limit"],
            )
        )
    return out.getvalue()


def write_csv(path, report):
    buf = io.StringIO()
    fields = [
        "kernel",
        "arch",
        "registers",
        "smem_bytes",
        "stack_bytes",
        "spill_stores",
        "spill_loads",
        "device",
        "blocks",
        "warps",
        "occupancy",
        "limit",
    ]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in report["sass"]:
        row = dict(r)
        match = [
            o for o in report["occupancy"] if (o["kernel"], o["arch"]) == (r["kernel"], r["arch"])
        ]
        if not match:
            writer.writerow(row)
        for o in match:
            row.update(
                {
                    "device": o["device"],
                    "blocks": o["blocks"],
                    "warps": o["warps"],
                    "occupancy": round(o["occupancy"], 4),
                    "limit": o["limit"],
                }
            )
            writer.writerow(row)
    write_bytes(path, buf.getvalue().encode())


# RegSeg's D blocks at 1/16 of a 1024x2048 Cityscapes frame: 256 channels, 64 x 128.
ROOFLINE_SHAPE = (1, 256, 64, 128)


def roofline(shape=ROOFLINE_SHAPE, targets=TARGETS):
    """Lower bound on one launch per device and I/O precision: max(FLOPs / peak, bytes / bandwidth).

    The kernel multiplies and adds in FP32 on CUDA cores in both modes (FP16 changes only the
    bytes moved), so the compute bound uses each device's FP32 peak. Bytes: X read once, Y written
    once, W and B read once; the dilated re-reads of X are assumed to hit in the caches.
    """
    n, c, h, w = shape
    pixels = n * h * w
    flops = 2 * pixels * c * 16 * 9
    values = 2 * pixels * c + c * 16 * 9 + c
    rows = []
    for key in targets:
        record = devices.get(key)
        peak = record.peak("fp32")
        for precision, size in (("fp32", 4), ("fp16", 2)):
            nbytes = values * size
            compute_us = flops / (peak * 1e12) * 1e6
            memory_us = nbytes / (record.bandwidth_gbs * 1e9) * 1e6
            rows.append(
                {
                    "device": key,
                    "name": record.name,
                    "precision": precision,
                    "flops": flops,
                    "bytes": nbytes,
                    "intensity": float(flops) / nbytes,
                    "ridge": peak * 1e3 / record.bandwidth_gbs,
                    "compute_us": compute_us,
                    "memory_us": memory_us,
                    "floor_us": max(compute_us, memory_us),
                    "bound": "compute" if compute_us >= memory_us else "memory",
                }
            )
    return rows


_ROOFLINE_ROW = (
    "{:<20} {:<5} {:>8.3f} {:>8.2f} {:>10.1f} {:>7.1f} {:>11.1f} {:>10.1f} {:>9.1f}  {}\n"
)


def format_roofline(rows, shape=ROOFLINE_SHAPE):
    out = io.StringIO()
    out.write(
        "\nRoofline of one launch at {} (N x C x H x W), FP32 arithmetic:\n".format(
            " x ".join(str(v) for v in shape)
        )
    )
    out.write(
        "{:<20} {:<5} {:>8} {:>8} {:>10} {:>7} {:>11} {:>10} {:>9}  {}\n".format(
            "device",
            "I/O",
            "GFLOP",
            "MB",
            "FLOP/B",
            "ridge",
            "compute us",
            "memory us",
            "floor us",
            "bound",
        )
    )
    for r in rows:
        out.write(
            _ROOFLINE_ROW.format(
                r["name"],
                r["precision"],
                r["flops"] / 1e9,
                r["bytes"] / 1e6,
                r["intensity"],
                r["ridge"],
                r["compute_us"],
                r["memory_us"],
                r["floor_us"],
                r["bound"],
            )
        )
    return out.getvalue()


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
    root = _wheel_dir("cuda_nvcc")
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
            "message": "" if ok else _first_error(text),
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


def _arch_list(text):
    try:
        return tuple(int(a) for a in text.split(",") if a.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected comma-separated architectures like 61,75, got {!r}".format(text)
        ) from None


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m segdeploy.plugins.dblock.compile_check",
        description="Compile the fused D-block kernel with NVRTC and ptxas (no GPU needed) and "
        "print registers, shared memory, spills and occupancy per architecture.",
    )
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    parser.add_argument(
        "--ptx-archs",
        type=_arch_list,
        default=PTX_ARCHS,
        metavar="LIST",
        help="virtual architectures for NVRTC (default: %(default)s)",
    )
    parser.add_argument(
        "--sass-archs",
        type=_arch_list,
        default=SASS_ARCHS,
        metavar="LIST",
        help="real architectures for ptxas (default: %(default)s)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")
    parser.add_argument("--csv", metavar="PATH", help="write the per-kernel table as CSV")
    parser.add_argument("--keep-dir", metavar="DIR", help="keep the PTX and cubins in DIR")
    parser.add_argument(
        "--trt-include",
        metavar="DIR",
        action="append",
        default=[],
        help="also compile the TensorRT plugin against the TensorRT headers in DIR "
        "(the directory with NvInfer.h; repeat for several releases)",
    )
    args = parser.parse_args(argv)

    def body():
        if args.keep_dir:
            from ..._io import check_writable_dir

            check_writable_dir(args.keep_dir)
        report = run(args.ptx_archs, args.sass_archs, keep_dir=args.keep_dir)
        sys.stdout.write(format_report(report))
        report["roofline"] = roofline()
        sys.stdout.write(format_roofline(report["roofline"]))
        if args.trt_include:
            report["plugin"] = [compile_plugin(d) for d in args.trt_include]
            sys.stdout.write(format_plugin_table(report["plugin"]))
        if args.json:
            write_json(args.json, report)
        if args.csv:
            write_csv(args.csv, report)
        if spills(report):
            sys.stderr.write(
                "{}: error: the kernel spills registers (see the table)\n".format(parser.prog)
            )
            return 1

    return run_main(parser.prog, body, "nothing written")


if __name__ == "__main__":
    sys.exit(main())
