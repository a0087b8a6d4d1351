"""DeepLabV3+: "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation"
(Chen, Zhu, Papandreou, Schroff, Adam, ECCV 2018), as implemented by DeepLabV3Plus-Pytorch.

Paper: ``shared/papers/deeplabv3plus-encoder-decoder-atrous.txt``; implementation whose released
checkpoints (``{'model_state': ...}``) users have: github.com/VainF/DeepLabV3Plus-Pytorch
(``network/modeling.py``, ``network/_deeplab.py``, ``network/backbone/{resnet,mobilenetv2}.py``).
Module names, parameter shapes and the forward computation follow that implementation, so its
checkpoints load with ``strict=True`` and give the same logits.

    backbone    ResNet-50/101 (torchvision layout; layer4, or layer3+4, dilated for output
                stride 16/8) or MobileNetV2 (``low_level_features`` = blocks 0-3,
                ``high_level_features`` = blocks 4-17)
    ASPP        1x1, three 3x3 atrous convs (rates 6/12/18 at OS 16, 12/24/36 at OS 8) and image
                pooling, 256 ch each; concat; 1x1 to 256 + dropout 0.1
    decoder     1x1 projection of the stride-4 low-level features to 48 ch; ASPP output bilinearly
                resized to them; concat (48 + 256 = 304); one 3x3 conv 256 + BN + ReLU; 1x1
                classifier; bilinear resize to the input (align_corners=False throughout)

Where this implementation differs from the paper (we keep the implementation's behaviour, which
its checkpoints were trained with):

- Decoder: a single 3x3 conv (256) after the concatenation; the paper's chosen decoder uses two
  [3x3, 256] convs (Sec. 4.1, Table 2).
- Plain convolutions in ASPP and decoder; the paper uses atrous *separable* convolutions there
  (the implementation's optional ``--separable_conv`` is not part of the released models we
  target, so it is not built here).
- Backbones: ResNet-50/101 (torchvision v1.5 bottlenecks, stride on the 3x3) and MobileNetV2
  instead of the paper's modified aligned Xception; for ResNet the paper's multi-grid is not used.
- Final upsampling resizes to the exact input size instead of a fixed x4.
- MobileNetV2: the stem conv has no padding, and every inverted residual zero-pads its *input*
  by the dilation before the 1x1 expansion (``mobilenetv2.py``), unlike torchvision's MobileNetV2
  whose ImageNet weights it starts from.
- ImageNet mean/std normalisation of 0-1 RGB outside the model (``ModelSpec``).
"""

from typing import Tuple

import torch
from torch import nn

from ..errors import SegDeployError
from .backbone_weights import load_backbone_weights, prefixed_key_map
from .layers import resize_to
from .mobilenetv2 import mobilenet_v2_blocks, numbered_sequential
from .registry import register_model
from .resnet import RESNET_CONFIGS, ResNet

ASPP_CHANNELS = 256
LOW_LEVEL_CHANNELS = 48
ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


