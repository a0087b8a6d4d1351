"""LR-ASPP on MobileNetV3-Large, with torchvision's parameter names (no torchvision dependency).

"Searching for MobileNetV3" (Howard et al., ICCV 2019), Sec. 6.1.3: the Lite Reduced ASPP
segmentation head, the decoder RegSeg compares against. torchvision's
``lraspp_mobilenet_v3_large`` (COCO train subset with the 20 VOC classes + background, 520 px:
57.9 mIoU, 2.1 GFLOPs, 3,221,538 parameters) is the reference; keys are its keys
(``backbone.<block>...``, ``classifier.cbr``, ``classifier.scale``, ``classifier.low_classifier``,
``classifier.high_classifier``), so its checkpoints load with ``strict=True``.

    backbone  MobileNetV3-Large ``features[0:17]``; the last stage (blocks 13-15) is dilated
              instead of strided, so the high features are at 1/16; the low ones are block 4's
              (40 channels, 1/8)
    head      high (960) -> 1x1 conv+BN+ReLU (128)  *  sigmoid(1x1 conv(global average pool))
              -> bilinear to 1/8 -> 1x1 to the classes  +  1x1 (with bias) of the low features
              -> bilinear to the input size

Hardswish, hardsigmoid (squeeze-excitation) and the global pool exercise what RegSeg lacks.
torchvision returns ``{"out": logits}``; this model returns the logits tensor.
"""

from typing import List, NamedTuple

from torch import nn
from torch.nn import functional as F

from .registry import register_model

BN_EPS = 0.001  # torchvision's MobileNetV3 BatchNorm: eps 1e-3, momentum 0.01


class Bneck(NamedTuple):
    """One row of the paper's Table 1 (MobileNetV3-Large)."""

    in_ch: int
    kernel: int
    expanded: int
    out_ch: int
    se: bool
    hardswish: bool
    stride: int
    dilation: int


# Rows 1-15 of Table 1, with torchvision's ``dilated=True`` for segmentation: the C4 stage
# (the last three rows) keeps stride 1 and dilates by 2.
MOBILENETV3_LARGE = (
    Bneck(16, 3, 16, 16, False, False, 1, 1),
    Bneck(16, 3, 64, 24, False, False, 2, 1),
    Bneck(24, 3, 72, 24, False, False, 1, 1),
    Bneck(24, 5, 72, 40, True, False, 2, 1),
    Bneck(40, 5, 120, 40, True, False, 1, 1),
    Bneck(40, 5, 120, 40, True, False, 1, 1),
    Bneck(40, 3, 240, 80, False, True, 2, 1),
    Bneck(80, 3, 200, 80, False, True, 1, 1),
    Bneck(80, 3, 184, 80, False, True, 1, 1),
    Bneck(80, 3, 184, 80, False, True, 1, 1),
    Bneck(80, 3, 480, 112, True, True, 1, 1),
    Bneck(112, 3, 672, 112, True, True, 1, 1),
    Bneck(112, 5, 672, 160, True, True, 2, 2),
    Bneck(160, 5, 960, 160, True, True, 1, 2),
    Bneck(160, 5, 960, 160, True, True, 1, 2),
)
LOW_BLOCK = 4  # the last block at 1/8 (40 channels): torchvision's C2
HEAD_CHANNELS = 128


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to a multiple of ``divisor`` without losing more than 10 % (MobileNet's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNAct(nn.Sequential):
    """Conv2dNormActivation: conv (no bias) -> BN (eps 1e-3) [-> activation], keys 0 / 1 / 2."""

    def __init__(self, in_ch, out_ch, kernel_size=1, stride=1, dilation=1, groups=1, act=None):
        layers: List[nn.Module] = [
            nn.Conv2d(
                in_ch,
                out_ch,
                kernel_size,
                stride,
                (kernel_size - 1) // 2 * dilation,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=0.01),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """x * hardsigmoid(fc2(relu(fc1(avgpool(x))))); keys ``fc1``, ``fc2``."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x):
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return x * self.scale_activation(scale)


class InvertedResidualV3(nn.Module):
    """expand 1x1 -> depthwise kxk [-> SE] -> project 1x1, residual when shapes allow."""

    def __init__(self, cfg: Bneck):
        super().__init__()
        act = nn.Hardswish if cfg.hardswish else nn.ReLU
        self.use_res_connect = cfg.stride == 1 and cfg.in_ch == cfg.out_ch
        layers: List[nn.Module] = []
        if cfg.expanded != cfg.in_ch:
            layers.append(ConvBNAct(cfg.in_ch, cfg.expanded, act=act))
        stride = 1 if cfg.dilation > 1 else cfg.stride  # dilated stages do not stride
        layers.append(
            ConvBNAct(
                cfg.expanded,
                cfg.expanded,
                cfg.kernel,
                stride,
                cfg.dilation,
                groups=cfg.expanded,
                act=act,
            )
        )
        if cfg.se:
            layers.append(SqueezeExcitation(cfg.expanded, make_divisible(cfg.expanded // 4)))
        layers.append(ConvBNAct(cfg.expanded, cfg.out_ch))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return y + x if self.use_res_connect else y


class LRASPPHead(nn.Module):
    def __init__(self, low_ch: int, high_ch: int, num_classes: int, inter_ch: int = HEAD_CHANNELS):
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(high_ch, inter_ch, 1, bias=False),
            nn.BatchNorm2d(inter_ch),
            nn.ReLU(inplace=True),
        )
        self.scale = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_ch, inter_ch, 1, bias=False), nn.Sigmoid()
        )
        self.low_classifier = nn.Conv2d(low_ch, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_ch, num_classes, 1)

    def forward(self, low, high):
        x = self.cbr(high) * self.scale(high)  # (N, 128, H/16, W/16)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(x)  # (N, K, H/8, W/8)


class LRASPP(nn.Module):
    def __init__(self, num_classes: int = 21):
        super().__init__()
        blocks: List[nn.Module] = [ConvBNAct(3, 16, 3, 2, act=nn.Hardswish)]
        blocks += [InvertedResidualV3(cfg) for cfg in MOBILENETV3_LARGE]
        last = MOBILENETV3_LARGE[-1].out_ch
        blocks.append(ConvBNAct(last, 6 * last, act=nn.Hardswish))
        self.backbone = nn.Sequential(*blocks)
        self.classifier = LRASPPHead(MOBILENETV3_LARGE[LOW_BLOCK - 1].out_ch, 6 * last, num_classes)

    def forward(self, x):
        size = x.shape[-2:]
        low = x
        for index, block in enumerate(self.backbone):  # a loop, not slices: torch.fx traces it
            x = block(x)
            if index == LOW_BLOCK:
                low = x  # (N, 40, H/8, W/8)
        logits = self.classifier(low, x)  # x: (N, 960, H/16, W/16)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


@register_model(
    "lraspp_mobilenet_v3_large",
    family="lraspp",
    # Any size works (both upsamplings are to explicit sizes); 8 keeps the paper's 520 valid.
    stride=8,
    dataset="voc",
    num_classes=21,
    paper={
        "params": 3_221_538,
        "flops_fvcore": 2.1e9,
        "resolution": (520, 520),
        "miou_val": 57.9,
        "source": "torchvision LR-ASPP MobileNetV3-Large (COCO-val2017, VOC labels, 520 px); "
        "TI edge-AI model zoo table",
    },
)
def lraspp_mobilenet_v3_large(*, num_classes: int = 21) -> LRASPP:
    """LR-ASPP, MobileNetV3-Large (dilated); torchvision's lraspp_mobilenet_v3_large."""
    return LRASPP(num_classes)
