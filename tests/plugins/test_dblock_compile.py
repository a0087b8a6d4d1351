"""The D-block kernel compiles with NVRTC and ptxas for every target GPU, without spills."""

import json
import os

import pytest

from segdeploy.engines import devices
from segdeploy.errors import MissingDependencyError, SegDeployError
from segdeploy.plugins.dblock import compile_check


def _tools_missing():
    try:
        compile_check.find_nvrtc()
        compile_check.find_cuda_include()
        compile_check.find_ptxas()
    except MissingDependencyError as exc:
        return str(exc) + " (the [test] extra installs it)"
    return None


needs_tools = pytest.mark.skipif(_tools_missing() is not None, reason=str(_tools_missing()))


@pytest.fixture(scope="module")
def report():
    return compile_check.run()


@needs_tools
def test_nvrtc_compiles_ptx_for_every_architecture(report):
    archs = [p["arch"] for p in report["ptx"]]
    assert archs == ["compute_{}".format(a) for a in (61, 62, 75, 86, 87, 89, 90)]
    for p in report["ptx"]:
        assert p["entries"] == ["dblock_conv_f16", "dblock_conv_f32"]
        assert p["bytes"] > 10000


@needs_tools
def test_ptxas_assembles_without_spills(report):
    rows = {(r["kernel"], r["arch"]): r for r in report["sass"]}
    assert set(rows) == {
        (k, "sm_{}".format(a)) for k in compile_check.KERNELS for a in (61, 62, 75, 86, 87)
    }
    for row in rows.values():
        assert row["spill_stores"] == 0 and row["spill_loads"] == 0, row
        assert row["stack_bytes"] == 0, row
        # 16 accumulators x 2 pixels must live in registers, within the hardware's 255.
        assert 32 < row["registers"] <= 255, row
        # The group's 16 x 16 x 9 float weights are staged in shared memory, nothing more.
        assert row["smem_bytes"] == 16 * 16 * 9 * 4, row
        assert row["cubin_bytes"] > 0
    assert compile_check.spills(report) == 0


@needs_tools
def test_occupancy_on_target_devices(report):
    rows = report["occupancy"]
    assert {(o["device"], o["kernel"]) for o in rows} == {
        (d, k)
        for d in ("t4", "gtx1080ti", "jetson-tx2", "jetson-orin")
        for k in compile_check.KERNELS
    }
    sass = {(r["kernel"], r["arch"]): r for r in report["sass"]}
    for o in rows:
        r = sass[(o["kernel"], o["arch"])]
        cc = devices.get(o["device"]).compute_capability
        assert o["arch"] == "sm_{}{}".format(*cc)
        assert o == dict(
            devices.occupancy(cc, compile_check.THREADS_PER_BLOCK, r["registers"], 9216),
            device=o["device"],
            name=o["name"],
            kernel=o["kernel"],
            arch=o["arch"],
        )
        assert o["blocks"] >= 2 and 0 < o["occupancy"] <= 1