def conv_bn_relu(in_ch, out_ch, k, padding=0, dilation=1):
    """``nn.Sequential(conv, bn, relu)`` with keys ``0``, ``1``, ``2``, as the implementation."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, k, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ASPPPooling(nn.Sequential):
    """Image-level branch: global average, 1x1 conv + BN + ReLU, broadcast back bilinearly."""

    def __init__(self, in_ch, out_ch):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        size = x.shape[-2:]
        return resize_to(super().forward(x), size)  # (B, out, h, w)


class ASPP(nn.Module):
    def __init__(self, in_ch, rates, out_ch=ASPP_CHANNELS):
        super().__init__()
        branches = [conv_bn_relu(in_ch, out_ch, 1)]
        branches += [conv_bn_relu(in_ch, out_ch, 3, padding=r, dilation=r) for r in rates]
        branches.append(ASPPPooling(in_ch, out_ch))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
        )

    def forward(self, x):
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))  # (B, 256, h, w)


class DeepLabHeadV3Plus(nn.Module):
    """Low-level projection, ASPP and the one-conv decoder (keys as the implementation)."""

    def __init__(self, in_ch, low_level_ch, num_classes, rates):
        super().__init__()
        self.project = conv_bn_relu(low_level_ch, LOW_LEVEL_CHANNELS, 1)
        self.aspp = ASPP(in_ch, rates)
        self.classifier = nn.Sequential(
            nn.Conv2d(LOW_LEVEL_CHANNELS + ASPP_CHANNELS, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, num_classes, 1),
        )

    def forward(self, low_level, out):
        low_level = self.project(low_level)  # (B, 48, H/4, W/4)
        out = resize_to(self.aspp(out), low_level.shape[-2:])  # (B, 256, H/4, W/4)
        return self.classifier(torch.cat([low_level, out], dim=1))  # (B, K, H/4, W/4)


class ResNetEncoder(ResNet):
    """ResNet returning (layer1, layer4): the low-level and the ASPP input."""

    def forward(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
        c2, _, _, c5 = super().forward(x)
        return c2, c5


class MobileNetV2Encoder(nn.Module):
    """The implementation's renamed MobileNetV2: ``low_level_features`` (blocks 0-3, stride 4)
    and ``high_level_features`` (blocks 4-17, keys keep torchvision's block numbers)."""

    def __init__(self, output_stride):
        super().__init__()
        blocks = mobilenet_v2_blocks(output_stride, pad_input=True, stem_padding=0)
        self.low_level_features = numbered_sequential(blocks[:4], 0)
        self.high_level_features = numbered_sequential(blocks[4:], 4)
        self.out_channels = (24, 320)

    def forward(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
        low = self.low_level_features(x)  # (B, 24, ~H/4, ~W/4)
        return low, self.high_level_features(low)  # (B, 320, ~H/OS, ~W/OS)


class DeepLabV3Plus(nn.Module):
    """``backbone`` + ``classifier`` (the head); ``forward(x)`` returns logits at input size."""

    def __init__(
        self, backbone: nn.Module, num_classes: int, output_stride: int, backbone_arch: str
    ):
        super().__init__()
        low_ch, high_ch = backbone.out_channels[0], backbone.out_channels[-1]
        self.backbone = backbone
        self.classifier = DeepLabHeadV3Plus(high_ch, low_ch, num_classes, ASPP_RATES[output_stride])
        self.backbone_arch = backbone_arch
        self.output_stride = output_stride

    def forward(self, x):
        low, out = self.backbone(x)
        return resize_to(self.classifier(low, out), x.shape[-2:])  # (B, K, H, W)

    def backbone_key_map(self):
        """Model key -> torchvision ImageNet key, for ``load_backbone_weights``."""
        keys = list(self.backbone.state_dict())
        if isinstance(self.backbone, MobileNetV2Encoder):
            # low_level_features.3.conv... / high_level_features.4.conv... -> features.N.conv...
            return {"backbone." + k: "features." + k.split(".", 1)[1] for k in keys}
        return prefixed_key_map(keys, "backbone.")


def deeplabv3plus(
    backbone: str, num_classes: int = 19, output_stride: int = 16, backbone_weights=None
) -> DeepLabV3Plus:
    """DeepLabV3+ with ``backbone`` in ``resnet50``, ``resnet101``, ``mobilenet_v2``."""
    if output_stride not in ASPP_RATES:
        raise SegDeployError(
            "DeepLabV3+ output_stride must be 8 or 16 (as DeepLabV3Plus-Pytorch), not {!r}".format(
                output_stride
            )
        )
    if backbone == "mobilenet_v2":
        encoder = MobileNetV2Encoder(output_stride)
    else:
        block, layers = RESNET_CONFIGS[backbone]
        dilate = (False, True, True) if output_stride == 8 else (False, False, True)
        encoder = ResNetEncoder(block, layers, dilate)
    model = DeepLabV3Plus(encoder, num_classes, output_stride, backbone)
    if backbone_weights is not None:
        load_backbone_weights(model, backbone_weights)
    return model


_REPO = "DeepLabV3Plus-Pytorch README, Cityscapes table (train/val OS 16)"


@register_model(
    "deeplabv3plus_resnet50",
    family="deeplabv3plus",
    stride=16,
    dataset="cityscapes",
    paper={"source": "no Cityscapes figures published for this backbone"},
)
def deeplabv3plus_resnet50(
    *, num_classes: int = 19, output_stride: int = 16, backbone_weights=None
) -> DeepLabV3Plus:
    """DeepLabV3+ ResNet-50 (DeepLabV3Plus-Pytorch ``deeplabv3plus_resnet50``)."""
    return deeplabv3plus("resnet50", num_classes, output_stride, backbone_weights)


@register_model(
    "deeplabv3plus_resnet101",
    family="deeplabv3plus",
    stride=16,
    dataset="cityscapes",
    paper={"resolution": (1024, 2048), "miou_val": 76.2, "source": _REPO},
)
def deeplabv3plus_resnet101(
    *, num_classes: int = 19, output_stride: int = 16, backbone_weights=None
) -> DeepLabV3Plus:
    """DeepLabV3+ ResNet-101 (DeepLabV3Plus-Pytorch ``deeplabv3plus_resnet101``)."""
    return deeplabv3plus("resnet101", num_classes, output_stride, backbone_weights)


@register_model(
    "deeplabv3plus_mobilenet",
    family="deeplabv3plus",
    stride=16,
    dataset="cityscapes",
    paper={"resolution": (1024, 2048), "miou_val": 72.1, "source": _REPO},
)
def deeplabv3plus_mobilenet(
    *, num_classes: int = 19, output_stride: int = 16, backbone_weights=None
) -> DeepLabV3Plus:
    """DeepLabV3+ MobileNetV2 (DeepLabV3Plus-Pytorch ``deeplabv3plus_mobilenet``)."""
    return deeplabv3plus("mobilenet_v2", num_classes, output_stride, backbone_weights)


@register_model("deeplabv3plus_tiny", family="deeplabv3plus", stride=8, tiny=True)
def deeplabv3plus_tiny(*, num_classes: int = 19) -> DeepLabV3Plus:
    """DeepLabV3+ MobileNetV2 at output stride 8 (dilated blocks, padded inputs): for tests."""
    return deeplabv3plus("mobilenet_v2", num_classes, 8)
