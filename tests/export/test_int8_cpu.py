"""Which INT8 weight range the host CPU gets: 7 bits on x86 without VNNI (the CPU kernels'
int16 saturation), 8 bits where the dot products accumulate in int32 (VNNI, AMX, ARM)."""

import pytest

from segdeploy.export.int8_cpu import REDUCE_RANGE_VARIABLE, reduce_range_choice

AVX2 = {"sse4_2", "avx", "avx2", "fma", "f16c"}


@pytest.mark.parametrize("vnni", ["avx512_vnni", "avx_vnni", "amx_int8"])
def test_vnni_keeps_8_bit_weights(vnni):
    choice = reduce_range_choice(AVX2 | {"avx512f", vnni}, "x86_64", override="")
    assert choice["enabled"] is False and choice["vnni"] == [vnni]
    assert vnni in choice["reason"]


def test_x86_without_vnni_uses_7_bit_weights():
    # the AMD EPYC of CI: AVX2, no AVX-512, no VNNI
    choice = reduce_range_choice(AVX2, "x86_64", override="")
    assert choice["enabled"] is True and choice["vnni"] == []
    assert choice["reason"].startswith("host CPU has no VNNI")
    # AVX-512 without VNNI (Skylake-SP) saturates the same way
    assert reduce_range_choice(AVX2 | {"avx512f", "avx512bw"}, "AMD64", override="")["enabled"]
    # flags unreadable on x86: the safe side, said so
    unknown = reduce_range_choice(set(), "x86_64", override="")
    assert unknown["enabled"] is True


def test_arm_keeps_8_bit_weights():
    choice = reduce_range_choice({"asimd", "asimddp"}, "aarch64", override="")
    assert choice["enabled"] is False and "not x86" in choice["reason"]


def test_variable_overrides_the_detection(monkeypatch):
    monkeypatch.setenv(REDUCE_RANGE_VARIABLE, "off")
    assert reduce_range_choice(AVX2, "x86_64")["enabled"] is False
    monkeypatch.setenv(REDUCE_RANGE_VARIABLE, "on")
    choice = reduce_range_choice(AVX2 | {"avx512_vnni"}, "x86_64")
    assert choice["enabled"] is True and REDUCE_RANGE_VARIABLE in choice["reason"]
    monkeypatch.setenv(REDUCE_RANGE_VARIABLE, "auto")
    assert reduce_range_choice(AVX2 | {"avx512_vnni"}, "x86_64")["enabled"] is False
