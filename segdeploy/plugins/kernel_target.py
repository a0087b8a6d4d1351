"""What a GPU check compiles a kernel to, given the driver, the NVRTC and the GPU (any kernel:
the D block's gpu_check uses it; the choice does not depend on the source).

PTX is JIT-compiled by the driver, which refuses a PTX ISA newer than it knows: NVRTC 12.9 writes
``.version 8.8``, which only R575+ drivers (CUDA 12.9) read, so the PTX of the pinned
nvidia-cuda-nvrtc-cu12 fails on the R525-R570 drivers the runbook supports and on a TX2 (CUDA
10.2). The choice, in order:

1. PTX for ``compute_XX`` when the driver reads the NVRTC's PTX ISA (driver CUDA >= NVRTC CUDA);
2. a cubin for ``sm_XX`` (``nvrtcGetCUBIN``, NVRTC 11.1+) when the driver is older but of the same
   CUDA major: CUDA's minor-version compatibility loads such binaries, no JIT involved;
3. nothing, with the one-line reason and what to install (an NVRTC no newer than the driver:
   JetPack's ``/usr/local/cuda``, or ``SEGDEPLOY_NVRTC``).

``choose_nvrtc`` applies this to every NVRTC found (``$SEGDEPLOY_NVRTC``, the pip wheel, the CUDA
toolkit), so a TX2 or an old driver falls back to the toolkit's NVRTC by itself. NVRTC 13 dropped
sm_50-sm_72 (Pascal, Volta, the TX2 and Xavier): there only the toolkit's NVRTC can serve.
Python 3.6 compatible.
"""

import ctypes
import glob
import os
import re
from collections import namedtuple

from ..errors import MissingDependencyError
from .cuda_toolchain import (
    CUDA_HOME,
    CompileError,
    Nvrtc,
    find_cuda_include,
    first_error,
    wheel_dir,
)

# CUDA release -> the PTX ISA its compiler writes and its driver reads (PTX ISA docs, "Release
# History"). A driver reads the ISA of its own CUDA release and older.
PTX_ISA = (
    ((10, 0), (6, 3)),
    ((10, 1), (6, 4)),
    ((10, 2), (6, 5)),
    ((11, 0), (7, 0)),
    ((11, 1), (7, 1)),
    ((11, 2), (7, 2)),
    ((11, 3), (7, 3)),
    ((11, 4), (7, 4)),
    ((11, 5), (7, 5)),
    ((11, 6), (7, 6)),
    ((11, 7), (7, 7)),
    ((11, 8), (7, 8)),
    ((12, 0), (8, 0)),
    ((12, 1), (8, 1)),
    ((12, 2), (8, 2)),
    ((12, 3), (8, 3)),
    ((12, 4), (8, 4)),
    ((12, 5), (8, 5)),
    ((12, 6), (8, 5)),
    ((12, 8), (8, 7)),
    ((12, 9), (8, 8)),
    ((13, 0), (9, 0)),
)
# The oldest real architecture each NVRTC major still compiles for (CUDA 12: sm_50; CUDA 13
# removed Maxwell, Pascal and Volta: sm_75).
OLDEST_SM = {10: (3, 0), 11: (3, 5), 12: (5, 0), 13: (7, 5)}
CUBIN_SINCE = (11, 1)  # nvrtcGetCUBIN

Target = namedtuple("Target", ["kind", "option", "reason"])
Target.__doc__ = """kind: 'ptx', 'cubin' or None (cannot); option: NVRTC's --gpu-architecture
flag; reason: one line saying why this form (or why none)."""


def cuda_version(value):
    """12020 (cuDriverGetVersion) or '12.2' -> (12, 2)."""
    if isinstance(value, int):
        return value // 1000, (value % 1000) // 10
    major, minor = str(value).split(".")[:2]
    return int(major), int(minor)


def _text(version):
    return "{}.{}".format(*version)


def ptx_isa_of(cuda):
    """The PTX ISA a CUDA release writes/reads: the newest entry of PTX_ISA not after it."""
    cuda = tuple(cuda)
    known = [isa for release, isa in PTX_ISA if release <= cuda]
    return known[-1] if known else None


