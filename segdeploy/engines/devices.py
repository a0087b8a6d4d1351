"""The table of devices segdeploy targets, detection of the one present, and precision advice.

    from segdeploy.engines import devices
    t4 = devices.get("t4")
    t4.compute_capability, t4.peak_tflops["fp16"], t4.bandwidth_gbs
    devices.check_precision(devices.get("gtx1080ti"), "fp16")   # -> [warning]

Peak figures are *dense* (no structured sparsity) vendor figures, in TFLOPS (FP32/FP16) and TOPS
(INT8); FP16/INT8 on tensor-core parts are tensor-core figures because that is what TensorRT uses.
Bandwidth in GB/s (10^9), memory in GiB as marketed. The source of each figure is the comment on
its record. The bench divides multiply-adds by these peaks to report a device's floor, so a figure
we do not know is ``None`` (never a guess) and the bench falls back to a measured peak.

Python 3.6 compatible; imports nothing heavy (CUDA is queried only through ``detect``).
"""

import os
import re
from collections import namedtuple

from ..errors import EngineError, SegDeployError

_Device = namedtuple(
    "_Device",
    [
        "key",
        "name",
        "compute_capability",
        "fast_fp16",
        "int8",
        "peak_tflops",
        "bandwidth_gbs",
        "memory_gib",
        "max_tensorrt",
        "jetson",
    ],
)


class Device(_Device):
    """One row of the table. ``peak_tflops`` maps 'fp32' / 'fp16' / 'int8' to a float or None.

    ``max_tensorrt`` is the newest TensorRT release that runs on it ("8.2", "8.6"), or None when
    current releases still do; ``int8`` is None where the question does not apply (host CPU).
    """

    __slots__ = ()

    def peak(self, precision):
        """Peak throughput (TFLOPS / TOPS) for ``precision``, or None when unknown."""
        return self.peak_tflops.get(precision)


def _peaks(fp32, fp16, int8):
    return {"fp32": fp32, "fp16": fp16, "int8": int8}


TABLE = {}


# fmt: off
# The table reads best one record per line; the formatter would give each field a line.
def _add(key, name, cc, fast_fp16, int8, peaks, bandwidth, memory, max_tensorrt=None,
         jetson=False):
    TABLE[key] = Device(key, name, cc, fast_fp16, int8, peaks, bandwidth, memory, max_tensorrt,
                        jetson)


# NVIDIA T4 datasheet (2019): 8.1 TFLOPS FP32, 65 TFLOPS FP16 (mixed, tensor cores), 130 TOPS
# INT8, 320 GB/s GDDR6, 16 GB. Turing sm_75 (CUDA programming guide, compute capabilities).
_add("t4", "Tesla T4", (7, 5), True, True, _peaks(8.1, 65.0, 130.0), 320.0, 16)

# GeForce GTX 1080 Ti product page: 3584 cores at 1582 MHz boost -> 11.3 TFLOPS FP32, 484 GB/s,
# 11 GB. GP102 is sm_61: FP16 arithmetic runs at 1/64 of FP32 (CUDA programming guide, table
# "throughput of native arithmetic instructions": 2 vs 128 results/clock/SM) -> 0.177 TFLOPS; INT8
# via dp4a at 4x FP32 -> 45 TOPS. TensorRT 10 needs sm_70+ (TensorRT 10.1 support matrix), so 8.6
# is its last release.
_add("gtx1080ti", "GeForce GTX 1080 Ti", (6, 1), False, True, _peaks(11.3, 0.177, 45.2), 484.0,
     11, max_tensorrt="8.6")

# Jetson TX2 module datasheet: 256 Pascal cores at 1.3 GHz -> 0.67 TFLOPS FP32, 1.33 TFLOPS FP16
# (sm_62 has 2x FP16), 59.7 GB/s LPDDR4 shared with the CPU, 8 GB. No INT8: the TensorRT support
# matrix (hardware and precision) lists INT8 "No" for compute capability 6.2. JetPack 4.6.x is
# its last release: TensorRT 8.2, CUDA 10.2, Python 3.6.
_add("jetson-tx2", "Jetson TX2", (6, 2), True, False, _peaks(0.67, 1.33, None), 59.7, 8,
     max_tensorrt="8.2", jetson=True)

