"""The fused head kernel compiles for every target GPU without spills; the plugin against
TensorRT's headers; the roofline arithmetic."""

import json
import os
import shutil

import pytest

from segdeploy.engines import devices
from segdeploy.errors import MissingDependencyError, SegDeployError
from segdeploy.plugins.dblock import compile_check as base
from segdeploy.plugins.seghead import compile_check, roofline


def _tools_missing():
    try:
        base.find_nvrtc()
        base.find_cuda_include()
        base.find_ptxas()
    except MissingDependencyError as exc:
        return str(exc) + " (the [test] extra installs it)"
    return None


needs_tools = pytest.mark.skipif(_tools_missing() is not None, reason=str(_tools_missing()))


@pytest.fixture(scope="module")
def report():
    return compile_check.run()


@needs_tools
def test_nvrtc_and_ptxas_for_every_target_without_spills(report):
    assert [p["arch"] for p in report["ptx"]] == [
        "compute_{}".format(a) for a in (61, 62, 75, 86, 87)
    ]
    rows = {(r["kernel"], r["arch"]): r for r in report["sass"]}
    assert set(rows) == {
        (k, "sm_{}".format(a)) for k in compile_check.KERNELS for a in (61, 62, 75, 86, 87)
    }
    for row in rows.values():
        assert row["spill_stores"] == 0 and row["spill_loads"] == 0, row
        assert row["stack_bytes"] == 0, row
        assert 0 < row["registers"] <= 255 and row["cubin_bytes"] > 0, row
        assert row["smem_bytes"] == compile_check.SHARED_BYTES, row
    assert compile_check.spills(report) == 0


@needs_tools
def test_occupancy_on_target_devices(report):
    sass = {(r["kernel"], r["arch"]): r for r in report["sass"]}
    assert {(o["device"], o["kernel"]) for o in report["occupancy"]} == {
        (d, k) for d in compile_check.TARGETS for k in compile_check.KERNELS
    }
    for o in report["occupancy"]:
        cc = devices.get(o["device"]).compute_capability
        r = sass[(o["kernel"], "sm_{}{}".format(*cc))]
        expected = devices.occupancy(cc, 256, r["registers"], compile_check.SHARED_BYTES)
        assert (o["blocks"], o["occupancy"]) == (expected["blocks"], expected["occupancy"])
        assert o["blocks"] >= 2


@pytest.mark.skipif(not shutil.which("nvcc"), reason="no nvcc (CUDA toolkit) on PATH")
@pytest.mark.parametrize("arch", [87])
def test_nvcc_compiles_kernel_and_launcher_without_spills(arch):
    # The whole file with its launcher (what the plugin library links), by a real toolkit.
    resources = compile_check.nvcc_check(arch)
    assert set(resources) == set(compile_check.KERNELS)
    for info in resources.values():
        assert info["spill_stores"] == 0 and info["spill_loads"] == 0, info


