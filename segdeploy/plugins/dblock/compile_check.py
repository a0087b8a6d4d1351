"""Compilation proofs of the D-block kernel: NVRTC to PTX, ptxas to SASS, resources, occupancy.

    python -m segdeploy.plugins.dblock.compile_check [--json out.json] [--csv out.csv]

NVRTC (pip ``nvidia-cuda-nvrtc-cu12``, loaded with ctypes from the wheel's lib directory, with
``cuda_fp16.h`` from ``nvidia-cuda-runtime-cu12``) compiles ``dblock_kernel.cu`` to PTX for each
virtual architecture in ``PTX_ARCHS``; ptxas (pip ``nvidia-cuda-nvcc-cu12``) assembles the PTX for
each real architecture in ``SASS_ARCHS`` with ``-v``, whose report gives registers, shared memory,
stack and spills per kernel. The occupancy each implies on the target devices (T4, GTX 1080 Ti,
Jetson TX2, Jetson Orin) comes from ``segdeploy.engines.devices.occupancy``. No GPU is needed.

The wheels' locations can be overridden with ``SEGDEPLOY_NVRTC`` (path of libnvrtc.so),
``SEGDEPLOY_CUDA_INCLUDE`` (a directory with cuda_fp16.h) and ``SEGDEPLOY_PTXAS``.
Python 3.6 compatible.
"""

import argparse
import csv
import io
import os
import re
import sys

from ..._cli import run_main
from ..._io import write_bytes, write_json
from ..._version import __version__
from ...engines import devices
from ..cuda_toolchain import (  # noqa: F401  (the check's toolchain, as callers knew it)
    CompileError,
    Nvrtc,
    find_cuda_include,
    find_nvrtc,
    find_ptxas,
    parse_ptxas_report,
    ptxas_assemble,
    ptxas_version,
)
from .plugin_compile import (  # noqa: F401
    PLUGIN_SOURCE,
    compile_plugin,
    cuda_host_includes,
    format_plugin_table,
    tensorrt_version,
)

HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL = "dblock_kernel.cu"
HEADERS = ("dblock_common.cuh",)
KERNELS = ("dblock_conv_f32", "dblock_conv_f16")
THREADS_PER_BLOCK = 128  # dblock_kernel.cu: 32 x kBlockRows
# sm_87: Jetson Orin (JetPack 5/6).
PTX_ARCHS = (61, 62, 75, 86, 87, 89, 90)
SASS_ARCHS = (61, 62, 75, 86, 87)
# Target device -> its architecture (devices.TABLE has the compute capability).
TARGETS = ("t4", "gtx1080ti", "jetson-tx2", "jetson-orin")
# The oldest toolkit of the targets is CUDA 10.2 (JetPack 4.6, TX2): C++11 keeps the source in
# the language every target's nvcc accepts.
NVRTC_OPTIONS = ("--std=c++11",)


def read_sources():
    with open(os.path.join(HERE, KERNEL), "r") as f:
        source = f.read()
    headers = {}
    for name in HEADERS:
        with open(os.path.join(HERE, name), "r") as f:
            headers[name] = f.read()
    return source, headers


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
