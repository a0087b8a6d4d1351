"""SwiftNet against golden outputs of the official implementation (scripts/make_golden.py)."""

import os

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from segdeploy.bench.counting import complexity
from segdeploy.models import build, get_spec, load_checkpoint
from segdeploy.models.golden import deterministic_state, probe_input
from segdeploy.models.swiftnet import SWIFTNET_MEAN, SWIFTNET_STD, spp_grid_pool

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def _golden_logits(name, golden_name, **kwargs):
    golden = np.load(os.path.join(GOLDEN, golden_name + ".npz"))
    model = build(name, **kwargs)
    model.load_state_dict(deterministic_state(model), strict=True)
    x = torch.from_numpy(probe_input(tuple(golden["input_shape"])))
    with torch.no_grad():
        logits = model(x).numpy()
    return model, golden, x, logits


@pytest.mark.parametrize("name", ["swiftnet_rn18", "swiftnet_rn18_pyramid"])
def test_identical_to_official(name):
    model, golden, x, logits = _golden_logits(name, name)
    state = model.state_dict()
    # same keys in the same order (the official checkpoints' keys), same shapes
    assert list(state) == list(golden["keys"])
    assert [",".join(map(str, t.shape)) for t in state.values()] == list(golden["shapes"])
    assert logits.shape == (1, 19) + tuple(x.shape[-2:])
    # our implementation reproduces the official one exactly; 1e-5 leaves room for other CPUs
    np.testing.assert_allclose(logits[:, :, ::4, ::4], golden["logits_sub"], rtol=1e-4, atol=1e-5)
    assert (logits.argmax(1) == golden["labels"]).mean() > 0.999


def test_published_parameters_and_multiply_adds():
    # the figures of the official single-scale model (paper Table 1: 11.8 M, 104 GFLOPs)
    count = complexity(build("swiftnet_rn18"), (1024, 2048))
    assert count.params == 11_797_071
    assert abs(count.macs - 103.57e9) <= 0.01e9


def test_mobilenet_variant_matches_paper_size():
    model = build("swiftnet_mnv2")
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e5) / 10 == get_spec("swiftnet_mnv2").paper["params"] / 1e6  # 2.4 M
    backbone = model.backbone
    # laterals from the last residual block of 1/4, 1/8, 1/16; SPP on the 320-channel block 17
    assert [u.bottleneck.conv.in_channels for u in backbone.upsample] == [96, 32, 24]
    assert backbone.spp.spp.spp_bn.conv.in_channels == 320
    assert len(backbone.features) == 18
    keys = model.state_dict()
    assert tuple(keys["backbone.features.1.conv.0.0.weight"].shape) == (32, 1, 3, 3)
    assert tuple(keys["backbone.features.17.conv.2.weight"].shape) == (320, 960, 1, 1)


def test_preprocessing_is_inside_the_model():
    for name in ("swiftnet_rn18", "swiftnet_rn18_pyramid", "swiftnet_mnv2"):
        spec = get_spec(name)
        # the official loaders feed 0-255 RGB (PIL convert('RGB')); the model subtracts/divides
        assert spec.channel_order == "RGB" and spec.input_scale == 1.0
        assert spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0)
        backbone = build(name).backbone
        assert torch.allclose(backbone.img_mean.flatten(), torch.tensor(SWIFTNET_MEAN))
        assert torch.allclose(backbone.img_std.flatten(), torch.tensor(SWIFTNET_STD))


def test_input_is_not_modified():
    model = build("swiftnet_tiny")
    x = torch.full((1, 3, 64, 128), 100.0)
    with torch.no_grad():
        model(x)
    assert torch.equal(x, torch.full_like(x, 100.0))  # the official forward normalises in place


@pytest.mark.parametrize("name", ["swiftnet_tiny", "swiftnet_rn18_pyramid", "swiftnet_mnv2"])
@pytest.mark.parametrize("hw", [(64, 128), (128, 256)])
def test_logits_at_input_resolution(name, hw):
    model = build(name)
    with torch.no_grad():
        out = model(torch.rand(2, 3, *hw) * 255)
    assert out.shape == (2, 19) + hw


def test_single_scale_takes_any_size():
    with torch.no_grad():
        out = build("swiftnet_tiny")(torch.rand(1, 3, 96, 160) * 255)
    assert out.shape == (1, 19, 96, 160)


@pytest.mark.parametrize("hw,rows", [((32, 64), 8), ((32, 64), 2), ((3, 5), 8), ((4, 5), 2)])
def test_spp_grid_is_the_official_adaptive_pooling(hw, rows):
    x = torch.randn(2, 4, *hw)
    cols = max(1, round(hw[1] / hw[0] * rows))  # (4, 5), 2: 2.5 rounds to 2, as Python does
    expected = F.adaptive_avg_pool2d(x, (rows, cols))
    torch.testing.assert_close(spp_grid_pool(x, rows), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("wrap", [lambda sd: sd, lambda sd: {"state_dict": sd}])
def test_official_checkpoint_formats_load_strictly(tmp_path, wrap):
    for name in ("swiftnet_tiny", "swiftnet_rn18_pyramid"):
        source = build(name)
        source.load_state_dict(deterministic_state(source))
        path = tmp_path / (name + ".pt")
        torch.save(wrap(source.state_dict()), path)
        model = load_checkpoint(build(name), str(path))
        assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())


def test_pyramid_laterals_are_pre_activation_single_scale_post():
    # official resnet_pyramid: non-in-place ReLU -> the skip is the pre-ReLU sum
    block = build("swiftnet_rn18_pyramid").backbone.layer1[0]
    relu, skip = block(torch.randn(1, 64, 8, 8), 0)
    assert (skip < 0).any() and torch.equal(relu, skip.clamp(min=0))
