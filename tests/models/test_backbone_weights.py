"""ImageNet weights in torchvision's format load into the zoo backbones."""

import pytest
import torch

from segdeploy.errors import CheckpointError, SegDeployError
from segdeploy.models import build, load_backbone_weights
from segdeploy.models.mobilenetv2 import mobilenet_v2_blocks
from segdeploy.models.resnet import resnet

# torchvision's documented parameter counts less the ImageNet classifier (and for MobileNetV2 the
# final 1x1 conv features.18, 320*1280 + 2*1280): the backbones are those networks
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512 - (512 * 1000 + 1000),
    "resnet50": 25_557_032 - (2048 * 1000 + 1000),
    "resnet101": 44_549_160 - (2048 * 1000 + 1000),
    "mobilenet_v2": 3_504_872 - (1280 * 1000 + 1000) - (320 * 1280 + 2 * 1280),
}


def _imagenet_file(tmp_path, arch, num_batches_tracked=True):
    """A state_dict with torchvision's key set for ``arch`` (random values), saved to a file."""
    torch.manual_seed(0)
    if arch == "mobilenet_v2":
        blocks = mobilenet_v2_blocks()
        state = torch.nn.Sequential(*blocks).state_dict()
        state = {"features." + k: v for k, v in state.items()}
        state.update(
            {
                "features.18.0.weight": torch.zeros(1280, 320, 1, 1),
                "features.18.1.weight": torch.ones(1280),
                "classifier.1.weight": torch.zeros(1000, 1280),
                "classifier.1.bias": torch.zeros(1000),
            }
        )
        width = 1280
    else:
        state = dict(resnet(arch).state_dict())
        width = 512 if arch == "resnet18" else 2048
        state.update({"fc.weight": torch.zeros(1000, width), "fc.bias": torch.zeros(1000)})
    assert (
        sum(
            v.numel()
            for k, v in state.items()
            if k.endswith(("weight", "bias"))
            and not k.startswith(("fc.", "classifier.", "features.18."))
        )
        == TORCHVISION_PARAMS[arch]
    )
    state = {k: (torch.randn_like(v) if v.is_floating_point() else v) for k, v in state.items()}
    if not num_batches_tracked:  # torchvision's older files predate num_batches_tracked
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / (arch + ".pth")
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize(
    "name,arch",
    [
        ("swiftnet_rn18", "resnet18"),
        ("swiftnet_mnv2", "mobilenet_v2"),
        ("deeplabv3plus_resnet50", "resnet50"),
        ("deeplabv3plus_mobilenet", "mobilenet_v2"),
    ],
)
def test_builder_kwarg_loads_backbone_only(tmp_path, name, arch):
    path, imagenet = _imagenet_file(tmp_path, arch, num_batches_tracked=arch != "resnet18")
    plain = build(name).state_dict()
    model = build(name, backbone_weights=str(path))
    key_map = model.backbone_key_map()
    state = model.state_dict()
    for model_key, tv_key in key_map.items():
        if tv_key in imagenet:
            assert torch.equal(state[model_key], imagenet[tv_key]), model_key
    # the decoder keeps its initialisation (same builder, same deterministic init for BNs)
    decoder = [k for k in state if k not in key_map and "running" in k]
    assert decoder and all(torch.equal(state[k], plain[k]) for k in decoder)
    # every torchvision backbone tensor found a home
    assert {k for k in imagenet if not k.startswith(("fc.", "classifier.", "features.18."))} == set(
        key_map.values()
    ) & set(imagenet)


def test_pyramid_levels_all_start_from_the_imagenet_batchnorm(tmp_path):
    path, imagenet = _imagenet_file(tmp_path, "resnet18")
    model = load_backbone_weights(build("swiftnet_rn18_pyramid"), str(path))
    state = model.state_dict()
    for level in range(3):
        assert torch.equal(state["backbone.bn1.{}.weight".format(level)], imagenet["bn1.weight"])
        assert torch.equal(
            state["backbone.layer3.1.bn2.{}.running_var".format(level)],
            imagenet["layer3.1.bn2.running_var"],
        )
    assert torch.equal(
        state["backbone.layer2.0.downsample.1.bias"], imagenet["layer2.0.downsample.1.bias"]
    )


def test_wrong_architecture_is_named(tmp_path):
    path, _ = _imagenet_file(tmp_path, "resnet50")
    with pytest.raises(CheckpointError, match="resnet18.*looks like torchvision resnet50"):
        load_backbone_weights(build("swiftnet_rn18"), str(path))
    path, _ = _imagenet_file(tmp_path, "resnet18")
    with pytest.raises(CheckpointError, match="mobilenet_v2.*looks like torchvision resnet18"):
        build("deeplabv3plus_mobilenet", backbone_weights=str(path))


def test_missing_and_misshapen_keys_are_listed(tmp_path):
    path, state = _imagenet_file(tmp_path, "resnet18")
    del state["layer4.1.conv2.weight"]
    state["layer1.0.bn1.weight"] = torch.ones(65)
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as err:
        load_backbone_weights(build("swiftnet_rn18"), str(path))
    text = str(err.value)
    assert "1 missing key(s): layer4.1.conv2.weight" in text
    assert "layer1.0.bn1.weight [65]" in text


def test_model_without_imagenet_backbone():
    with pytest.raises(SegDeployError, match="no ImageNet backbone"):
        load_backbone_weights(build("regseg_tiny"), "unused.pth")
