"""DDRNet and PIDNet against golden outputs of the official implementations (ydhongHIT/DDRNet,
XuJiacong/PIDNet; scripts/make_golden.py), and loading their released checkpoints' format."""

import os

import numpy as np
import pytest
import torch

from segdeploy.bench.counting import complexity
from segdeploy.errors import CheckpointError
from segdeploy.models import build, get_spec, load_checkpoint
from segdeploy.models.golden import deterministic_state, probe_input

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
RIVALS = ["ddrnet23_slim", "ddrnet23", "pidnet_s", "pidnet_m", "pidnet_l"]

# params and conv/linear multiply-adds at 1024x2048 of the official deployment forms,
# counted with bench.counting.complexity on the official code (the golden files hold them too)
OFFICIAL_COUNTS = {
    "ddrnet23_slim": (5_695_987, 36_281_319_424),
    "ddrnet23": (20_148_947, 143_060_500_480),
    "pidnet_s": (7_625_715, 47_194_226_688),
    "pidnet_m": (28_538_515, 177_328_717_824),
    "pidnet_l": (36_939_571, 274_933_465_088),
}


def _golden(name):
    return np.load(os.path.join(GOLDEN, name + ".npz"))


def _shapes(state):
    return [",".join(map(str, t.shape)) for t in state.values()]


@pytest.mark.parametrize("name", RIVALS)
def test_identical_to_official(name):
    golden = _golden(name)
    model = build(name)
    state = model.state_dict()
    # the deployment form's keys, in the official order, with the official shapes
    assert list(state) == list(golden["keys"])
    assert _shapes(state) == list(golden["shapes"])
    model.load_state_dict(deterministic_state(model), strict=True)
    for suffix in ("", "_2"):  # 64x128 and 96x160
        x = torch.from_numpy(probe_input(tuple(golden["input_shape" + suffix])))
        with torch.no_grad():
            logits = model(x).numpy()
        assert logits.shape == (1, 19) + tuple(x.shape[-2:])
        ref = golden["logits_sub" + suffix]
        scale = float(np.abs(ref).max())
        assert np.abs(logits[:, :, ::4, ::4] - ref).max() <= 1e-5 * scale
        assert (logits.argmax(1) == golden["labels" + suffix]).mean() > 0.999


@pytest.mark.parametrize("name", RIVALS)
def test_complexity_as_the_official_code(name):
    golden = _golden(name)
    count = complexity(build(name), tuple(golden["complexity_hw"]))
    assert (count.params, count.macs) == OFFICIAL_COUNTS[name]
    assert (count.params, count.macs) == (golden["official_params"], golden["official_macs"])


def test_papers_counting_conventions():
    # DDRNet's "GFLOPs" (and RegSeg Table 9's 143.1 for DDRNet-23) are conv multiply-adds
    for name in ("ddrnet23_slim", "ddrnet23"):
        paper = get_spec(name).paper
        params, macs = OFFICIAL_COUNTS[name]
        assert round(params / 1e5) / 10 == paper["params"] / 1e6
        assert round(macs / 1e8) / 10 == paper["macs"] / 1e9
    # PIDNet's are fvcore's (multiply-adds + BatchNorm + resizes): S and L agree within 0.2 %
    for name in ("pidnet_s", "pidnet_l"):
        paper = get_spec(name).paper
        count = complexity(build(name), (1024, 2048))
        assert round(count.params / 1e5) / 10 == paper["params"] / 1e6
        assert abs(count.flops_fvcore / paper["flops_fvcore"] - 1) < 0.002
        # ... closer than multiply-adds alone (0.9 % and 0.3 % off)
        assert abs(count.flops_fvcore - paper["flops_fvcore"]) < abs(
            count.macs - paper["flops_fvcore"]
        )


