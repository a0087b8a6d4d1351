"""TI's Lite models and LR-ASPP against golden outputs of the official implementations.

Golden files come from ``scripts/make_golden.py`` run on TI's edgeai-torchvision (+ the xnn layers
of edgeai-modeloptimization) and on torchvision's own ``lraspp_mobilenet_v3_large``.
"""

import os

import numpy as np
import pytest
import torch

from segdeploy.bench.counting import complexity
from segdeploy.models import build, get_spec, load_checkpoint
from segdeploy.models.golden import deterministic_state, probe_input

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
LITE = ["ti_deeplabv3lite_mnv2", "ti_unetlite_mnv2", "ti_fpnlite_mnv2"]
ALL = LITE + ["lraspp_mobilenet_v3_large"]


@pytest.mark.parametrize("name", ALL)
def test_identical_to_official(name):
    golden = np.load(os.path.join(GOLDEN, name + ".npz"))
    model = build(name)
    model.load_state_dict(deterministic_state(model), strict=True)
    state = model.state_dict()
    # the official checkpoints' keys, in their order, with their shapes
    assert list(state) == list(golden["keys"])
    assert [",".join(map(str, t.shape)) for t in state.values()] == list(golden["shapes"])
    x = torch.from_numpy(probe_input(tuple(golden["input_shape"])))
    with torch.no_grad():
        logits = model(x).numpy()
    assert logits.shape == (1, get_spec(name).num_classes) + tuple(x.shape[-2:])
    np.testing.assert_allclose(logits[:, :, ::4, ::4], golden["logits_sub"], rtol=1e-4, atol=1e-5)
    assert abs(logits.mean() - golden["logits_mean"]) < 1e-5
    assert (logits.argmax(1) == golden["labels"]).mean() > 0.999


# (params, conv multiply-adds, input size): TI's model-zoo table (3.54 / 2.20 / 3.84 GigaMACs at
# 768x384) and torchvision's LR-ASPP (2.1 GFLOPs at 520), counted exactly on the official code
FIGURES = {
    "ti_deeplabv3lite_mnv2": (2_425_024, 3_545_358_336, (384, 768)),
    "ti_unetlite_mnv2": (2_465_836, 2_204_264_448, (384, 768)),
    "ti_fpnlite_mnv2": (2_669_376, 3_767_298_048, (384, 768)),
    "lraspp_mobilenet_v3_large": (3_221_538, 2_086_219_688, (520, 520)),
}


@pytest.mark.parametrize("name", ALL)
def test_parameters_and_multiply_adds(name):
    params, macs, size = FIGURES[name]
    count = complexity(build(name), size)
    assert count.params == params
    assert count.by_op["conv"] == macs
    assert tuple(get_spec(name).paper["resolution"]) == size


@pytest.mark.parametrize("name", ["ti_fpnlite_mnv2", "lraspp_mobilenet_v3_large"])
def test_checkpoint_in_official_layout_loads_strictly(tmp_path, name):
    model = build(name)
    state = deterministic_state(model)
    # TI's and torchvision's training scripts save {"model"/"state_dict": ...}, DataParallel adds
    # "module."; load_checkpoint takes each
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    fresh = build(name)
    load_checkpoint(fresh, str(path))
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_lraspp_takes_any_input_size():
    # both upsamplings go to explicit sizes: odd sizes give logits of the input's size
    model = build("lraspp_mobilenet_v3_large")
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 97, 131)).shape == (1, 21, 97, 131)


def test_ti_preprocessing_is_tis_training_default():
    spec = get_spec("ti_unetlite_mnv2")
    # (pixel - 128) / 64 on RGB: train_pixel2pixel.py's image_mean / image_scale
    assert spec.channel_order == "RGB" and spec.input_scale == 1.0
    assert spec.mean == (128.0,) * 3 and spec.std == (64.0,) * 3
    assert get_spec("lraspp_mobilenet_v3_large").dataset == "voc"