@needs_tools
def test_cli_prints_table_and_writes_json_csv(tmp_path, capsys):
    out_json, out_csv = tmp_path / "cc.json", tmp_path / "cc.csv"
    code = compile_check.main(
        ["--ptx-archs", "75", "--sass-archs", "75", "--json", str(out_json), "--csv", str(out_csv)]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "compute_75 ok" in text and "Tesla T4" in text and "spill" in text
    data = json.loads(out_json.read_text())
    assert [r["arch"] for r in data["sass"]] == ["sm_75", "sm_75"]
    lines = out_csv.read_text().splitlines()
    assert lines[0].startswith("kernel,arch,registers")
    assert len(lines) == 3 and all(",t4," in line for line in lines[1:])


def test_cli_missing_ptxas_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("SEGDEPLOY_PTXAS", "/nonexistent/ptxas")
    monkeypatch.setenv("SEGDEPLOY_NVRTC", "/nonexistent/libnvrtc.so")
    code = compile_check.main(["--sass-archs", "75"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("python -m segdeploy.plugins.dblock.compile_check: error: ")
    assert "pip install" in err[0] or "cannot load NVRTC" in err[0]


def test_bad_arch_list_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        compile_check.main(["--ptx-archs", "sm75"])
    assert exc.value.code == 2
    assert "comma-separated architectures" in capsys.readouterr().err


def test_ptxas_report_parser_refuses_an_unknown_format():
    text = "ptxas info    : Compiling entry function 'k' for 'sm_75'\nptxas info : something else\n"
    with pytest.raises(SegDeployError, match="format changed"):
        compile_check.parse_ptxas_report(text)


@pytest.mark.parametrize(
    "cc, threads, regs, smem, blocks, limit",
    [
        # 91 registers: 2912 per warp -> 3072 allocated; 65536 / 3072 = 21 warps = 5 blocks of 4.
        ((6, 1), 128, 91, 9216, 5, "registers"),
        # Turing holds 1024 threads: 4 blocks of 256.
        ((7, 5), 256, 32, 0, 4, "threads"),
        # 40000 B + nothing reserved -> 40192 B units on 6.1: 96 KB holds 2.
        ((6, 1), 64, 16, 40000, 2, "shared memory"),
        # 8.6 reserves 1 KB per block: 9216 + 1024 -> 10240 B, 100 KB holds 10; 16 blocks max.
        ((8, 6), 32, 16, 9216, 10, "shared memory"),
        ((8, 6), 32, 16, 0, 16, "blocks"),
    ],
)
def test_occupancy_arithmetic(cc, threads, regs, smem, blocks, limit):
    occ = devices.occupancy(cc, threads, regs, smem)
    assert (occ["blocks"], occ["limit"]) == (blocks, limit)
    max_warps = devices.SM_LIMITS[cc].max_threads // 32
    assert occ["occupancy"] == pytest.approx(blocks * -(-threads // 32) / max_warps)


def test_occupancy_refuses_unknown_or_impossible():
    with pytest.raises(SegDeployError, match="no SM limits"):
        devices.occupancy((5, 0), 128, 32, 0)
    with pytest.raises(SegDeployError, match="cannot launch"):
        devices.occupancy((6, 1), 128, 300, 0)


# TensorRT's headers are not shipped with segdeploy: point SEGDEPLOY_TRT_INCLUDES at one or more
# include directories (os.pathsep-separated) of real TensorRT releases to run this check.
TRT_INCLUDES = [d for d in os.environ.get("SEGDEPLOY_TRT_INCLUDES", "").split(os.pathsep) if d]


@pytest.mark.skipif(not TRT_INCLUDES, reason="SEGDEPLOY_TRT_INCLUDES names no TensorRT headers")
@pytest.mark.parametrize("include", TRT_INCLUDES or ["none"])
def test_plugin_compiles_against_tensorrt_headers(include):
    row = compile_check.compile_plugin(include)
    assert row["ok"], row["message"]
    assert row["warnings"] == 0 and row["object_bytes"] > 0
    assert row["tensorrt"].split(".")[0] in ("8", "10", "11")


def test_tensorrt_version_reads_aliased_macros(tmp_path):
    # The layout of NvInferVersion.h from 10.x on: NV_TENSORRT_MAJOR is an alias of another macro.
    (tmp_path / "NvInferVersion.h").write_text(
        "#define TRT_MAJOR_ENTERPRISE 10\n#define TRT_MINOR_ENTERPRISE 16\n"
        "#define TRT_PATCH_ENTERPRISE 0\n#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE\n"
        "#define NV_TENSORRT_MINOR TRT_MINOR_ENTERPRISE\n"
        "#define NV_TENSORRT_PATCH TRT_PATCH_ENTERPRISE\n"
    )
    assert compile_check.tensorrt_version(str(tmp_path)) == "10.16.0"
    with pytest.raises(SegDeployError, match="NvInferVersion.h"):
        compile_check.tensorrt_version(str(tmp_path / "missing"))


def test_roofline_of_one_launch():
    from segdeploy.plugins.dblock import gpu_check

    rows = compile_check.roofline()
    assert {(r["device"], r["precision"]) for r in rows} == {
        (d, p) for d in ("t4", "gtx1080ti", "jetson-tx2", "jetson-orin") for p in ("fp32", "fp16")
    }
    for r in rows:
        size = 4 if r["precision"] == "fp32" else 2
        assert (r["flops"], r["bytes"]) == gpu_check.launch_cost(1, 256, 64, 128, size)
        record = devices.get(r["device"])
        assert r["compute_us"] == pytest.approx(r["flops"] / record.peak("fp32") / 1e6)
        assert r["memory_us"] == pytest.approx(r["bytes"] / record.bandwidth_gbs / 1e3)
        assert r["floor_us"] == max(r["compute_us"], r["memory_us"])
        # 144 multiply-adds per output value: above every target's ridge point, compute-bound.
        assert r["intensity"] > r["ridge"] and r["bound"] == "compute"
    text = compile_check.format_roofline(rows)
    assert "Jetson TX2" in text and "floor us" in text