def test_the_official_evaluations_resize_is_in_the_graph():
    # DDRNet's eval resizes with align_corners=False, PIDNet's with True: outputs at input size
    # that differ from the other convention's resize of the same 1/8 logits
    x = torch.from_numpy(probe_input((1, 3, 64, 128)))
    for name, corners in (("ddrnet_tiny", False), ("pidnet_tiny", True)):
        model = build(name)
        model.load_state_dict(deterministic_state(model))
        captured = []
        hook = model.final_layer.register_forward_hook(lambda m, i, o, c=captured: c.append(o))
        with torch.no_grad():
            out = model(x)
        hook.remove()
        low = captured[0]
        assert low.shape[-2:] == (8, 16)
        for ac in (corners, not corners):
            ref = torch.nn.functional.interpolate(
                low, size=(64, 128), mode="bilinear", align_corners=ac
            )
            assert torch.allclose(out, ref, atol=1e-6) == (ac == corners)
    for name, corners in (("ddrnet23", False), ("pidnet_s", True)):
        assert "align_corners={}".format(corners) in get_spec(name).paper["upsample"]


def _official_checkpoint(name, model, extra=None):
    """A state_dict in the released checkpoints' format: HRNet FullModel (``model.`` + the loss's
    class weights), with the training-only heads of the golden file."""
    golden = _golden(name)
    state = {"model." + k: v.clone() for k, v in model.state_dict().items()}
    for key, shape in zip(golden["training_only_keys"], golden["training_only_shapes"]):
        size = tuple(int(s) for s in str(shape).split(",") if s)
        state["model." + str(key)] = torch.ones(size)
    loss = "loss.criterion.weight" if name.startswith("ddrnet") else "sem_loss.criterion.weight"
    state[loss] = torch.ones(19)
    state.update(extra or {})
    return state


@pytest.mark.parametrize(
    "name,heads", [("ddrnet23_slim", "seghead_extra"), ("pidnet_s", "seghead_p, seghead_d")]
)
def test_official_checkpoint_loads_with_one_line(tmp_path, capsys, name, heads):
    torch.manual_seed(0)
    source = build(name)
    source.load_state_dict(deterministic_state(source))
    path = tmp_path / "best.pth"
    torch.save({"state_dict": _official_checkpoint(name, source)}, path)
    target = load_checkpoint(build(name), str(path))
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "training-only heads" in err if "," in heads else "training-only head " in err
    assert heads in err and "best.pth" in err and "criterion.weight" in err
    assert target.segdeploy_checkpoint_dropped[: heads.count(",") + 1] == tuple(
        h + "." for h in heads.split(", ")
    )


@pytest.mark.parametrize(
    "foreign",
    [
        "model.seghead_extra2.conv1.weight",  # not under a declared prefix
        "model.final_layer.conv3.weight",
        "optimizer.state",  # breaks the FullModel form: nothing matches
    ],
)
def test_foreign_key_is_refused(tmp_path, capsys, foreign):
    source = build("ddrnet23_slim")
    path = tmp_path / "odd.pth"
    torch.save(_official_checkpoint("ddrnet23_slim", source, {foreign: torch.zeros(3)}), path)
    with pytest.raises(CheckpointError, match="unexpected key"):
        load_checkpoint(build("ddrnet23_slim"), str(path))
    assert capsys.readouterr().err == ""


def test_missing_key_is_refused_even_with_training_heads(tmp_path):
    source = build("pidnet_s")
    state = _official_checkpoint("pidnet_s", source)
    del state["model.final_layer.conv2.bias"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="1 missing key"):
        load_checkpoint(build("pidnet_s"), str(path))


def test_training_heads_are_only_dropped_for_the_models_declaring_them(tmp_path):
    # PIDNet's heads in a DDRNet checkpoint are foreign there
    source = build("ddrnet23_slim")
    extra = {"model.seghead_p.conv2.bias": torch.zeros(19)}
    path = tmp_path / "mixed.pth"
    torch.save(_official_checkpoint("ddrnet23_slim", source, extra), path)
    with pytest.raises(CheckpointError, match="seghead_p.conv2.bias"):
        load_checkpoint(build("ddrnet23_slim"), str(path))
    assert get_spec("ddrnet23_slim").training_only == ("seghead_extra.",)
    assert get_spec("pidnet_l").training_only == ("seghead_p.", "seghead_d.")
