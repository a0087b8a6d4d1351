"""DeepLabV3+ against golden outputs of DeepLabV3Plus-Pytorch (scripts/make_golden.py)."""

import os

import numpy as np
import pytest
import torch

from segdeploy.errors import CheckpointError, SegDeployError
from segdeploy.models import build, get_spec, load_checkpoint
from segdeploy.models.golden import deterministic_state, probe_input
from segdeploy.models.registry import IMAGENET_MEAN, IMAGENET_STD

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")

# golden file -> (zoo name, builder kwargs)
CASES = {
    "deeplabv3plus_resnet50": ("deeplabv3plus_resnet50", {"output_stride": 16}),
    "deeplabv3plus_resnet50_os8": ("deeplabv3plus_resnet50", {"output_stride": 8}),
    "deeplabv3plus_resnet101": ("deeplabv3plus_resnet101", {"output_stride": 16}),
    "deeplabv3plus_mobilenet": ("deeplabv3plus_mobilenet", {"output_stride": 16}),
    "deeplabv3plus_mobilenet_os8": ("deeplabv3plus_mobilenet", {"output_stride": 8}),
}


def _run(golden_name, mutate=None):
    name, kwargs = CASES[golden_name]
    golden = np.load(os.path.join(GOLDEN, golden_name + ".npz"))
    model = build(name, **kwargs)
    model.load_state_dict(deterministic_state(model), strict=True)
    if mutate is not None:
        mutate(model)
    x = torch.from_numpy(probe_input(tuple(golden["input_shape"])))
    with torch.no_grad():
        logits = model(x).numpy()
    return model, golden, logits


def _matches(logits, golden):
    sub = logits[:, :, ::4, ::4]
    return np.allclose(sub, golden["logits_sub"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("golden_name", sorted(CASES))
def test_identical_to_official(golden_name):
    model, golden, logits = _run(golden_name)
    state = model.state_dict()
    assert list(state) == list(golden["keys"])
    assert [",".join(map(str, t.shape)) for t in state.values()] == list(golden["shapes"])
    assert logits.shape == (1, 19) + tuple(golden["input_shape"][-2:])
    np.testing.assert_allclose(logits[:, :, ::4, ::4], golden["logits_sub"], rtol=1e-4, atol=1e-5)
    assert (logits.argmax(1) == golden["labels"]).mean() > 0.999


def _torchvision_padding(model):
    # one block padded torchvision's way (in the depthwise conv) instead of on its input
    block = model.backbone.high_level_features._modules["15"]
    dw = block.conv[1][0]
    block.input_padding = None
    dw.padding = dw.dilation


def _one_undilated_conv(model):
    conv = model.backbone.layer4[2].conv2
    conv.padding, conv.dilation = (1, 1), (1, 1)


@pytest.mark.parametrize(
    "golden_name,mutate",
    [
        ("deeplabv3plus_mobilenet_os8", _torchvision_padding),
        ("deeplabv3plus_resnet50", _one_undilated_conv),
    ],
)
def test_golden_comparison_catches_one_padding(golden_name, mutate):
    _, golden, logits = _run(golden_name, mutate)
    assert not _matches(logits, golden)


def test_output_stride_and_rates():
    for os_, rates, dilations in [(16, (6, 12, 18), (1, 1, 2)), (8, (12, 24, 36), (1, 2, 4))]:
        model = build("deeplabv3plus_resnet50", output_stride=os_)
        aspp = model.classifier.aspp.convs
        assert tuple(aspp[i][0].dilation[0] for i in (1, 2, 3)) == rates
        layers = (model.backbone.layer2, model.backbone.layer3, model.backbone.layer4)
        assert tuple(layer[-1].conv2.dilation[0] for layer in layers) == dilations
        with torch.no_grad():
            low, high = model.backbone(torch.zeros(1, 3, 64, 128))
        assert high.shape[-2:] == (64 // os_, 128 // os_) and low.shape[-2:] == (16, 32)
    with pytest.raises(SegDeployError, match="output_stride"):
        build("deeplabv3plus_mobilenet", output_stride=32)


def test_implementation_quirks_kept():
    model = build("deeplabv3plus_mobilenet")
    stem = model.backbone.low_level_features._modules["0"][0]
    assert stem.padding == (0, 0)  # no padding on the stem conv: 64x128 -> 31x63
    block = model.backbone.high_level_features._modules["4"]
    assert block.input_padding == (1, 1, 1, 1) and block.conv[1][0].padding == (0, 0)
    decoder = model.classifier.classifier
    assert [m.kernel_size for m in decoder if isinstance(m, torch.nn.Conv2d)] == [(3, 3), (1, 1)]


def test_preprocessing_is_imagenet_rgb():
    for name in ("deeplabv3plus_resnet50", "deeplabv3plus_resnet101", "deeplabv3plus_mobilenet"):
        spec = get_spec(name)
        assert spec.channel_order == "RGB" and spec.input_scale == pytest.approx(1 / 255)
        assert spec.mean == IMAGENET_MEAN and spec.std == IMAGENET_STD


@pytest.mark.parametrize("hw", [(64, 128), (97, 161)])
def test_tiny_returns_input_resolution(hw):
    with torch.no_grad():
        out = build("deeplabv3plus_tiny")(torch.rand(2, 3, *hw))
    assert out.shape == (2, 19) + hw


def test_model_state_checkpoint_loads_strictly(tmp_path):
    source = build("deeplabv3plus_mobilenet")
    source.load_state_dict(deterministic_state(source))
    path = tmp_path / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth"
    torch.save({"cur_itrs": 30000, "model_state": source.state_dict(), "best_score": 0.72}, path)
    model = load_checkpoint(build("deeplabv3plus_mobilenet"), str(path))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    # a VOC checkpoint (21 classes) into a 19-class model says so
    voc = build("deeplabv3plus_mobilenet", num_classes=21)
    torch.save({"model_state": voc.state_dict()}, tmp_path / "voc.pth")
    with pytest.raises(CheckpointError, match="num_classes=21"):
        load_checkpoint(build("deeplabv3plus_mobilenet"), str(tmp_path / "voc.pth"))