# Tesla V100 SXM2 datasheet: 15.7 TFLOPS FP32, 125 TFLOPS tensor (FP16), 900 GB/s HBM2, 16/32 GB.
# INT8 by dp4a at 4x FP32 = 62.8 TOPS (no INT8 tensor cores on sm_70). Volta support was removed
# in TensorRT 10.5 (TensorRT 10.5.0 release notes), so 10.4 is its last release.
_add("v100", "Tesla V100", (7, 0), True, True, _peaks(15.7, 125.0, 62.8), 900.0, 32,
     max_tensorrt="10.4")

# A100 80GB SXM datasheet: 19.5 TFLOPS FP32, 312 TFLOPS FP16 tensor, 624 TOPS INT8 (dense),
# 2039 GB/s HBM2e, 80 GB.
_add("a100", "A100", (8, 0), True, True, _peaks(19.5, 312.0, 624.0), 2039.0, 80)

# H100 SXM5 datasheet: 67 TFLOPS FP32, 989 TFLOPS FP16 tensor, 1979 TOPS INT8 (dense; the
# datasheet's headline figures are with sparsity, twice these), 3350 GB/s HBM3, 80 GB.
_add("h100", "H100", (9, 0), True, True, _peaks(67.0, 989.0, 1979.0), 3350.0, 80)

# H200 SXM datasheet: same GH100 compute as H100 SXM (67 / 989 / 1979 dense), 4800 GB/s HBM3e,
# 141 GB.
_add("h200", "H200", (9, 0), True, True, _peaks(67.0, 989.0, 1979.0), 4800.0, 141)

# Jetson AGX Xavier module datasheet: 512 Volta cores at 1.377 GHz -> 1.41 TFLOPS FP32,
# 11 TFLOPS FP16 and 22 TOPS INT8 on the GPU's tensor cores (the 32 TOPS headline adds the
# DLAs), 136.5 GB/s LPDDR4x, 32 GB. sm_72; JetPack 5.1 (TensorRT 8.5) is its last release.
_add("jetson-xavier", "Jetson AGX Xavier", (7, 2), True, True, _peaks(1.41, 11.0, 22.0), 136.5,
     32, max_tensorrt="8.5", jetson=True)

# Jetson AGX Orin 64GB module datasheet: 2048 Ampere cores at 1.3 GHz -> 5.3 TFLOPS FP32;
# GPU 170 sparse INT8 TOPS -> 85 dense, FP16 tensor half of that -> 42.5 TFLOPS; 204.8 GB/s
# LPDDR5, 64 GB. sm_87.
_add("jetson-orin", "Jetson AGX Orin", (8, 7), True, True, _peaks(5.3, 42.5, 85.0), 204.8, 64,
     jetson=True)

# The host CPU: its peak depends on the part, so nothing is claimed; the bench measures one.
_add("cpu", "host CPU", None, False, None, _peaks(None, None, None), None, None)

ALIASES = {
    "tesla-t4": "t4", "1080ti": "gtx1080ti", "gtx-1080-ti": "gtx1080ti", "tx2": "jetson-tx2",
    "xavier": "jetson-xavier", "agx-xavier": "jetson-xavier", "orin": "jetson-orin",
    "agx-orin": "jetson-orin", "host": "cpu", "host-cpu": "cpu",
}
# fmt: on


def get(name):
    """The record for ``name`` ('t4', 'gtx1080ti', 'jetson-tx2', ...); SegDeployError if unknown."""
    key = re.sub(r"[\s_]+", "-", str(name).strip().lower())
    key = ALIASES.get(key, key)
    try:
        return TABLE[key]
    except KeyError:
        raise SegDeployError(
            "unknown device {!r}; known devices: {}".format(name, ", ".join(sorted(TABLE)))
        ) from None


def names():
    return sorted(TABLE)


# --- identifying the device present -----------------------------------------------------------

# (regex over the lower-cased CUDA device name, table key). Jetson GPUs report SoC names.
_NAME_PATTERNS = [
    (r"\bt4\b", "t4"),
    (r"gtx 1080 ti", "gtx1080ti"),
    (r"v100", "v100"),
    (r"a100", "a100"),
    (r"h100", "h100"),
    (r"h200", "h200"),
    (r"tegra x2|\btx2\b", "jetson-tx2"),
    (r"xavier", "jetson-xavier"),
    (r"orin", "jetson-orin"),
]

# L4T board ids in /etc/nv_tegra_release ("BOARD: t186ref"); JetPack 5+ may say "generic", which
# is why the compute capability is the second clue.
_TEGRA_BOARDS = {"t186": "jetson-tx2", "t194": "jetson-xavier", "t234": "jetson-orin"}
_TEGRA_CC = {(6, 2): "jetson-tx2", (7, 2): "jetson-xavier", (8, 7): "jetson-orin"}


