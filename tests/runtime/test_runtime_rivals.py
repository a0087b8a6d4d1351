"""Runtime on segexport's engines of the rival families (DDRNet, PIDNet), from checkpoints in
their official training format (HRNet FullModel with the training-only heads)."""

import numpy as np
import pytest

# Host side (segexport needs torch): skipped, not a collection error, in the torch-free device lane.
torch = pytest.importorskip("torch")
from runtime_support import reference_labels, smooth_frame, tiny_model  # noqa: E402

import segdeploy  # noqa: E402
from segdeploy.export.cli import main as segexport  # noqa: E402

HEADS = {"ddrnet_tiny": ["seghead_extra"], "pidnet_tiny": ["seghead_p", "seghead_d"]}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_official_format_checkpoint_to_runtime_labels(tmp_path, capsys, name):
    model = tiny_model(seed=1, name=name)
    state = {"model." + k: v for k, v in model.state_dict().items()}
    for head in HEADS[name]:  # what the released checkpoints carry besides the network
        state["model.{}.conv2.weight".format(head)] = torch.ones(19, 16, 1, 1)
        state["model.{}.conv2.bias".format(head)] = torch.zeros(19)
    state["sem_loss.criterion.weight"] = torch.ones(19)
    torch.save({"state_dict": state}, tmp_path / "best.pth")
    argv = ["--model", name, "--checkpoint", tmp_path / "best.pth", "--res", "64x128"]
    argv += ["--out", tmp_path / "o", "--verify-inputs", "1", "--backend", "onnxruntime"]
    assert segexport([str(a) for a in argv]) == 0
    captured = capsys.readouterr()
    line = [x for x in (captured.out + captured.err).splitlines() if "training-only head" in x]
    assert len(line) == 1 and all(h in line[0] for h in HEADS[name]), line
    frame = smooth_frame(90, 170, seed=2)  # not the network size: resized both ways
    with segdeploy.Runtime(str(tmp_path / "o" / (name + ".ort"))) as runtime:
        labels = runtime.infer(frame)
    assert labels.shape == (90, 170) and labels.dtype == np.uint8
    expected = reference_labels(model, frame, 64, 128, name)
    assert len(np.unique(expected)) >= 5
    assert (labels == expected).mean() > 0.99