def ptx_version(ptx):
    """``.version 8.8`` in PTX text -> (8, 8); None when the line is missing."""
    match = re.search(r"^\s*\.version\s+(\d+)\.(\d+)", ptx, re.M)
    return (int(match.group(1)), int(match.group(2))) if match else None


def choose(driver_cuda, nvrtc_cuda, compute_capability):
    """The Target for a driver of ``driver_cuda`` and an NVRTC of ``nvrtc_cuda`` ((major, minor)
    each) on a GPU of ``compute_capability``."""
    driver, nvrtc, cc = tuple(driver_cuda), tuple(nvrtc_cuda), tuple(compute_capability)
    arch = "{}{}".format(*cc)
    oldest = OLDEST_SM.get(nvrtc[0])
    if oldest is not None and cc < oldest:
        return Target(
            None,
            None,
            "NVRTC {} cannot compile for sm_{} (its oldest is sm_{}{}); use the CUDA toolkit's "
            "NVRTC of the device (JetPack: SEGDEPLOY_NVRTC=/usr/local/cuda/lib64/libnvrtc.so)"
            "".format(_text(nvrtc), arch, *oldest),
        )
    # An NVRTC newer than the table writes an ISA the table cannot name: compare releases only.
    isa = ptx_isa_of(nvrtc) if nvrtc <= PTX_ISA[-1][0] else None
    readable = ptx_isa_of(driver)
    if driver >= nvrtc or (isa and readable and readable >= isa):
        return Target(
            "ptx",
            "--gpu-architecture=compute_" + arch,
            "PTX for compute_{}: the driver (CUDA {}) reads NVRTC {}'s PTX ISA {}".format(
                arch, _text(driver), _text(nvrtc), _text(isa) if isa else "?"
            ),
        )
    if driver[0] == nvrtc[0] and nvrtc >= CUBIN_SINCE:
        return Target(
            "cubin",
            "--gpu-architecture=sm_" + arch,
            "cubin for sm_{}: the driver (CUDA {}) cannot JIT NVRTC {}'s PTX ISA {}, and loads "
            "a same-major binary (CUDA minor-version compatibility)".format(
                arch, _text(driver), _text(nvrtc), _text(isa) if isa else "?"
            ),
        )
    return Target(
        None,
        None,
        "the driver (CUDA {}) can load neither NVRTC {}'s PTX (ISA {}) nor its binaries (another "
        "CUDA major); use an NVRTC no newer than CUDA {}: SEGDEPLOY_NVRTC=<toolkit>/lib64/"
        "libnvrtc.so (JetPack: /usr/local/cuda), or update the driver".format(
            _text(driver), _text(nvrtc), _text(isa) if isa else "?", _text(driver)
        ),
    )


def nvrtc_candidates():
    """[(libnvrtc path, cuda include dir or None)] in the order tried: $SEGDEPLOY_NVRTC alone when
    set; else the pip wheels' (CUDA 12, then 13), then the CUDA toolkit's (each with its own
    cuda_fp16.h where it has one)."""
    named = os.environ.get("SEGDEPLOY_NVRTC")
    if named:
        return [(named, os.environ.get("SEGDEPLOY_CUDA_INCLUDE"))]
    found = []
    # CUDA 12 wheels: nvidia/cuda_nvrtc/lib (headers in nvidia/cuda_runtime/include); CUDA 13
    # wheels: nvidia/cu13/lib and nvidia/cu13/include.
    for lib_dir, include_dir in (("cuda_nvrtc", "cuda_runtime"), ("cu13", "cu13")):
        root = wheel_dir(lib_dir)
        wheel = sorted(glob.glob(os.path.join(root, "lib", "libnvrtc.so*"))) if root else []
        if wheel:
            headers = wheel_dir(include_dir)
            include = os.path.join(headers, "include") if headers else None
            if include and not os.path.isfile(os.path.join(include, "cuda_fp16.h")):
                include = None  # the toolkit's headers then (find_cuda_include)
            found.append((wheel[0], include))
    home = CUDA_HOME
    toolkit = sorted(glob.glob(os.path.join(home, "lib64", "libnvrtc.so*")))
    if toolkit:
        found.append((toolkit[0], os.path.join(home, "include")))
    return found