def parse_tegra_release(text):
    """``/etc/nv_tegra_release`` -> {'l4t': '32.7.1', 'board': 't186ref'} (missing keys omitted).

    The file's first line reads ``# R32 (release), REVISION: 7.1, GCID: ..., BOARD: t186ref, ...``.
    """
    info = {}
    major = re.search(r"#\s*R(\d+)", text)
    revision = re.search(r"REVISION:\s*([\d.]+)", text)
    if major:
        info["l4t"] = major.group(1) + ("." + revision.group(1) if revision else "")
    board = re.search(r"BOARD:\s*([\w-]+)", text)
    if board:
        info["board"] = board.group(1)
    return info


def identify(gpu_name=None, compute_capability=None, tegra_release=None):
    """The table key for what was observed, or None when it is not in the table.

    ``tegra_release`` is the text of /etc/nv_tegra_release when that file exists.
    """
    if tegra_release:
        board = parse_tegra_release(tegra_release).get("board", "")
        for prefix, key in _TEGRA_BOARDS.items():
            if board.startswith(prefix):
                return key
        cc = tuple(compute_capability) if compute_capability else None
        if cc in _TEGRA_CC:
            return _TEGRA_CC[cc]
    if gpu_name:
        lowered = gpu_name.lower()
        for pattern, key in _NAME_PATTERNS:
            if re.search(pattern, lowered):
                return key
    return None


Detected = namedtuple(
    "Detected", ["key", "record", "gpu_name", "compute_capability", "memory_bytes", "l4t"]
)
Detected.__doc__ = """The device present: table key and record (None if not in the table), the
CUDA device name and compute capability as reported (None on a host without CUDA), total memory,
and the L4T release on a Jetson."""

TEGRA_RELEASE = "/etc/nv_tegra_release"


def detect(index=0, tegra_release_path=TEGRA_RELEASE):
    """What this machine runs on: CUDA device ``index`` if one is usable, else the host CPU.

    Queries CUDA through ``segdeploy.engines.cuda_memory`` (pycuda or cuda-python), which is
    imported here, on first use, and only if one of them is installed.
    """
    release = None
    if tegra_release_path and os.path.isfile(tegra_release_path):
        with open(tegra_release_path, "r") as f:
            release = f.read()
    props = None
    try:
        from . import cuda_memory

        props = cuda_memory.device_properties(index)
    except Exception:  # SegDeployError, or a binding's own error: this machine has no usable GPU
        props = None
    l4t = parse_tegra_release(release).get("l4t") if release else None
    if props is None:
        return Detected("cpu", TABLE["cpu"], None, None, None, l4t)
    key = identify(props["name"], props["compute_capability"], release)
    return Detected(
        key,
        TABLE.get(key),
        props["name"],
        props["compute_capability"],
        props.get("total_memory"),
        l4t,
    )


# --- precision decisions ------------------------------------------------------------------------

PRECISIONS = ("fp32", "fp16", "int8")


def check_precision(record, precision):
    """Warnings (list of one-line strings) for building ``precision`` for ``record``.

    Raises EngineError when the device cannot run that precision at all. ``record`` None means an
    unknown device: nothing to advise.
    """
    if precision not in PRECISIONS:
        raise SegDeployError(
            "precision must be one of {}, got {!r}".format(", ".join(PRECISIONS), precision)
        )
    if record is None or precision == "fp32":
        return []
    if record.compute_capability is None:
        raise EngineError(
            "{} cannot build a {} TensorRT engine: TensorRT needs an NVIDIA GPU; "
            "use the onnxruntime backend on this host".format(record.name, precision.upper())
        )
    if precision == "int8":
        if not record.int8:
            raise EngineError(
                "{} (compute capability {}) has no INT8 support in TensorRT; build an FP16 "
                "engine instead (segexport --fp16)".format(
                    record.name, _cc_text(record.compute_capability)
                )
            )
        return []
    warnings = []
    if not record.fast_fp16:
        ratio = _ratio(record.peak("fp32"), record.peak("fp16"))
        warnings.append(
            "{} runs FP16 at {} of its FP32 rate, so an FP16 engine will be slower than FP32; "
            "build int8 (segexport --int8 --calib DIR), its fast path, or build fp32".format(
                record.name, ratio
            )
        )
    return warnings


