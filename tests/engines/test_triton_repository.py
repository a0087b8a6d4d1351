"""Triton model repositories: every config variant parses with Triton's own schema
(tritonclient's model_config_pb2 + protobuf text format) and says what the engine takes."""

import json
import os
import shutil

import pytest

from segdeploy import card as card_mod
from segdeploy.engines.triton import write_model_repository
from segdeploy.errors import SegDeployError
from segdeploy.export.cli import main as segexport

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2",
    reason="tritonclient is not installed (pip install 'segdeploy[serve]')",
)
text_format = pytest.importorskip("google.protobuf.text_format")


def parse(path):
    with open(path) as f:
        return text_format.Parse(f.read(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A uint8 graph with a batch axis 1..8 and a float graph of batch 1 (random weights:
    these tests read configs, not labels)."""
    root = tmp_path_factory.mktemp("triton")
    common = ["--model", "regseg_tiny", "--res", "64x128", "--verify-inputs", "1"]
    repo = root / "repo"
    argv = ["--input", "uint8", "--triton", str(repo), "--triton-device", "gpu"]
    assert segexport(common + argv + ["--out", str(root / "u8")]) == 0
    assert segexport(common + ["--out", str(root / "f32")]) == 0
    return root, repo


def test_segexport_triton_device_cpu_gets_openvino(exported, tmp_path):
    root, _ = exported
    argv = ["--onnx", str(root / "u8" / "regseg_tiny.onnx"), "--verify-inputs", "1"]
    argv += ["--triton", str(tmp_path / "repo"), "--triton-device", "cpu", "--out", str(tmp_path)]
    assert segexport(argv) == 0
    config = parse(tmp_path / "repo" / "regseg_tiny" / "config.pbtxt")
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    (accel,) = config.optimization.execution_accelerators.cpu_execution_accelerator
    assert accel.name == "openvino"


def test_segexport_triton_writes_a_valid_onnxruntime_model(exported):
    root, repo = exported
    config = parse(repo / "regseg_tiny" / "config.pbtxt")
    assert config.name == "regseg_tiny" and config.backend == "onnxruntime"
    assert config.max_batch_size == 8
    (inp,) = config.input
    (out,) = config.output
    assert inp.name == "image" and list(inp.dims) == [64, 128, 3]
    assert inp.data_type == model_config_pb2.TYPE_UINT8
    assert out.name == "labels" and list(out.dims) == [64, 128]
    assert out.data_type == model_config_pb2.TYPE_INT64
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    (group,) = config.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU and group.count == 1
    (accel,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == "FP32"
    (warmup,) = config.model_warmup
    assert warmup.batch_size == 1 and warmup.inputs["image"].zero_data
    assert list(warmup.inputs["image"].dims) == [64, 128, 3]
    card = json.loads(config.parameters["segdeploy.card"].string_value)
    assert card == card_mod.read_sidecar(str(root / "u8" / "regseg_tiny.onnx"))
    model = repo / "regseg_tiny" / "1" / "model.onnx"
    with open(model, "rb") as a, open(root / "u8" / "regseg_tiny.onnx", "rb") as b:
        assert a.read() == b.read()


@pytest.mark.parametrize(
    "backend, device, accelerator, kind",
    [
        ("onnxruntime", "cpu", "auto", "openvino"),
        ("onnxruntime", "gpu", "none", None),
        ("python", None, "auto", None),
    ],
)
def test_backend_variants_parse(exported, tmp_path, backend, device, accelerator, kind):
    root, _ = exported
    result = write_model_repository(
        tmp_path,
        str(root / "u8" / "regseg_tiny.onnx"),
        backend=backend,
        device=device,
        accelerator=accelerator,
        instances=2,
        queue_delay_us=500,
    )
    config = parse(result["config"])
    assert config.backend == backend and config.instance_group[0].count == 2
    accelerators = config.optimization.execution_accelerators
    names = [a.name for a in accelerators.cpu_execution_accelerator] + [
        a.name for a in accelerators.gpu_execution_accelerator
    ]
    assert names == ([kind] if kind else [])
    if backend == "python":
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        assert config.output[0].data_type == model_config_pb2.TYPE_UINT8  # 1 byte per label
        assert os.path.isfile(os.path.join(result["model_dir"], "1", "model.py"))
        compile(open(os.path.join(result["model_dir"], "1", "model.py")).read(), "model.py", "exec")
    assert config.dynamic_batching.max_queue_delay_microseconds == 500


@pytest.mark.parametrize("has_gpu", [True, False])
def test_default_instance_kind_follows_the_machine(exported, tmp_path, monkeypatch, has_gpu):
    # A KIND_GPU instance does not load on a CPU-only server: without --triton-device the
    # ONNX Runtime model gets the kind of the machine that writes it; a plan always runs on a
    # GPU and the Python backend model on the CPU.
    from segdeploy.engines import triton

    monkeypatch.setattr(triton, "machine_has_gpu", lambda: has_gpu)
    onnx = str(exported[0] / "u8" / "regseg_tiny.onnx")
    config = parse(write_model_repository(tmp_path / "ort", onnx)["config"])
    kinds = model_config_pb2.ModelInstanceGroup
    assert config.instance_group[0].kind == (kinds.KIND_GPU if has_gpu else kinds.KIND_CPU)
    accelerators = config.optimization.execution_accelerators
    if has_gpu:
        assert [a.name for a in accelerators.gpu_execution_accelerator] == ["tensorrt"]
    else:
        assert [a.name for a in accelerators.cpu_execution_accelerator] == ["openvino"]
    python = parse(write_model_repository(tmp_path / "py", onnx, backend="python")["config"])
    assert python.instance_group[0].kind == kinds.KIND_CPU
    assert triton.default_device("tensorrt_plan", has_gpu=False) == "gpu"


def test_machine_has_gpu_reads_devices_not_libraries(monkeypatch):
    from segdeploy.engines import triton

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert triton.machine_has_gpu() is False  # every GPU hidden from the server
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    present = {"/dev/nvidia0"}
    monkeypatch.setattr(triton.os.path, "exists", lambda p: p in present)
    assert triton.machine_has_gpu() is True
    present.clear()
    monkeypatch.setattr(triton.os.path, "isdir", lambda p: False)
    assert triton.machine_has_gpu() is False


def test_fixed_batch_graph_gets_no_batching(exported, tmp_path):
    root, _ = exported
    result = write_model_repository(tmp_path, str(root / "f32" / "regseg_tiny.onnx"))
    config = parse(result["config"])
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [1, 3, 64, 128]
    assert config.input[0].data_type == model_config_pb2.TYPE_FP32
    assert list(config.output[0].dims) == [1, 64, 128]
    with pytest.raises(SegDeployError, match="re-export with segexport --max-batch 4"):
        write_model_repository(tmp_path, str(root / "f32" / "regseg_tiny.onnx"), max_batch=4)


def test_plan_repository_config(exported, tmp_path):
    # The writer copies the plan's bytes and reads its card; it never opens the plan, so the
    # ONNX file's bytes stand in for them here (no TensorRT runs in this test).
    root, _ = exported
    plan = tmp_path / "regseg_tiny.plan"
    shutil.copyfile(root / "u8" / "regseg_tiny.onnx", plan)
    card = dict(card_mod.read_sidecar(str(root / "u8" / "regseg_tiny.onnx")), precision="fp16")
    card_mod.write_sidecar(str(plan), card)
    result = write_model_repository(tmp_path / "repo", str(plan), max_batch=4)
    config = parse(result["config"])
    assert config.platform == "tensorrt_plan" and not config.backend
    assert config.max_batch_size == 4 and list(config.dynamic_batching.preferred_batch_size) == [
        2,
        4,
    ]
    assert os.path.isfile(tmp_path / "repo" / "regseg_tiny" / "1" / "model.plan")
    with pytest.raises(SegDeployError, match="exceeds the plan's batch range"):
        write_model_repository(tmp_path / "repo", str(plan), max_batch=16)
    with pytest.raises(SegDeployError, match="runs on a GPU only"):
        write_model_repository(tmp_path / "repo", str(plan), device="cpu")


def test_user_mistakes_are_one_line(exported, tmp_path):
    root, _ = exported
    with pytest.raises(SegDeployError, match="give the .onnx next to it"):
        write_model_repository(tmp_path, str(root / "u8" / "regseg_tiny.ort"))
    with pytest.raises(SegDeployError, match="does not exist"):
        write_model_repository(tmp_path, str(root / "nothing.onnx"))
    with pytest.raises(SegDeployError, match="exceed max_batch_size"):
        write_model_repository(
            tmp_path, str(root / "u8" / "regseg_tiny.onnx"), preferred_batch_sizes=[16]
        )


def test_rewriting_replaces_the_model_folder_whole(exported, tmp_path):
    root, _ = exported
    onnx_path = str(root / "u8" / "regseg_tiny.onnx")
    write_model_repository(tmp_path, onnx_path, backend="python")
    write_model_repository(tmp_path, onnx_path, backend="onnxruntime")
    assert sorted(os.listdir(tmp_path)) == ["regseg_tiny"]
    assert not os.path.exists(tmp_path / "regseg_tiny" / "1" / "model.py")
    assert parse(tmp_path / "regseg_tiny" / "config.pbtxt").backend == "onnxruntime"
