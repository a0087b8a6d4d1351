"""BiSeNetV2 (Yu et al., "BiSeNet V2: Bilateral Network with Guided Aggregation for Real-time
Semantic Segmentation", IJCV 2021).

The authors released no code. This is the widely used re-implementation CoinCheung/BiSeNet (MIT
licence), ``lib/models/bisenetv2.py``, whose Cityscapes checkpoint ``model_final_v2_city.pth``
loads into these modules (same names, shapes and eval-mode forward). Where that code departs
from the paper (noted in its own comments), we follow the code: ReLUs after the depthwise convs
of the gather-and-expand layers, BN + ReLU after the context-embedding conv and the aggregation
conv, a 1024-channel segmentation head.

Deployment form: the model as ``BiSeNetV2(n_classes, aux_mode='eval')`` builds it, i.e. without
the four booster (auxiliary) heads ``aux2``, ``aux3``, ``aux4``, ``aux5_4``; the released
checkpoint carries them and they are declared ``training_only``. The output is the logits at the
input size: the head upsamples x8 bilinearly with ``align_corners=False`` inside the model. The
official ``tools/evaluate.py`` feeds the frame at a size rounded up to a multiple of 32 (bilinear,
``align_corners=True``) and resizes the logits back to the label size the same way; at the
Cityscapes size (1024x2048, a multiple of 32) both steps are the identity.

The guided aggregation (BGA) gates each branch with a sigmoid of the other and upsamples with
fixed x4 nearest resizes: the input height and width must be multiples of 32.
"""

import torch
from torch import nn

from .registry import register_model

BISENETV2_LICENSE = "MIT (CoinCheung/BiSeNet; the BiSeNetV2 authors released no code)"
BISENETV2_TRAINING_ONLY = ("aux2.", "aux3.", "aux4.", "aux5_4.")
# lib/data/cityscapes_cv2.py: RGB in 0..1, Cityscapes statistics
BISENETV2_MEAN = (0.3257, 0.3690, 0.3223)
BISENETV2_STD = (0.2112, 0.2148, 0.2115)


class ConvBNReLU(nn.Module):
    """Conv (no bias) -> BatchNorm -> ReLU, keys ``conv``, ``bn``."""

    def __init__(self, in_ch, out_ch, kernel=3, stride=1, padding=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


def _conv_bn(in_ch, out_ch, kernel, stride=1, groups=1, relu=False):
    """Sequential(conv, bn[, relu]) with the official indices 0, 1."""
    layers = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DetailBranch(nn.Module):
    """Wide and shallow: three stages of 3x3 ConvBNReLU to 1/8 with 64, 64, 128 channels."""

    def __init__(self):
        super().__init__()
        self.S1 = nn.Sequential(ConvBNReLU(3, 64, stride=2), ConvBNReLU(64, 64))
        self.S2 = nn.Sequential(
            ConvBNReLU(64, 64, stride=2), ConvBNReLU(64, 64), ConvBNReLU(64, 64)
        )
        self.S3 = nn.Sequential(
            ConvBNReLU(64, 128, stride=2), ConvBNReLU(128, 128), ConvBNReLU(128, 128)
        )

    def forward(self, x):
        return self.S3(self.S2(self.S1(x)))


class StemBlock(nn.Module):
    """Stride-2 conv, then a conv path and a max-pool path to 1/4, concatenated and fused."""

    def __init__(self):
        super().__init__()
        self.conv = ConvBNReLU(3, 16, stride=2)
        self.left = nn.Sequential(
            ConvBNReLU(16, 8, kernel=1, padding=0), ConvBNReLU(8, 16, stride=2)
        )
        self.right = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.fuse = ConvBNReLU(32, 16)

    def forward(self, x):
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class CEBlock(nn.Module):
    """Context embedding: BN of the global mean, 1x1 ConvBNReLU, broadcast add, 3x3 ConvBNReLU."""

    def __init__(self, ch=128):
        super().__init__()
        self.bn = nn.BatchNorm2d(ch)
        self.conv_gap = ConvBNReLU(ch, ch, kernel=1, padding=0)
        self.conv_last = ConvBNReLU(ch, ch)

    def forward(self, x):
        context = self.conv_gap(self.bn(x.mean(dim=(2, 3), keepdim=True)))
        return self.conv_last(context + x)


class GELayerS1(nn.Module):
    """Gather-and-expand, stride 1: 3x3 conv, depthwise expansion x6 (+ReLU), 1x1 projection,
    identity shortcut, ReLU."""

    def __init__(self, in_ch, out_ch, expand=6):
        super().__init__()
        mid = in_ch * expand
        self.conv1 = ConvBNReLU(in_ch, in_ch)
        self.dwconv = _conv_bn(in_ch, mid, 3, groups=in_ch, relu=True)
        self.conv2 = _conv_bn(mid, out_ch, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv2(self.dwconv(self.conv1(x))) + x)


class GELayerS2(nn.Module):
    """Gather-and-expand, stride 2: two depthwise convs (the first strided), 1x1 projection,
    and a depthwise-strided + 1x1 shortcut."""

    def __init__(self, in_ch, out_ch, expand=6):
        super().__init__()
        mid = in_ch * expand
        self.conv1 = ConvBNReLU(in_ch, in_ch)
        self.dwconv1 = _conv_bn(in_ch, mid, 3, stride=2, groups=in_ch)
        self.dwconv2 = _conv_bn(mid, mid, 3, groups=mid, relu=True)
        self.conv2 = _conv_bn(mid, out_ch, 1)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, 3, 2, 1, groups=in_ch, bias=False),
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.conv2(self.dwconv2(self.dwconv1(self.conv1(x))))
        return self.relu(y + self.shortcut(x))