def recommend_precision(record, have_int8_graph=False):
    """(precision, reason): what a TensorRT engine for ``record`` should be built as.

    INT8 where FP16 is slow and INT8 (dp4a / tensor cores) is fast (the GTX 1080 Ti: FP16 at
    1/64 of FP32, INT8 at 4x); FP16 where it is fast; INT8 never where the device has none (the
    Jetson TX2), whatever was asked. ``have_int8_graph``: a budget-checked Q/DQ graph exists.
    """
    if record is None or record.compute_capability is None:
        return "fp32", "unknown device or no GPU: no precision advice"
    if not record.int8:
        return "fp16" if record.fast_fp16 else "fp32", (
            "{} has no INT8 in TensorRT (compute capability {}){}".format(
                record.name,
                _cc_text(record.compute_capability),
                "; FP16 is its fast path" if record.fast_fp16 else "",
            )
        )
    if not record.fast_fp16:
        if have_int8_graph:
            return "int8", "{} runs FP16 at {} of FP32 and INT8 at {:.0f}x FP32 TOPS".format(
                record.name,
                _ratio(record.peak("fp32"), record.peak("fp16")),
                (record.peak("int8") or 0) / (record.peak("fp32") or 1),
            )
        return "fp32", (
            "{} runs FP16 slowly; INT8 is its fast path but needs the Q/DQ graph: "
            "segexport --int8 --calib DIR".format(record.name)
        )
    if have_int8_graph:
        return "int8", "{} runs INT8 fast and the INT8 graph is within its budget".format(
            record.name
        )
    return "fp16", "{} runs FP16 fast".format(record.name)


def _ratio(fp32, fp16):
    if fp32 and fp16:
        return "1/{:.0f}".format(fp32 / fp16)
    return "a fraction"


def _cc_text(cc):
    return "{}.{}".format(cc[0], cc[1]) if cc else "unknown"


def floor_seconds(record, multiply_adds, bytes_moved=None, precision="fp32"):
    """Lower bound on one inference: max(2*MACs / peak, bytes / bandwidth), or None if unknown.

    A multiply-add is two floating-point operations, hence the factor 2 against FLOPS peaks.
    """
    peak = record.peak(precision) if record is not None else None
    bounds = []
    if peak and multiply_adds:
        bounds.append(2.0 * multiply_adds / (peak * 1e12))
    if bytes_moved and record is not None and record.bandwidth_gbs:
        bounds.append(float(bytes_moved) / (record.bandwidth_gbs * 1e9))
    return max(bounds) if bounds else None


# --- streaming-multiprocessor limits (kernel occupancy) ---------------------------------------

SMLimits = namedtuple(
    "SMLimits",
    [
        "max_threads",
        "max_blocks",
        "registers",
        "register_unit",
        "max_registers_per_thread",
        "shared_bytes",
        "shared_per_block",
        "shared_unit",
        "shared_reserved_per_block",
    ],
)
SMLimits.__doc__ = """Per-SM resources of one compute capability: resident threads and blocks,
32-bit registers (allocated per warp in units of ``register_unit``), shared memory per SM and the
most one block may use, its allocation unit and what the CUDA runtime reserves per block."""

# CUDA C++ Programming Guide, "Technical Specifications per Compute Capability" (threads, blocks,
# registers and shared memory per SM, per block, per thread), and the CUDA occupancy calculator
# (allocation units: registers per warp in units of 256, shared memory in units of 256 bytes on
# 6.x and 7.5, 128 bytes on 8.x/9.0; 1 KB reserved per block by the runtime from 8.0 on). 7.5's
# 64 KB is the largest carveout (Turing splits 96 KB of L1 + shared memory as 32 or 64 KB).
# fmt: off
SM_LIMITS = {
    (6, 1): SMLimits(2048, 32, 65536, 256, 255, 98304, 49152, 256, 0),
    (6, 2): SMLimits(2048, 32, 65536, 256, 255, 65536, 49152, 256, 0),
    (7, 0): SMLimits(2048, 32, 65536, 256, 255, 98304, 98304, 256, 0),
    (7, 2): SMLimits(2048, 32, 65536, 256, 255, 98304, 98304, 256, 0),
    (7, 5): SMLimits(1024, 16, 65536, 256, 255, 65536, 65536, 256, 0),
    (8, 0): SMLimits(2048, 32, 65536, 256, 255, 167936, 166912, 128, 1024),
    (8, 6): SMLimits(1536, 16, 65536, 256, 255, 102400, 101376, 128, 1024),
    (8, 7): SMLimits(1536, 16, 65536, 256, 255, 167936, 166912, 128, 1024),
    (8, 9): SMLimits(1536, 24, 65536, 256, 255, 102400, 101376, 128, 1024),
    (9, 0): SMLimits(2048, 32, 65536, 256, 255, 233472, 232448, 128, 1024),
}
# Streaming multiprocessors per device: T4 40 (Turing TU104 in the T4 datasheet / whitepaper:
# 2560 cores / 64), GTX 1080 Ti 28 (GP102: 3584 cores / 128), Jetson TX2 2 (256 cores / 128),
# V100 80, A100 108, H100 SXM 132, H200 132, AGX Xavier 8, AGX Orin 16 (vendor datasheets).
SM_COUNT = {"t4": 40, "gtx1080ti": 28, "jetson-tx2": 2, "v100": 80, "a100": 108, "h100": 132,
            "h200": 132, "jetson-xavier": 8, "jetson-orin": 16}
