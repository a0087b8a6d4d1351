"""Runtime on the engines segexport writes: the two halves of the user's main job joined."""

import numpy as np
import pytest

# Host side (segexport needs torch): skipped, not a collection error, in the torch-free device lane.
torch = pytest.importorskip("torch")
from runtime_support import reference_labels, smooth_frame, tiny_model  # noqa: E402

import segdeploy  # noqa: E402
from segdeploy.export.cli import main as segexport  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("segexport")
    model = tiny_model(seed=3)
    torch.save(model.state_dict(), out / "tiny.pth")
    code = segexport(
        [
            "--model",
            "regseg_tiny",
            "--checkpoint",
            str(out / "tiny.pth"),
            "--res",
            "64x128",
            "--out",
            str(out),
            "--verify-inputs",
            "1",
            "--backend",  # the tests open the .ort engine
            "onnxruntime",
        ]
    )
    assert code == 0
    return out, model


@pytest.mark.parametrize("engine", ["regseg_tiny.ort", "regseg_tiny.onnx"])
def test_label_map_of_the_frame_size(exported, engine):
    out, model = exported
    frame = smooth_frame(90, 170, seed=1)  # not the network size: the runtime resizes both ways
    with segdeploy.Runtime(str(out / engine)) as runtime:
        labels = runtime.infer(frame)
        assert runtime.input_size == (64, 128)
    assert labels.shape == (90, 170) and labels.dtype == np.uint8
    expected = reference_labels(model, frame, 64, 128)
    assert (labels == expected).mean() > 0.99
    assert len(np.unique(labels)) > 1  # a constant map would make the comparison meaningless
