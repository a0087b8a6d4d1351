"""The Lite zoo through the user's main job: segexport, then Runtime on the engine it wrote.

TI's models normalize with (pixel - 128) / 64 instead of ImageNet's statistics and use depthwise
convolutions everywhere; LR-ASPP adds hardswish, hardsigmoid and a global pool. Weights are random
with varied BatchNorm statistics so the labels vary (asserted), else agreement would be trivial.
"""

import numpy as np
import pytest

# Host side (segexport needs torch): skipped, not a collection error, in the torch-free device lane.
torch = pytest.importorskip("torch")
from runtime_support import reference_labels, smooth_frame, tiny_model  # noqa: E402

import segdeploy  # noqa: E402
from segdeploy.export.cli import main as segexport  # noqa: E402


@pytest.mark.parametrize(
    "name,height,width",
    [("ti_fpnlite_mnv2", 64, 128), ("lraspp_mobilenet_v3_large", 128, 160)],
)
def test_runtime_on_the_exported_engine(tmp_path, name, height, width):
    model = tiny_model(seed=5, num_classes=19, name=name)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ckpt.pth")
    argv = ["--model", name, "--checkpoint", str(tmp_path / "ckpt.pth"), "--num-classes", "19"]
    argv += ["--res", "{}x{}".format(height, width), "--out", str(tmp_path)]
    assert segexport(argv + ["--verify-inputs", "1"]) == 0
    frame = smooth_frame(90, 170, seed=2)
    expected = reference_labels(model, frame, height, width, name=name)
    assert len(np.unique(expected)) >= 5  # labels vary: agreement below is not trivial
    with segdeploy.Runtime(str(tmp_path / (name + ".ort"))) as runtime:
        labels = runtime.infer(frame)
    assert labels.shape == frame.shape[:2] and labels.dtype == np.uint8
    assert (labels == expected).mean() > 0.995
