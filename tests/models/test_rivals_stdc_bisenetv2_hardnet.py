"""STDC-Seg, BiSeNetV2 and FC-HarDNet-70 against golden outputs of their official code.

The golden files come from ``scripts/make_golden.py`` run on MichaelFan01/STDC-Seg,
CoinCheung/BiSeNet and PingoLH/FCHarDNet, each model built with every head its released
checkpoints carry; they hold the official keys and shapes and the logits at two input sizes.
"""

import copy
import os

import numpy as np
import pytest
import torch

from segdeploy.bench.counting import complexity
from segdeploy.errors import CheckpointError
from segdeploy.models import build, get_spec, load_checkpoint
from segdeploy.models.fchardnet import harmonic_links
from segdeploy.models.golden import deterministic_state, probe_input
from segdeploy.models.stdc import HeadBatchNorm

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
RIVALS = ["stdc1_seg", "stdc2_seg", "bisenetv2", "fchardnet70"]


def _golden(name):
    return np.load(os.path.join(GOLDEN, name + ".npz"))


def _official_keys(golden):
    return [str(k) for k in golden["keys"]], [str(s) for s in golden["shapes"]]


@pytest.mark.parametrize("name", RIVALS)
def test_keys_and_shapes_are_the_official_ones_less_training_heads(name):
    golden = _golden(name)
    keys, shapes = _official_keys(golden)
    prefixes = get_spec(name).training_only
    # every declared prefix names something the official checkpoint has ...
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in keys), prefix
    # ... and the model has exactly the other keys, in the official order, with their shapes
    kept = [(k, s) for k, s in zip(keys, shapes) if not k.startswith(prefixes)]
    state = build(name).state_dict()
    assert list(state) == [k for k, _ in kept]
    assert [",".join(map(str, t.shape)) for t in state.values()] == [s for _, s in kept]


@pytest.fixture(scope="module")
def golden_models():
    """name -> model with the golden files' deterministic weights (built once per module)."""
    cache = {}

    def get(name):
        if name not in cache:
            model = build(name)
            model.load_state_dict(deterministic_state(model), strict=True)
            cache[name] = model
        return cache[name]

    return get


def _logits(model, shape):
    x = torch.from_numpy(probe_input(tuple(shape)))
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.parametrize("name", RIVALS)
def test_outputs_identical_to_official_at_two_sizes(golden_models, name):
    golden = _golden(name)
    for suffix in ("", "_2"):
        shape = tuple(golden["input_shape" + suffix])
        logits = _logits(golden_models(name), shape)
        assert logits.shape == (1, 19) + shape[-2:]
        ref = golden["logits_sub" + suffix]
        # FP32, same operations: within 1e-5 of the output's scale
        assert np.abs(logits[:, :, ::4, ::4] - ref).max() <= 1e-5 * np.abs(ref).max()
        assert abs(logits.mean() - golden["logits_mean" + suffix]) < 1e-6
        assert (logits.argmax(1) == golden["labels" + suffix]).mean() > 0.999


@pytest.mark.parametrize(
    "name,deep",
    [
        ("stdc1_seg", ("cp.backbone.features.6", "cp.backbone.features.7")),  # the 1/32 stage
        ("bisenetv2", ("segment.S5_4",)),
        ("fchardnet70", ("denseBlocksUp.0",)),  # the decoder's 1/32 block
    ],
)
def test_golden_catches_a_deep_bn_eps_change(golden_models, name, deep):
    """The comparison above can fail: BatchNorm eps 1e-3 instead of 1e-5 in deep layers moves
    the logits at least 10x past its tolerance."""
    golden = _golden(name)
    model = copy.deepcopy(golden_models(name))
    changed = 0
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d) and module_name.startswith(deep):
            module.eps = 1e-3
            changed += 1
    assert changed > 0
    logits = _logits(model, golden["input_shape"])[:, :, ::4, ::4]
    ref = golden["logits_sub"]
    assert np.abs(logits - ref).max() > 1e-4 * np.abs(ref).max()


# (params, multiply-adds, fvcore FLOPs) of the deployment form, measured with
# bench.complexity at the resolution the papers use; set beside the papers' figures in
# ``segbench --zoo``.
MEASURED = {
    "stdc1_seg": ((512, 1024), 8_275_104, 16_863_133_696, 16_957_899_520),
    "stdc2_seg": ((768, 1536), 12_305_568, 52_777_058_304, 53_025_669_888),
    "bisenetv2": ((512, 1024), 3_358_627, 24_603_312_128, 24_747_033_088),
    "fchardnet70": ((1024, 2048), 4_119_257, 35_217_426_432, 35_627_520_000),
}


@pytest.mark.parametrize("name", RIVALS)
def test_parameters_and_multiply_adds(name):
    hw, params, macs, flops = MEASURED[name]
    count = complexity(build(name), hw)
    assert (count.params, count.macs, count.flops_fvcore) == (params, macs, flops)


