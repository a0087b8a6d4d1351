"""RegSeg against golden outputs of the official implementation (scripts/make_golden.py)."""

import os

import numpy as np
import pytest
import torch

from segdeploy.models import build
from segdeploy.models.golden import deterministic_state, probe_input

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def test_parameter_count_is_published_figure():
    model = build("regseg")
    assert sum(p.numel() for p in model.parameters()) == 3_334_951


def test_dilations_as_published():
    body = build("regseg").body
    dilations = []
    for block in list(body.stage16)[1:]:
        conv2 = block.conv2
        convs = conv2.convs if hasattr(conv2, "convs") else [conv2]
        dilations.append(tuple(c.dilation[0] for c in convs))
    assert dilations == [(1,), (1, 2)] + 4 * [(1, 4)] + 7 * [(1, 14)]


def test_strided_shortcuts_average_pool():
    model = build("regseg")
    strided = [model.body.stage4, model.body.stage8[0], model.body.stage16[0]]
    for block in strided:
        assert isinstance(block.shortcut.avg, torch.nn.AvgPool2d)
        assert block.shortcut.avg.ceil_mode
        assert block.shortcut.conv.stride == (1, 1)


@pytest.mark.parametrize("name,kwargs", [("regseg", {}), ("regseg_camvid", {"num_classes": 11})])
def test_identical_to_official(name, kwargs):
    golden = np.load(os.path.join(GOLDEN, name + ".npz"))
    model = build("regseg", **kwargs)
    state = model.state_dict()
    # same keys in the same order, same shapes
    assert list(state) == list(golden["keys"])
    assert [",".join(map(str, t.shape)) for t in state.values()] == list(golden["shapes"])
    # strict load of an official-format state_dict, then the same outputs
    model.load_state_dict(deterministic_state(model), strict=True)
    x = torch.from_numpy(probe_input(tuple(golden["input_shape"])))
    with torch.no_grad():
        logits = model(x).numpy()
    assert logits.shape[-2:] == x.shape[-2:]
    np.testing.assert_allclose(logits[:, :, ::4, ::4], golden["logits_sub"], rtol=1e-4, atol=1e-5)
    assert (logits.argmax(1) == golden["labels"]).mean() > 0.999


@pytest.mark.parametrize("hw", [(64, 128), (96, 160)])
def test_logits_at_input_resolution(hw):
    model = build("regseg_tiny")
    with torch.no_grad():
        out = model(torch.zeros(2, 3, *hw))
    assert out.shape == (2, 19, *hw)
