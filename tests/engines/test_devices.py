import pytest

from segdeploy.engines import devices
from segdeploy.errors import EngineError, SegDeployError

REQUIRED = [
    "t4",
    "gtx1080ti",
    "jetson-tx2",
    "v100",
    "a100",
    "h100",
    "h200",
    "jetson-xavier",
    "jetson-orin",
    "cpu",
]


@pytest.mark.parametrize("key", REQUIRED)
def test_every_required_device_has_a_complete_record(key):
    record = devices.get(key)
    assert record.key == key
    assert set(record.peak_tflops) == {"fp32", "fp16", "int8"}
    if key == "cpu":
        assert record.compute_capability is None
        assert all(v is None for v in record.peak_tflops.values())
        assert record.bandwidth_gbs is None
    else:
        assert isinstance(record.compute_capability, tuple) and len(record.compute_capability) == 2
        assert record.peak("fp32") > 0 and record.bandwidth_gbs > 0 and record.memory_gib > 0


def test_names_and_aliases_normalise():
    assert devices.get("T4") is devices.get("t4") is devices.get("tesla_t4")
    assert devices.get("1080ti").key == "gtx1080ti"
    assert devices.get("Jetson TX2").key == "jetson-tx2"
    with pytest.raises(SegDeployError, match="known devices: .*jetson-tx2"):
        devices.get("gtx480")


def test_table_facts_the_precision_rules_rely_on():
    assert devices.get("gtx1080ti").compute_capability == (6, 1)
    assert devices.get("gtx1080ti").fast_fp16 is False
    assert devices.get("gtx1080ti").max_tensorrt == "8.6"
    tx2 = devices.get("jetson-tx2")
    assert (tx2.compute_capability, tx2.int8, tx2.max_tensorrt) == ((6, 2), False, "8.2")
    assert devices.get("t4").fast_fp16 and devices.get("t4").int8


def test_fp16_on_a_1080ti_warns_and_suggests_fp32():
    warnings = devices.check_precision(devices.get("gtx1080ti"), "fp16")
    assert len(warnings) == 1
    assert "1/64" in warnings[0]  # the FP16:FP32 rate of sm_61
    assert "build fp32" in warnings[0]


def test_int8_on_a_tx2_is_refused_with_the_reason():
    with pytest.raises(EngineError, match=r"Jetson TX2 \(compute capability 6.2\) has no INT8"):
        devices.check_precision(devices.get("jetson-tx2"), "int8")


@pytest.mark.parametrize(
    "key,precision",
    [
        ("t4", "fp16"),
        ("t4", "int8"),
        ("jetson-tx2", "fp16"),
        ("gtx1080ti", "fp32"),
        ("gtx1080ti", "int8"),
    ],
)
def test_supported_precisions_pass_silently(key, precision):
    assert devices.check_precision(devices.get(key), precision) == []


def test_precision_checks_on_unknown_and_cpu():
    assert devices.check_precision(None, "fp16") == []
    with pytest.raises(EngineError, match="needs an NVIDIA GPU"):
        devices.check_precision(devices.get("cpu"), "fp16")
    with pytest.raises(SegDeployError, match="precision must be one of"):
        devices.check_precision(devices.get("t4"), "bf16")


TX2_RELEASE = (
    "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t186ref, EABI: aarch64, "
    "DATE: Sat Feb 19 17:07:00 UTC 2022\n"
)


def test_tegra_release_is_parsed():
    assert devices.parse_tegra_release(TX2_RELEASE) == {"l4t": "32.7.1", "board": "t186ref"}
    assert devices.parse_tegra_release("garbage") == {}


@pytest.mark.parametrize(
    "name,cc,release,expected",
    [
        ("Tesla T4", (7, 5), None, "t4"),
        ("NVIDIA GeForce GTX 1080 Ti", (6, 1), None, "gtx1080ti"),
        ("Tesla V100-SXM2-16GB", (7, 0), None, "v100"),
        ("NVIDIA A100-SXM4-80GB", (8, 0), None, "a100"),
        ("NVIDIA H100 80GB HBM3", (9, 0), None, "h100"),
        ("NVIDIA H200", (9, 0), None, "h200"),
        ("NVIDIA Tegra X2", (6, 2), TX2_RELEASE, "jetson-tx2"),
        # JetPack 5+ may report BOARD: generic; the compute capability decides.
        (
            "Orin",
            (8, 7),
            "# R35 (release), REVISION: 4.1, BOARD: generic, EABI: aarch64",
            "jetson-orin",
        ),
        ("NVIDIA GeForce RTX 3090", (8, 6), None, None),
    ],
)
def test_identify(name, cc, release, expected):
    assert devices.identify(name, cc, release) == expected


def test_detect_without_cuda_is_the_host_cpu(tmp_path):
    # No CUDA binding is installed on the CPU test host; detection must fall back, not raise.
    release = tmp_path / "nv_tegra_release"
    found = devices.detect(tegra_release_path=str(release))
    if found.gpu_name is None:
        assert found.key == "cpu" and found.record is devices.get("cpu")


def test_floor_seconds():
    t4 = devices.get("t4")
    # 8.1 TFLOPS: 4.05e9 multiply-adds = 8.1e9 FLOPs -> 1 ms
    assert devices.floor_seconds(t4, 4.05e9) == pytest.approx(1e-3)
    # memory bound: 320 GB/s, 640 MB -> 2 ms dominates
    assert devices.floor_seconds(t4, 4.05e9, bytes_moved=640e6) == pytest.approx(2e-3)
    assert devices.floor_seconds(devices.get("cpu"), 1e9) is None
    assert devices.floor_seconds(devices.get("jetson-tx2"), 1e9, precision="int8") is None
