"""Shared fixtures and the gpu / tensorrt skips (never faked: a missing piece is a skip)."""

import importlib.util
import os

import pytest


def _has_cuda():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _tensorrt_missing_reason():
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install 'segdeploy[tensorrt]')"
    if not _has_cuda():
        return "no CUDA device on this machine"
    return None


def pytest_collection_modifyitems(config, items):
    cuda = _has_cuda()
    trt_reason = _tensorrt_missing_reason()
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(pytest.mark.skip(reason="no CUDA device on this machine"))
        if "tensorrt" in item.keywords and trt_reason:
            item.add_marker(pytest.mark.skip(reason=trt_reason))


@pytest.fixture(autouse=True)
def _limit_threads():
    # Tests run on 2 cores; keep intra-op threads bounded and deterministic.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    yield
