"""STDC-Seg, BiSeNetV2 and FC-HarDNet-70 through the user's main job: segexport with an INT8
accuracy budget, then Runtime on the FP32 engine it wrote.

With these random weights STDC1-Seg and FC-HarDNet-70 meet the 99 % budget at once; BiSeNetV2 does
not (about 82 % agreement, and keeping half its nodes FP32 reaches only 89 %): its random-weight
labels are decided by small margins (median top-2 gap 3.7 % of the logit range, against 10 % for
STDC1), and a per-tensor INT8 simulation of its conv inputs in PyTorch agrees only 93 % too, spread
over every part of the network. The test checks that the budget is applied and reported
faithfully, not that a random BiSeNetV2 fits it; a trained checkpoint is needed for that.

These models bring what the older zoo lacks: sigmoid-gated aggregation (BiSeNetV2's BGA, STDC's
attention and fusion gates), count-include-pad average pools, fixed x4 nearest upsampling, a
BatchNorm on a pooled 1x1 map, BGR input (FC-HarDNet). Weights are random with varied BatchNorm
statistics so the labels vary (asserted), else agreement would be trivial.
"""

import numpy as np
import pytest

# the device lane (tests/device) collects tests/runtime without torch and onnx: skip, not fail
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from runtime_support import reference_labels, smooth_frame, tiny_model  # noqa: E402

import segdeploy  # noqa: E402
import segdeploy.models  # noqa: E402
from segdeploy.bench.frames import write_scenes  # noqa: E402
from segdeploy.card import read_onnx_card as read_card  # noqa: E402
from segdeploy.export.cli import main as segexport  # noqa: E402

H, W = 64, 128


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib")
    write_scenes(str(folder), 8, H, W)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name", ["stdc1_seg", "bisenetv2", "fchardnet70"])
def test_int8_budget_and_runtime_on_the_exported_engine(tmp_path, calib, name):
    model = tiny_model(seed=3, num_classes=19, name=name)
    torch.save(model.state_dict(), tmp_path / "ckpt.pth")
    argv = ["--model", name, "--checkpoint", str(tmp_path / "ckpt.pth")]
    argv += ["--res", "{}x{}".format(H, W), "--out", str(tmp_path), "--verify-inputs", "1"]
    argv += ["--int8", "--calib", str(calib), "--backend", "onnxruntime", "--budget", "99:40"]
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SEGDEPLOY_CPU_ENGINES", raising=False)
        assert segexport(argv) == 0
    quant = read_card(onnx.load(str(tmp_path / (name + ".int8.onnx"))))["quantization"]
    assert quant["fp32_classes_on_heldout"] >= 5  # labels vary: the agreement means something
    # every attempt judged against the budget, the verdict the last attempt's
    budget = quant["budget"]
    for attempt in quant["attempts"]:
        fits = attempt["label_agreement"] >= budget["min_agreement"]
        fits = fits and attempt["max_iou_drop"] <= budget["max_iou_drop"]
        assert attempt["within_budget"] == fits
    assert quant["within_budget"] == quant["attempts"][-1]["within_budget"]
    assert quant["verdict"].startswith("within budget" if quant["within_budget"] else "OVER")

    frame = smooth_frame(90, 170, seed=2)
    # reference_labels feeds RGB; a BGR model (FC-HarDNet) gets the frame's channels swapped
    bgr_model = segdeploy.models.get_spec(name).channel_order == "BGR"
    expected = reference_labels(model, frame[:, :, ::-1] if bgr_model else frame, H, W, name=name)
    assert len(np.unique(expected)) >= 5  # labels vary: agreement below is not trivial
    with segdeploy.Runtime(str(tmp_path / (name + ".onnx"))) as runtime:
        labels = runtime.infer(frame)
    assert labels.shape == frame.shape[:2] and labels.dtype == np.uint8
    assert (labels == expected).mean() > 0.995
