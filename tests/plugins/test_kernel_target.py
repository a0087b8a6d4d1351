"""gpu_check compiles the kernel to what the driver can load (issue 22, item 9): PTX where the
driver reads the NVRTC's PTX ISA, a cubin for an older driver of the same CUDA major, the
toolkit's NVRTC where the wheel's is too new, and a one-line reason where nothing fits."""

import numpy as np
import pytest

from segdeploy.errors import MissingDependencyError
from segdeploy.plugins import kernel_target
from segdeploy.plugins.dblock import compile_check, gpu_check, host

T4, GTX1080TI, TX2, ORIN = (7, 5), (6, 1), (6, 2), (8, 7)


@pytest.mark.parametrize(
    "driver, nvrtc, cc, kind, option",
    [
        # R575+ driver with the pinned NVRTC 12.9: PTX, JIT-compiled
        (12090, "12.9", T4, "ptx", "--gpu-architecture=compute_75"),
        (13000, "12.9", T4, "ptx", "--gpu-architecture=compute_75"),
        # R535 (CUDA 12.2) refuses PTX ISA 8.8: a same-major cubin instead
        (12020, "12.9", T4, "cubin", "--gpu-architecture=sm_75"),
        (12000, "12.9", GTX1080TI, "cubin", "--gpu-architecture=sm_61"),
        # NVRTC 12.6 writes ISA 8.5, which a CUDA 12.5 driver reads
        (12050, "12.6", T4, "ptx", "--gpu-architecture=compute_75"),
        # TX2: JetPack 4.6's own NVRTC 10.2 on its CUDA 10.2 driver
        (10020, "10.2", TX2, "ptx", "--gpu-architecture=compute_62"),
        # Orin, JetPack 6 (CUDA 12.6) with the 12.9 wheel: cubin for sm_87
        (12060, "12.9", ORIN, "cubin", "--gpu-architecture=sm_87"),
    ],
)
def test_choice_per_driver_and_nvrtc(driver, nvrtc, cc, kind, option):
    target = kernel_target.choose(
        kernel_target.cuda_version(driver), kernel_target.cuda_version(nvrtc), cc
    )
    assert (target.kind, target.option) == (kind, option)
    assert "\n" not in target.reason and option.split("=")[1] in target.reason


@pytest.mark.parametrize(
    "driver, nvrtc, cc, words",
    [
        # TX2's CUDA 10.2 driver with the 12.9 wheel: neither PTX 8.8 nor a CUDA 12 binary
        (10020, "12.9", TX2, ["CUDA 10.2", "SEGDEPLOY_NVRTC", "ISA 8.8"]),
        # R470 (CUDA 11.4) with the wheel
        (11040, "12.9", T4, ["CUDA 11.4", "another CUDA major"]),
        # NVRTC 13 has no Pascal: the 1080 Ti and the TX2 need an older toolkit's
        (13000, "13.0", GTX1080TI, ["NVRTC 13.0", "sm_61", "oldest is sm_75"]),
        # a cubin needs nvrtcGetCUBIN (11.1+)
        (11000, "11.0", T4, []),
    ],
)
def test_refusals_are_one_line_with_what_to_do(driver, nvrtc, cc, words):
    target = kernel_target.choose(
        kernel_target.cuda_version(driver), kernel_target.cuda_version(nvrtc), cc
    )
    if driver == 11000:  # same release: PTX is fine, no cubin needed
        assert target.kind == "ptx"
        return
    assert target.kind is None and target.option is None
    assert "\n" not in target.reason
    for word in words:
        assert word in target.reason, target.reason


def test_an_nvrtc_newer_than_the_table_is_judged_by_release_only():
    newer = (kernel_target.PTX_ISA[-1][0][0], kernel_target.PTX_ISA[-1][0][1] + 5)
    latest = kernel_target.PTX_ISA[-1][0]
    assert kernel_target.choose(latest, newer, T4).kind == "cubin"
    assert kernel_target.choose(newer, newer, T4).kind == "ptx"


def test_the_toolkit_nvrtc_is_picked_when_the_wheels_is_too_new():
    candidates = [("wheel", (12, 9)), ("toolkit", (10, 2))]
    index, target, notes = kernel_target.choose_nvrtc(candidates, (10, 2), TX2)
    assert index == 1 and target.kind == "ptx"
    assert len(notes) == 1 and notes[0].startswith("wheel: ")
    index, target, notes = kernel_target.choose_nvrtc(candidates, (12, 9), T4)
    assert index == 0 and notes == []
    index, target, notes = kernel_target.choose_nvrtc([("wheel", (12, 9))], (11, 4), T4)
    assert index is None and "CUDA 11.4" in target.reason
    with pytest.raises(MissingDependencyError, match="NVRTC is not installed"):
        kernel_target.choose_nvrtc([], (12, 2), T4)


def test_ptx_version_and_isa_table():
    assert kernel_target.ptx_version("//\n.version 8.8\n.target sm_75\n") == (8, 8)
    assert kernel_target.ptx_version(".target sm_75") is None
    assert kernel_target.ptx_isa_of((12, 9)) == (8, 8)
    assert kernel_target.ptx_isa_of((12, 7)) == (8, 5)  # between releases: the older one's
    assert kernel_target.ptx_isa_of((9, 2)) is None
    releases = [r for r, _ in kernel_target.PTX_ISA]
    isas = [i for _, i in kernel_target.PTX_ISA]
    assert releases == sorted(releases) and isas == sorted(isas)


def test_inputs_need_no_default_rng(monkeypatch):
    """JetPack 4.6's apt numpy is 1.13.3, which has no np.random.default_rng (1.17+)."""
    monkeypatch.delattr(np.random, "default_rng")
    x, w, b = gpu_check.make_inputs(1, 32, 8, 16, seed=3)
    assert x.shape == (1, 32, 8, 16) and w.shape == (32, 16, 3, 3) and b.shape == (32,)
    assert x.dtype == np.float32 and np.unique(x).size > 1000
    y = host.dblock_conv(x, w, b, (1, 2))
    assert y.shape == x.shape


@pytest.mark.skipif(
    not kernel_target.nvrtc_candidates(), reason="no NVRTC here (the [test] extra installs it)"
)
def test_the_installed_nvrtc_compiles_both_forms():
    """Both forms compile here (no GPU needed): PTX and, where NVRTC has it, a cubin."""
    from segdeploy.plugins.cuda_toolchain import Nvrtc

    path, include = kernel_target.nvrtc_candidates()[0]
    nvrtc = Nvrtc(path)
    source, headers = compile_check.read_sources()
    kernel = (source, compile_check.KERNEL, headers, compile_check.NVRTC_OPTIONS)
    version = kernel_target.cuda_version(nvrtc.version())
    old_driver = (version[0], 0)  # same major, older: the cubin route
    image, report = kernel_target.build_image(
        old_driver[0] * 1000, T4, *kernel, candidates=[(path, include)]
    )
    if version > old_driver and version >= kernel_target.CUBIN_SINCE:
        assert report["form"] == "cubin" and image[:4] == b"\x7fELF"
    else:
        assert report["form"] == "ptx"
    image, report = kernel_target.build_image(
        version[0] * 1000 + version[1] * 10, T4, *kernel, candidates=[(path, include)]
    )
    assert report["form"] == "ptx" and b".entry dblock_conv_f32" in image
    assert report["ptx_isa"] == "{}.{}".format(*kernel_target.ptx_isa_of(version))