class SegmentBranch(nn.Module):
    """Narrow and deep: stem to 1/4, GE layers to 1/8, 1/16, 1/32, context embedding."""

    def __init__(self):
        super().__init__()
        self.S1S2 = StemBlock()
        self.S3 = nn.Sequential(GELayerS2(16, 32), GELayerS1(32, 32))
        self.S4 = nn.Sequential(GELayerS2(32, 64), GELayerS1(64, 64))
        self.S5_4 = nn.Sequential(
            GELayerS2(64, 128), GELayerS1(128, 128), GELayerS1(128, 128), GELayerS1(128, 128)
        )
        self.S5_5 = CEBlock()

    def forward(self, x):
        # the deployment form needs only the last map (the booster heads read the others)
        return self.S5_5(self.S5_4(self.S4(self.S3(self.S1S2(x)))))


def _dw_pw(ch):
    """Depthwise 3x3 + BN, then a 1x1 conv (no BN): Sequential indices 0, 1, 2."""
    return nn.Sequential(
        nn.Conv2d(ch, ch, 3, 1, 1, groups=ch, bias=False),
        nn.BatchNorm2d(ch),
        nn.Conv2d(ch, ch, 1, bias=False),
    )


class BGALayer(nn.Module):
    """Bilateral guided aggregation: each branch gated by the sigmoid of the other, at 1/8 and
    at 1/32; the 1/32 results reach 1/8 by x4 nearest upsampling; sum, 3x3 ConvBNReLU."""

    def __init__(self, ch=128):
        super().__init__()
        self.left1 = _dw_pw(ch)
        self.left2 = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 2, 1, bias=False),
            nn.BatchNorm2d(ch),
            nn.AvgPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.right1 = _conv_bn(ch, ch, 3)
        self.right2 = _dw_pw(ch)
        self.up1 = nn.Upsample(scale_factor=4)
        self.up2 = nn.Upsample(scale_factor=4)
        self.conv = _conv_bn(ch, ch, 3, relu=True)

    def forward(self, detail, semantic):
        left = self.left1(detail) * torch.sigmoid(self.up1(self.right1(semantic)))
        right = self.up2(self.left2(detail) * torch.sigmoid(self.right2(semantic)))
        return self.conv(left + right)


class SegmentHead(nn.Module):
    """3x3 ConvBNReLU to 1024 channels, 1x1 classifier (with bias), x8 bilinear upsampling
    (``align_corners=False``); dropout is the identity in eval mode."""

    def __init__(self, in_ch, mid_ch, num_classes, up_factor=8):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch)
        self.drop = nn.Dropout(0.1)
        self.conv_out = nn.Sequential(
            nn.Identity(),
            nn.Conv2d(mid_ch, num_classes, 1, bias=True),
            nn.Upsample(scale_factor=up_factor, mode="bilinear", align_corners=False),
        )

    def forward(self, x):
        return self.conv_out(self.drop(self.conv(x)))


class BiSeNetV2(nn.Module):
    """BiSeNetV2 without booster heads; ``forward(x)`` returns logits at the input size."""

    def __init__(self, num_classes: int = 19):
        super().__init__()
        self.detail = DetailBranch()
        self.segment = SegmentBranch()
        self.bga = BGALayer()
        self.head = SegmentHead(128, 1024, num_classes, up_factor=8)

    def forward(self, x):
        return self.head(self.bga(self.detail(x), self.segment(x)))


@register_model(
    "bisenetv2",
    family="bisenetv2",
    stride=32,
    dataset="cityscapes",
    mean=BISENETV2_MEAN,
    std=BISENETV2_STD,
    training_only=BISENETV2_TRAINING_ONLY,
    paper={
        "resolution": (512, 1024),
        "fps": 156.0,
        "fps_device": "gtx1080ti",
        "fps_protocol": "bisenetv2",
        "miou_test": 72.6,
        "implementation": "CoinCheung/BiSeNet (the authors released no code)",
        "implementation_miou_val": 74.95,
        "implementation_resolution": (1024, 2048),
        "license": BISENETV2_LICENSE,
        "upsample": "in the model: x8 bilinear, align_corners=False; tools/evaluate.py "
        "resizes to the label size bilinear, align_corners=True (identity at 1024x2048)",
        "counting": "no parameter or multiply-add figure of this implementation is published, "
        "and the paper's (for the authors' unreleased network) is not recorded here",
        "source": "BiSeNetV2 paper abstract (72.6 test mIoU, 156 FPS on a GTX 1080 Ti, 2048x1024 "
        "frames resized to 512x1024); CoinCheung/BiSeNet README (74.95 val mIoU single scale "
        "at 1024x2048)",
    },
)
def bisenetv2(*, num_classes: int = 19) -> BiSeNetV2:
    """BiSeNetV2 as implemented by CoinCheung/BiSeNet (no official code), booster heads off."""
    return BiSeNetV2(num_classes)
