"""Session fixtures of the segeval tests: the exported engines and a synthetic Cityscapes."""

import numpy as np
import pytest
from eval_support import export_camvid_engine, export_engines, frame, make_cityscapes

import segdeploy


@pytest.fixture(scope="session")
def engines(tmp_path_factory):
    """(FP32 .onnx, FP16-typed .onnx) of the fan-in model, written by segexport --fp16."""
    fp32, fp16 = export_engines(tmp_path_factory.mktemp("engines"))
    with segdeploy.Runtime(fp32) as runtime:
        labels = np.concatenate([runtime.infer(frame(s)).ravel() for s in range(4)])
    # Accuracy figures of an engine that labels everything alike would mean nothing.
    assert len(np.unique(labels)) >= 5, np.unique(labels)
    return fp32, fp16


@pytest.fixture(scope="session")
def cityscapes(tmp_path_factory, engines):
    root = tmp_path_factory.mktemp("cityscapes")
    with segdeploy.Runtime(engines[0]) as runtime:
        count = make_cityscapes(str(root), runtime)
    return str(root), count


@pytest.fixture(scope="session")
def camvid_engine(tmp_path_factory):
    """An 11-class ONNX engine (CamVid's classes) of the same fan-in model family."""
    return export_camvid_engine(tmp_path_factory.mktemp("camvid_engine") / "camvid.onnx")