@needs_tools
def test_cli_prints_tables_and_writes_json(tmp_path, capsys):
    out = tmp_path / "cc.json"
    code = compile_check.main(["--archs", "75", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "compute_75 ok" in text and "Tesla T4" in text and "fused MB" in text
    data = json.loads(out.read_text())
    assert [r["arch"] for r in data["sass"]] == ["sm_75"] * 4
    assert {r["device"] for r in data["roofline"]} == set(compile_check.TARGETS)


def test_cli_missing_tools_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("SEGDEPLOY_PTXAS", "/nonexistent/ptxas")
    monkeypatch.setenv("SEGDEPLOY_NVRTC", "/nonexistent/libnvrtc.so")
    code = compile_check.main(["--archs", "75"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("python -m segdeploy.plugins.seghead.compile_check: error: ")


# TensorRT's headers are not shipped with segdeploy: SEGDEPLOY_TRT_INCLUDES names include
# directories (os.pathsep-separated) of real TensorRT releases.
TRT_INCLUDES = [d for d in os.environ.get("SEGDEPLOY_TRT_INCLUDES", "").split(os.pathsep) if d]


@pytest.mark.skipif(not TRT_INCLUDES, reason="SEGDEPLOY_TRT_INCLUDES names no TensorRT headers")
@pytest.mark.parametrize("include", TRT_INCLUDES or ["none"])
def test_plugin_compiles_against_tensorrt_headers(include):
    row = compile_check.compile_plugin(include)
    assert row["ok"], row["message"]
    assert row["warnings"] == 0 and row["object_bytes"] > 0
    major = int(row["tensorrt"].split(".")[0])
    if shutil.which("nm"):
        # The interface compiled is the one for the release: V2 below 10, V3 from 10 on.
        if major >= 10:
            assert "IPluginV3OneRuntime" in row["symbols"] and row["interface"] == "IPluginV3"
            assert "IPluginV2DynamicExt" not in row["symbols"]
        else:
            assert "IPluginV2DynamicExt" in row["symbols"]
            assert "IPluginV3" not in row["symbols"]


@pytest.mark.parametrize(
    "version, interface",
    [
        ("8.2.3", "IPluginV2DynamicExt"),
        ("8.6.1", "IPluginV2DynamicExt"),
        ("10.0.1", "IPluginV3"),
        ("11.1.0", "IPluginV3"),
    ],
)
def test_interface_per_release(version, interface):
    assert compile_check.interface_for(version) == interface


def test_head_bytes_arithmetic():
    # 19 classes, 1024 x 2048 labels from stride-8 logits (128 x 256), FP16.
    standard, fused = roofline.head_bytes(19, 1024, 2048, 8, "fp16")
    low = 19 * 128 * 256 * 2
    full = 19 * 1024 * 2048 * 2  # 79.7 MB: the "80 MB written and read again"
    assert standard == low + 2 * full + 1024 * 2048 * 4
    assert fused == low + 1024 * 2048
    assert roofline.head_bytes(19, 1024, 2048, 8, "fp32", "int32")[1] == 2 * low + 1024 * 2048 * 4
    # Sizes that are not multiples of the stride: the logits are rounded up, as a network's are.
    assert roofline.head_bytes(2, 9, 9, 4, "fp32")[1] == 2 * 3 * 3 * 4 + 81
    with pytest.raises(SegDeployError, match="precision"):
        roofline.head_bytes(19, 8, 8, 8, "int8")


def test_estimate_per_device():
    rows = roofline.estimate(19, 1024, 2048, 8)
    keys = {r["device"] for r in rows}
    with_bandwidth = {k for k, d in devices.TABLE.items() if d.bandwidth_gbs}
    assert keys == with_bandwidth and "cpu" not in keys
    for r in rows:
        bw = devices.get(r["device"]).bandwidth_gbs
        assert r["standard_us"] == pytest.approx(r["standard_bytes"] / (bw * 1e3))
        assert r["fused_us"] == pytest.approx(r["fused_bytes"] / (bw * 1e3))
        assert r["ratio"] == pytest.approx(r["standard_bytes"] / r["fused_bytes"])
        assert r["fused_bytes"] < r["fused_int32_bytes"] < r["standard_bytes"]
    tx2 = [r for r in rows if r["device"] == "jetson-tx2" and r["precision"] == "fp16"][0]
    # 169 MB at 59.7 GB/s: 2.8 ms of a TX2 frame spent moving the standard head's bytes.
    assert 2.7e3 < tx2["standard_us"] < 2.9e3
    text = roofline.format_estimate(rows)
    assert "Jetson TX2" in text and "ratio" in text


def test_roofline_cli(capsys):
    assert roofline.main(["--classes", "150", "--res", "512x512", "--stride", "4"]) == 0
    assert "150 classes" in capsys.readouterr().out
    assert roofline.main(["--classes", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