def choose_nvrtc(candidates, driver_cuda, compute_capability):
    """(index into ``candidates`` or None, Target, notes): the first NVRTC whose output this
    driver loads. ``candidates`` are (name, (major, minor)) pairs; notes say why each earlier
    one was passed over."""
    notes = []
    last = None
    for index, (name, version) in enumerate(candidates):
        target = choose(driver_cuda, version, compute_capability)
        if target.kind is not None:
            return index, target, notes
        notes.append("{}: {}".format(name, target.reason))
        last = target
    if last is None:
        raise MissingDependencyError(
            "NVRTC is not installed; install it with: pip install nvidia-cuda-nvrtc-cu12 "
            "(or use the CUDA toolkit's, SEGDEPLOY_NVRTC=/usr/local/cuda/lib64/libnvrtc.so)"
        )
    return None, last, notes


def compile_cubin(nvrtc, source, name, headers, options):
    """A cubin (bytes) of ``source`` from an opened ``cuda_toolchain.Nvrtc``; the PTX route is
    ``Nvrtc.compile``. Raises CompileError."""
    lib = nvrtc.lib
    if not hasattr(lib, "nvrtcGetCUBIN"):
        raise CompileError("this NVRTC has no nvrtcGetCUBIN (it needs CUDA 11.1+)")
    prog = ctypes.c_void_p()
    names = list(headers)
    hdr = (ctypes.c_char_p * len(names))(*[headers[n].encode() for n in names])
    inc = (ctypes.c_char_p * len(names))(*[n.encode() for n in names])
    nvrtc._check(
        lib.nvrtcCreateProgram(
            ctypes.byref(prog), source.encode(), name.encode(), len(names), hdr, inc
        ),
        "create program",
    )
    try:
        opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        code = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        if code != 0:
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise CompileError(
                "NVRTC could not compile {} ({}): {}".format(
                    name, " ".join(options), first_error(log.value.decode("utf-8", "replace"))
                )
            )
        nvrtc._check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "cubin size")
        cubin = ctypes.create_string_buffer(size.value)
        nvrtc._check(lib.nvrtcGetCUBIN(prog, cubin), "cubin")
        return cubin.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def build_image(driver_cuda, compute_capability, source, name, headers, options, candidates=None):
    """(module image bytes for cuModuleLoadData, report dict): ``source`` (called ``name``, with
    ``headers`` {include name: text}) compiled for this driver and GPU; ``options`` are NVRTC's
    other flags (the architecture and cuda_fp16.h's folder are added here)."""
    candidates = nvrtc_candidates() if candidates is None else candidates
    opened, versions = [], []
    for path, include in candidates:
        try:
            nvrtc = Nvrtc(path)
            versions.append((path, cuda_version(nvrtc.version())))
            opened.append((nvrtc, include))
        except MissingDependencyError:
            continue
    index, target, notes = choose_nvrtc(versions, cuda_version(driver_cuda), compute_capability)
    if index is None:
        raise MissingDependencyError(target.reason)
    nvrtc, include = opened[index]
    include = include if include and os.path.isdir(include) else find_cuda_include()
    options = [target.option, "-I" + include] + list(options)
    if target.kind == "ptx":
        text = nvrtc.compile(source, name, headers, options)
        image = text.encode() + b"\0"
        isa = ptx_version(text)
    else:
        image = compile_cubin(nvrtc, source, name, headers, options)
        isa = None
    return image, {
        "form": target.kind,
        "option": target.option,
        "reason": target.reason,
        "nvrtc": versions[index][0],
        "nvrtc_cuda": _text(versions[index][1]),
        "driver_cuda": _text(cuda_version(driver_cuda)),
        "ptx_isa": _text(isa) if isa else None,
        "passed_over": notes,
    }