def test_measured_figures_beside_the_papers():
    # FC-HarDNet-70: RegSeg Table 9's 4.12 M / 35.6 GFLOPs are fvcore-style counts of the model
    _, params, _, flops = MEASURED["fchardnet70"]
    paper = get_spec("fchardnet70").paper
    assert round(params / 1e4) / 100 == paper["params"] / 1e6
    assert round(flops / 1e8) / 10 == paper["flops_fvcore"] / 1e9
    # STDC2-Seg75: Table 9's 16.1 M counts every official parameter (ImageNet classifier and
    # detail heads included), which the deployment form does not build
    golden = _golden("stdc2_seg")
    official = sum(int(np.prod([int(d) for d in s.split(",") if d])) for s in golden["shapes"])
    aliases = sum(  # x2..x32 repeat features.*; running stats are not parameters
        int(np.prod([int(d) for d in s.split(",") if d]))
        for k, s in zip(golden["keys"], golden["shapes"])
        if k.startswith("cp.backbone.x") or "running_" in k or "num_batches" in k
    )
    assert round((official - aliases) / 1e5) / 10 == get_spec("stdc2_seg").paper["params"] / 1e6
    assert MEASURED["stdc2_seg"][1] < 0.8 * (official - aliases)


@pytest.mark.parametrize("name", RIVALS)
def test_official_checkpoint_with_training_heads_loads_with_one_line(
    tmp_path, capsys, caplog, golden_models, name
):
    """An official-format checkpoint (every head) loads, the training-only heads dropped with
    one line naming them; a foreign key is still refused. (Needs the loader of branch
    rivals-a, which implements ``ModelSpec.training_only``.)"""
    golden = _golden(name)
    keys, shapes = _official_keys(golden)
    ours = golden_models(name).state_dict()
    model = build(name)
    state = {}
    for key, shape in zip(keys, shapes):
        dims = [int(d) for d in shape.split(",") if d]
        state[key] = ours[key] if key in ours else torch.zeros(dims)
    # the official save formats: plain state_dicts, FCHarDNet's DataParallel 'model_state'
    wrap = {"fchardnet70": lambda sd: {"model_state": {"module." + k: v for k, v in sd.items()}}}
    wrap = wrap.get(name, lambda sd: sd)
    path = tmp_path / "official.pth"
    torch.save(wrap(state), path)
    loaded = load_checkpoint(model, str(path))
    assert all(torch.equal(v, ours[k]) for k, v in loaded.state_dict().items())
    printed = capsys.readouterr()
    text = printed.out + printed.err + "".join(r.getMessage() + "\n" for r in caplog.records)
    lines = [line for line in text.splitlines() if line.strip()]
    prefixes = get_spec(name).training_only
    if prefixes:  # one line naming what was dropped
        assert len(lines) == 1
        assert any(p.rstrip(".") in lines[0] for p in prefixes)
    else:
        assert lines == []

    state["decoder.foreign.weight"] = torch.zeros(3)
    torch.save(wrap(state), path)
    with pytest.raises(CheckpointError, match="decoder.foreign.weight"):
        load_checkpoint(build(name), str(path))


def test_stdc_head_batchnorm_has_inplace_abn_keys_and_loads_old_format():
    bn = HeadBatchNorm(4)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    state = {k: torch.full((4,), 2.0) for k in bn.state_dict()}
    bn.load_state_dict(state, strict=True)  # no num_batches_tracked injected and refused
    assert torch.equal(bn.running_var, torch.full((4,), 2.0))
    bn.train()
    bn(torch.randn(2, 4, 3, 3))  # training forward works without the counter


def test_stdc_seg50_seg75_are_resolutions_of_one_network():
    for name in ("stdc1_seg", "stdc2_seg"):
        paper = get_spec(name).paper
        assert paper["resolutions"] == {"Seg50": (512, 1024), "Seg75": (768, 1536)}
        assert tuple(paper["resolution"]) in paper["resolutions"].values()


def test_stdc_backbone_stage_views_share_modules():
    backbone = build("stdc2_seg").cp.backbone
    assert backbone.x8[0][0] is backbone.features[2]
    assert len(backbone.features) == 2 + 4 + 5 + 3
    assert [len(getattr(backbone, "x%d" % s)[0]) for s in (2, 4, 8, 16, 32)] == [1, 1, 4, 5, 3]


def test_hardnet_links_follow_powers_of_two():
    # layer 4 reads layers 3, 2 and 0; its width is 10 * 1.7 * 1.7 = 28.9, made even (28);
    # layer 2 (17 -> 18) reads 1 and 0, layer 3 (10) reads 2
    assert harmonic_links(2, 48, 10, 1.7) == (18, 10 + 48, [1, 0])
    assert harmonic_links(3, 48, 10, 1.7) == (10, 18, [2])
    assert harmonic_links(4, 48, 10, 1.7) == (28, 10 + 18 + 48, [3, 2, 0])


def test_preprocessing_follows_the_official_loaders():
    assert get_spec("stdc1_seg").channel_order == "RGB"
    assert get_spec("bisenetv2").mean == (0.3257, 0.3690, 0.3223)
    hardnet = get_spec("fchardnet70")
    assert hardnet.channel_order == "BGR" and hardnet.mean == (0.406, 0.456, 0.485)
