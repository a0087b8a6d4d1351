"""The golden comparisons must be able to fail: a BatchNorm eps changed only in the deep layers
(the kind of slip that silently degrades a deployed checkpoint) must move the logits 10x past
the tolerance the golden tests use."""

import os

import numpy as np
import pytest
import torch

from segdeploy.models import build
from segdeploy.models.golden import deterministic_state, probe_input

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


@pytest.mark.parametrize(
    "name,deep_prefix",
    [
        ("swiftnet_rn18", ("backbone.layer3", "backbone.layer4")),
        ("regseg", ("body.stage16",)),
        ("ddrnet23_slim", ("layer4", "layer5", "spp")),
        ("pidnet_s", ("layer4", "layer5", "spp")),
    ],
)
def test_deep_bn_eps_change_is_caught(name, deep_prefix):
    golden = np.load(os.path.join(GOLDEN, name + ".npz"))
    model = build(name)
    model.load_state_dict(deterministic_state(model), strict=True)
    changed = 0
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d) and module_name.startswith(deep_prefix):
            module.eps = 1e-3
            changed += 1
    assert changed > 0, "the prefixes name no BatchNorm of {}".format(name)
    x = torch.from_numpy(probe_input(tuple(golden["input_shape"])))
    with torch.no_grad():
        logits = model(x).numpy()[:, :, ::4, ::4]
    ref = golden["logits_sub"]
    rel = np.abs(logits - ref).max() / np.abs(ref).max()
    assert rel > 1e-3, "an eps change in {} moved the logits by only {:.1e}".format(
        deep_prefix, rel
    )
