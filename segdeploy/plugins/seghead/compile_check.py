"""Compilation proofs of the fused head: NVRTC to PTX, ptxas to SASS, spills, the plugin's headers.

    python -m segdeploy.plugins.seghead.compile_check [--trt-include DIR ...] [--json out.json]

The same tool chain as the D block's (``segdeploy.plugins.dblock.compile_check``, whose NVRTC and
ptxas helpers are used): NVRTC from ``nvidia-cuda-nvrtc-cu12`` compiles ``seghead_kernel.cu`` to
PTX, ptxas from ``nvidia-cuda-nvcc-cu12`` assembles it for sm_61 (GTX 1080 Ti), sm_62 (Jetson
TX2), sm_75 (T4), sm_86 and sm_87 (Jetson Orin) with ``-v``: registers, shared memory, stack and
spills per kernel, and the occupancy they allow on the target devices. ``--trt-include`` compiles
``seghead_plugin.cpp`` against TensorRT's headers: the IPluginV2DynamicExt form below 10, the
IPluginV3 form from 10 on. No GPU is needed. Python 3.6 compatible.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

from ..._cli import run_main
from ..._io import write_json
from ..._version import __version__
from ...engines import devices
from ...errors import MissingDependencyError
from ..dblock import compile_check as base
from . import roofline

HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL = "seghead_kernel.cu"
HEADERS = ("seghead_common.cuh",)
KERNELS = ("seghead_f16_i32", "seghead_f16_u8", "seghead_f32_i32", "seghead_f32_u8")
THREADS_PER_BLOCK = 256  # seghead_kernel.cu: 32 x kTileH
SHARED_BYTES = 4096  # kRegion int16 source labels
ARCHS = (61, 62, 75, 86, 87)
TARGETS = ("gtx1080ti", "jetson-tx2", "t4", "jetson-orin")
NVRTC_OPTIONS = ("--std=c++11",)
PLUGIN_SOURCE = "seghead_plugin.cpp"

CompileError = base.CompileError


def read_sources():
    with open(os.path.join(HERE, KERNEL), "r") as f:
        source = f.read()
    headers = {}
    for name in HEADERS:
        with open(os.path.join(HERE, name), "r") as f:
            headers[name] = f.read()
    return source, headers


def run(archs=ARCHS):
    """NVRTC + ptxas for every architecture in ``archs``; return the report (JSON-ready)."""
    nvrtc = base.Nvrtc()
    include = base.find_cuda_include()
    ptxas = base.find_ptxas()
    source, headers = read_sources()
    report = {
        "kernel": KERNEL,
        "threads_per_block": THREADS_PER_BLOCK,
        "nvrtc": nvrtc.version(),
        "ptxas": base.ptxas_version(ptxas),
        "nvrtc_options": list(NVRTC_OPTIONS),
        "ptx": [],
        "sass": [],
        "occupancy": [],
    }
    for arch in archs:
        options = ["--gpu-architecture=compute_{}".format(arch), "-I" + include]
        ptx = nvrtc.compile(source, KERNEL, headers, options + list(NVRTC_OPTIONS))
        entries = sorted(set(re.findall(r"\.entry\s+(\w+)", ptx)))
        missing = sorted(set(KERNELS) - set(entries))
        if missing:
            raise CompileError("the PTX for compute_{} lacks {}".format(arch, ", ".join(missing)))
        report["ptx"].append(
            {"arch": "compute_{}".format(arch), "bytes": len(ptx), "entries": entries}
        )
        resources, cubin = base.ptxas_assemble(ptx, arch, ptxas)
        for name in KERNELS:
            info = dict(resources[name])
            info["kernel"] = name
            info["arch"] = "sm_{}".format(arch)
            info["cubin_bytes"] = len(cubin)
            report["sass"].append(info)
    for key in TARGETS:
        record = devices.get(key)
        cc = record.compute_capability
        for row in report["sass"]:
            if row["arch"] != "sm_{}{}".format(*cc):
                continue
            occ = devices.occupancy(cc, THREADS_PER_BLOCK, row["registers"], row["smem_bytes"])
            occ.update(
                {"device": key, "name": record.name, "kernel": row["kernel"], "arch": row["arch"]}
            )
            report["occupancy"].append(occ)
    return report


def nvcc_check(arch, nvcc=None):
    """Compile the whole kernel file (with its launcher) with a CUDA toolkit's nvcc for sm_XX;
    return ptxas' resources per kernel. MissingDependencyError without nvcc."""
    nvcc = nvcc or os.environ.get("CUDACXX") or shutil.which("nvcc")
    if not nvcc:
        raise MissingDependencyError("no nvcc on PATH (a CUDA toolkit); set CUDACXX to its path")
    tmp = tempfile.mkdtemp(prefix="seghead-nvcc-")
    try:
        cmd = [
            nvcc,
            "-std=c++11",
            "-arch=sm_{}".format(arch),
            "-Xptxas",
            "-v",
            "-I",
            HERE,
            "-c",
            os.path.join(HERE, KERNEL),
            "-o",
            os.path.join(tmp, "k.o"),
        ]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        text = proc.stdout.decode("utf-8", "replace")
        if proc.returncode != 0:
            raise CompileError(
                "nvcc could not compile {} for sm_{}: {}".format(
                    KERNEL, arch, base._first_error(text)
                )
            )
        return base.parse_ptxas_report(text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def spills(report):
    """Total spill bytes (stores + loads) over every kernel and architecture."""
    return sum(r["spill_stores"] + r["spill_loads"] for r in report["sass"])


def interface_for(version):
    """The plugin interface compiled for TensorRT ``version`` ('8.6.1' -> IPluginV2DynamicExt)."""
    major = int(version.split(".")[0])
    return "IPluginV3" if major >= 10 else "IPluginV2DynamicExt"


def compile_plugin(include_dir, cxx=None):
    """Compile seghead_plugin.cpp to an object against one TensorRT include directory.

    Returns {'tensorrt', 'interface', 'include', 'ok', 'object_bytes', 'warnings', 'message'};
    warnings count the diagnostics in the plugin's own source (TensorRT's are system headers).
    """
    cxx = cxx or os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        raise MissingDependencyError("no C++ compiler found; install g++ or set CXX")
    version = base.tensorrt_version(include_dir)
    tmp = tempfile.mkdtemp(prefix="seghead-plugin-")
    try:
        obj = os.path.join(tmp, "seghead_plugin.o")
        cmd = [
            cxx,
            "-std=c++14",
            "-O2",
            "-fPIC",
            "-Wall",
            "-Wextra",
            "-Wno-deprecated-declarations",
        ]
        cmd += ["-isystem", include_dir]
        for inc in base.cuda_host_includes():
            cmd += ["-isystem", inc]
        cmd += ["-I", HERE, "-c", os.path.join(HERE, PLUGIN_SOURCE), "-o", obj]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        text = proc.stdout.decode("utf-8", "replace")
        ok = proc.returncode == 0
        symbols = ""
        if ok and shutil.which("nm"):
            symbols = subprocess.run(
                ["nm", "-C", obj], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            ).stdout.decode("utf-8", "replace")
        return {
            "tensorrt": version,
            "interface": interface_for(version),
            "include": include_dir,
            "ok": ok,
            "object_bytes": os.path.getsize(obj) if ok else 0,
            "warnings": len(re.findall(PLUGIN_SOURCE + r":\d+:\d+: warning", text)),
            "message": "" if ok else base._first_error(text),
            "symbols": symbols,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def format_report(report):
    lines = [
        "SegHead kernel {}: NVRTC {}, ptxas {}, {} threads per block".format(
            report["kernel"], report["nvrtc"], report["ptxas"], report["threads_per_block"]
        ),
        "PTX (NVRTC): {}".format(", ".join("{} ok".format(p["arch"]) for p in report["ptx"])),
        "",
        "{:<16} {:<6} {:>5} {:>7} {:>6} {:>11} {:>11}".format(
            "kernel", "arch", "regs", "smem B", "stack", "spill st B", "spill ld B"
        ),
    ]
    for r in report["sass"]:
        lines.append(
            "{:<16} {:<6} {:>5} {:>7} {:>6} {:>11} {:>11}".format(
                r["kernel"],
                r["arch"],
                r["registers"],
                r["smem_bytes"],
                r["stack_bytes"],
                r["spill_stores"],
                r["spill_loads"],
            )
        )
    lines += [
        "",
        "{:<20} {:<16} {:<6} {:>9} {:>9}  {}".format(
            "device", "kernel", "arch", "blocks/SM", "occupancy", "limited by"
        ),
    ]
    for o in report["occupancy"]:
        lines.append(
            "{:<20} {:<16} {:<6} {:>9} {:>8.0f}%  {}".format(
                o["name"], o["kernel"], o["arch"], o["blocks"], 100 * o["occupancy"], o["limit"]
            )
        )
    return "\n".join(lines) + "\n"


def format_plugin_table(rows):
    lines = [
        "",
        "{:<10} {:<20} {:<7} {:>9} {:>8}  {}".format(
            "TensorRT", "interface", "result", "object B", "warnings", "headers"
        ),
    ]
    for r in rows:
        lines.append(
            "{:<10} {:<20} {:<7} {:>9} {:>8}  {}".format(
                r["tensorrt"],
                r["interface"],
                "ok" if r["ok"] else "FAILED",
                r["object_bytes"],
                r["warnings"],
                r["include"] if r["ok"] else r["message"],
            )
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m segdeploy.plugins.seghead.compile_check",
        description="Compile the fused head kernel with NVRTC and ptxas (no GPU needed): "
        "registers, spills and occupancy per architecture; optionally the TensorRT plugin "
        "against headers.",
    )
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    parser.add_argument(
        "--archs",
        type=base._arch_list,
        default=ARCHS,
        metavar="LIST",
        help="architectures (default: %(default)s)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")
    parser.add_argument(
        "--trt-include",
        metavar="DIR",
        action="append",
        default=[],
        help="also compile the TensorRT plugin against the TensorRT headers in DIR (the directory "
        "with NvInfer.h; repeat for several releases)",
    )
    args = parser.parse_args(argv)

    def body():
        report = run(args.archs)
        sys.stdout.write(format_report(report))
        rows = roofline.estimate(keys=TARGETS)
        report["roofline"] = rows
        sys.stdout.write("\n" + roofline.format_estimate(rows))
        if args.trt_include:
            report["plugin"] = [compile_plugin(d) for d in args.trt_include]
            sys.stdout.write(format_plugin_table(report["plugin"]))
            for row in report["plugin"]:
                row.pop("symbols", None)
        if args.json:
            write_json(args.json, report)
        failed = [r for r in report.get("plugin", ()) if not r["ok"]]
        if spills(report) or failed:
            sys.stderr.write(
                "{}: error: {}\n".format(
                    parser.prog,
                    "the kernel spills registers"
                    if spills(report)
                    else "the plugin failed to compile against TensorRT " + failed[0]["tensorrt"],
                )
            )
            return 1

    return run_main(parser.prog, body, "nothing written")


if __name__ == "__main__":
    sys.exit(main())
