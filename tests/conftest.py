"""Shared fixtures and the gpu / tensorrt skips (never faked: a missing piece is a skip)."""

import importlib.util
import os

import pytest


def cuda_status():
    """(True, device) or (False, why), asked of the CUDA binding segdeploy itself uses (pycuda or
    cuda-python), so a runbook install without torch runs its gpu/tensorrt tests; torch's view
    only where no binding is installed."""
    from segdeploy.engines import cuda_memory

    if cuda_memory.BINDING is not None:
        return cuda_memory.cuda_available()
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return True, torch.cuda.get_device_name(0)
    return False, "no CUDA device on this machine (and no pycuda or cuda-python to ask)"


def _tensorrt_missing_reason(cuda):
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install 'segdeploy[tensorrt]')"
    if not cuda[0]:
        return cuda[1]
    return None


def pytest_configure(config):
    # segexport --backend auto on a CPU with OpenVINO times ONNX Runtime against OpenVINO and
    # builds the faster: the tests that open NAME.ort need that file, so the suite restricts the
    # choice to ONNX Runtime; tests/export/test_int8.py lifts it to test the measured choice.
    os.environ.setdefault("SEGDEPLOY_CPU_ENGINES", "onnxruntime")


def pytest_collection_modifyitems(config, items):
    cuda = cuda_status()
    trt_reason = _tensorrt_missing_reason(cuda)
    for item in items:
        if "gpu" in item.keywords and not cuda[0]:
            item.add_marker(pytest.mark.skip(reason=cuda[1]))
        if "tensorrt" in item.keywords and trt_reason:
            item.add_marker(pytest.mark.skip(reason=trt_reason))


@pytest.fixture(autouse=True)
def _limit_threads():
    # Tests run on 2 cores; keep intra-op threads bounded and deterministic.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    yield


def pytest_terminal_summary(terminalreporter):
    # tests/export/test_combinations.py: what each row of the all-pairs design did
    import sys

    design = sys.modules.get("combination_support")
    if design is not None and design.TABLE:
        terminalreporter.section("segexport combinations (all pairs)")
        for line in design.format_table():
            terminalreporter.write_line(line)