# fmt: on


def _round_up(value, unit):
    return -(-value // unit) * unit


def occupancy(compute_capability, threads_per_block, registers_per_thread, shared_per_block):
    """Resident blocks per SM and occupancy (active warps / max warps) for one kernel launch.

    Returns a dict with ``blocks``, ``warps``, ``occupancy`` (0..1) and ``limit`` (what bounds it:
    'registers', 'shared memory', 'threads' or 'blocks'). SegDeployError for a compute capability
    that is not in ``SM_LIMITS`` or a kernel that cannot launch there at all.
    """
    cc = tuple(compute_capability)
    if cc not in SM_LIMITS:
        raise SegDeployError(
            "no SM limits for compute capability {}; known: {}".format(
                _cc_text(cc), ", ".join(_cc_text(k) for k in sorted(SM_LIMITS))
            )
        )
    sm = SM_LIMITS[cc]
    warps_per_block = _round_up(threads_per_block, 32) // 32
    max_warps = sm.max_threads // 32
    if registers_per_thread > sm.max_registers_per_thread or (
        shared_per_block > sm.shared_per_block
    ):
        raise SegDeployError(
            "a block of {} threads with {} registers each and {} bytes of shared memory cannot "
            "launch on compute capability {}".format(
                threads_per_block, registers_per_thread, shared_per_block, _cc_text(cc)
            )
        )
    limits = {
        "threads": max_warps // warps_per_block,
        "blocks": sm.max_blocks,
    }
    if registers_per_thread:
        per_warp = _round_up(registers_per_thread * 32, sm.register_unit)
        limits["registers"] = (sm.registers // per_warp) // warps_per_block
    if shared_per_block:
        per_block = _round_up(shared_per_block + sm.shared_reserved_per_block, sm.shared_unit)
        limits["shared memory"] = sm.shared_bytes // per_block
    limit = min(limits, key=lambda k: (limits[k], k))
    blocks = limits[limit]
    return {
        "blocks": blocks,
        "warps": blocks * warps_per_block,
        "occupancy": float(blocks * warps_per_block) / max_warps,
        "limit": limit,
    }


# --- host memory the GPU shares ----------------------------------------------------------------

# On a Jetson the CPU and the GPU share one DRAM. Page-locked ("pinned") host memory is mapped
# uncached for the CPU where the SoC has no I/O coherency, so that the GPU sees the CPU's writes
# without cache maintenance: on a TX2 (sm_62) every CPU read of a pinned output buffer goes to
# DRAM. Xavier (sm_72) and Orin (sm_87) are I/O coherent: the CPU caches pinned memory there
# (NVIDIA, "CUDA for Tegra", memory types table: pinned memory is cached on the CPU only on
# I/O-coherent devices). On a discrete GPU pinned memory is ordinary cached host DRAM.
IO_COHERENT = {"jetson-tx2": False, "jetson-xavier": True, "jetson-orin": True}


def pinned_memory_cached(record):
    """Does the CPU cache page-locked host memory on ``record``? False only on a Jetson without
    I/O coherency (the TX2) or a Jetson the table does not know (the safe assumption)."""
    if record is None or not record.jetson:
        return True
    return IO_COHERENT.get(record.key, False)


def copy_outputs_from_pinned(record):
    """(copy, reason): should an engine copy its outputs out of the page-locked buffers once,
    into pageable (cached) memory, before post-processing reads them pixel by pixel?"""
    if pinned_memory_cached(record):
        return False, "{}: the CPU caches pinned memory; outputs are read in place".format(
            record.name if record is not None else "unknown device"
        )
    return True, (
        "{} has no I/O coherency: pinned memory is uncached for the CPU, so outputs are "
        "copied once into pageable memory before post-processing".format(record.name)
    )
