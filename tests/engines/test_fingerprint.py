import pytest

from segdeploy.engines import fingerprint
from segdeploy.engines.fingerprint import compare, device_section

T4 = device_section("Tesla T4", (7, 5))
TX2 = device_section("NVIDIA Tegra X2", (6, 2))
A100 = device_section("NVIDIA A100-SXM4-80GB", (8, 0))
A10 = device_section("NVIDIA A10", (8, 6))


def built(trt="8.6.1", device=T4, **flags):
    return {
        "backend": "tensorrt",
        "tensorrt": trt,
        "device": device,
        "build_flags": flags,
        "plugins": [],
    }


def test_same_gpu_and_tensorrt_is_ok():
    verdict = compare(built(), {"tensorrt": "8.6.1", "device": T4})
    assert verdict.ok and verdict.problems == [] and verdict.message == ""


def test_t4_plan_on_a_tx2_says_what_differs_and_what_to_do():
    verdict = compare(built(), {"tensorrt": "8.2.1", "device": TX2})
    assert not verdict.ok
    assert verdict.message == (
        "built on Tesla T4 with TensorRT 8.6.1; this is Jetson TX2 with "
        "8.2.1: rebuild on this device with segexport"
    )
    assert len(verdict.problems) == 2


def test_only_tensorrt_differs():
    verdict = compare(built(), {"tensorrt": "8.6.2", "device": T4})
    assert not verdict.ok and verdict.problems == ["TensorRT 8.6.1 vs 8.6.2"]


def test_only_gpu_differs():
    verdict = compare(built(device=A100), {"tensorrt": "8.6.1", "device": A10})
    assert verdict.problems == ["GPU NVIDIA A100-SXM4-80GB vs NVIDIA A10"]


def test_version_compatible_plan_loads_on_a_later_runtime_of_the_same_major():
    plan = built(trt="10.0.1", version_compatible=True)
    assert compare(plan, {"tensorrt": "10.3.0", "device": T4}).ok
    assert not compare(plan, {"tensorrt": "9.9.0", "device": T4}).ok  # older runtime
    assert not compare(plan, {"tensorrt": "11.0.0", "device": T4}).ok  # next major


def test_version_compatibility_needs_8_6():
    plan = built(trt="8.5.3", version_compatible=True)
    assert not compare(plan, {"tensorrt": "8.6.1", "device": T4}).ok


def test_hardware_compatible_needs_ampere_on_both_sides():
    plan = built(device=A100, hardware_compatible=True)
    assert compare(plan, {"tensorrt": "8.6.1", "device": A10}).ok
    assert not compare(plan, {"tensorrt": "8.6.1", "device": T4}).ok


def test_plugin_hashes_are_compared():
    plan = built()
    plan["plugins"] = [{"file": "libdblock.so", "sha256": "aa"}]
    here = {"tensorrt": "8.6.1", "device": T4}
    assert compare(plan, here, {"libdblock.so": "aa"}).ok
    changed = compare(plan, here, {"libdblock.so": "bb"})
    assert not changed.ok and "plugin libdblock.so changed" in changed.message
    assert "not loaded" in compare(plan, here, {}).message


def test_plan_size_check():
    assert fingerprint.check_plan_size({"plan_bytes": 10}, 10) is None
    assert fingerprint.check_plan_size({}, 3) is None
    assert "truncated (4 of 10 bytes)" in fingerprint.check_plan_size({"plan_bytes": 10}, 4)
    assert "not the plan" in fingerprint.check_plan_size({"plan_bytes": 10}, 12)


def test_hashes_and_plugin_records(tmp_path):
    lib = tmp_path / "libx.so"
    lib.write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert fingerprint.sha256_file(str(lib)) == expected == fingerprint.sha256_bytes(b"abc")
    (record,) = fingerprint.plugin_records([str(lib)])
    assert record["file"] == "libx.so" and record["sha256"] == expected


@pytest.mark.parametrize("name,cc,key", [("Tesla T4", (7, 5), "t4"), ("Mystery GPU", (8, 9), None)])
def test_device_section(name, cc, key):
    assert device_section(name, cc) == {"key": key, "name": name, "compute_capability": list(cc)}
