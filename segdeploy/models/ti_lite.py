"""TI's Lite segmentation networks on MobileNetV2: DeepLabV3Lite, UNetLite and FPNLite.

The embedded-first models of TI's edge-AI model zoo (shared/papers/ti-edgeai-segmentation-modelzoo,
Cityscapes at 768x384: 3.54 / 2.20 / 3.84 GigaMACs, 69.1 / 68.9 / 70.4 mIoU). The reference
implementation is TexasInstruments/edgeai-torchvision, ``references/edgeailite/.../pixel2pixel``
(``deeplabv3plus_mobilenetv2_tv_edgeailite``, ``unet_aspp_mobilenetv2_tv_edgeailite``,
``fpn_aspp_mobilenetv2_tv_edgeailite`` with ``output_channels=[19]``) built from the ``xnn`` layers
of edgeai-modeloptimization. This file rebuilds them with the same state_dict keys, in the same
order, and the same forward computation, so TI's checkpoints load with ``strict=True``.

"Lite" means depthwise-separable convolutions everywhere, the neck and decoder included:

    encoder   MobileNetV2 (torchvision layout, ReLU instead of ReLU6: xnn's DefaultAct2d)
    rfblock   DWASPPLite: 1x1 branch + three depthwise-separable 3x3 branches, dilations 6/12/18
    decoder   DeepLabV3Lite: x4 upsample, concat with a 48-channel 1/4 shortcut
              UNetLite:      x2 upsample + concat + separable conv at 1/16, 1/8, 1/4, 1/2
              FPNLite:       x2 upsample + add a 1x1 lateral + separable conv at 1/16, 1/8, 1/4
    head      depthwise 3x3 + BN, then a 1x1 conv to the classes (no bias), bilinear upsample

Differences from the reference that change no number: TI's eval mode ends in argmax when
``output_type='segmentation'``; these models return logits (argmax is the export head's job).
TI's decoders find the encoder features by shape (the last block whose output is
N x C x H/s x W/s); here they are taken by index, which is the same block for every input whose
size the model's stride divides (the sizes the toolchain accepts). Pre-processing is TI's
training default: RGB, ``(pixel - 128) / 64``.
"""

from typing import List, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .mobilenetv2 import MOBILENETV2_SETTING, STEM_CHANNELS, ConvBNReLU6, InvertedResidual
from .registry import register_model

ASPP_CHANNELS = 256
DECODER_CHANNELS = 256
ASPP_DILATIONS = (6, 12, 18)
# Encoder blocks whose outputs the decoders use (index into ``encoder.features``): the last block
# of each stride, as TI's shape lookup finds them. Channels: 16 @1/2, 24 @1/4, 32 @1/8, 96 @1/16,
# 320 @1/32 (1/16 when the 160-channel stage does not stride).
FEATURE_INDEX = {2: 1, 4: 3, 8: 6, 16: 13, 32: 17}
FEATURE_CHANNELS = {2: 16, 4: 24, 8: 32, 16: 96, 32: 320}

# TI's pixel2pixel training default (train_pixel2pixel.py): mean 128, scale 1/(0.25*256), RGB
_PREPROCESS = dict(
    channel_order="RGB", input_scale=1.0, mean=(128.0, 128.0, 128.0), std=(64.0, 64.0, 64.0)
)


def conv_bn_act(in_ch, out_ch, kernel_size=1, dilation=1, groups=1, norm=True, act=True):
    """xnn's ConvNormAct2d: conv (no bias, 'same' padding) -> BN -> ReLU, keys 0 / 1 / 2."""
    padding = (kernel_size - 1) // 2 * dilation
    layers: List[nn.Module] = [
        nn.Conv2d(
            in_ch, out_ch, kernel_size, 1, padding, dilation=dilation, groups=groups, bias=False
        )
    ]
    if norm:
        layers.append(nn.BatchNorm2d(out_ch))
    if act:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def separable(in_ch, out_ch, dilation=1, norm=(True, True), act=(True, True)):
    """xnn's ConvDWSepNormAct2d: depthwise 3x3 (+BN+ReLU), then pointwise 1x1 (+BN+ReLU)."""
    return nn.Sequential(
        conv_bn_act(in_ch, in_ch, 3, dilation, groups=in_ch, norm=norm[0], act=act[0]),
        conv_bn_act(in_ch, out_ch, 1, norm=norm[1], act=act[1]),
    )


def upsample(x, factor: int):
    """xnn's ResizeWith(scale_factor): bilinear, half-pixel centres, scale kept as given."""
    return F.interpolate(
        x, scale_factor=factor, mode="bilinear", align_corners=False, recompute_scale_factor=False
    )


class DWASPPLite(nn.Module):
    """xnn's DWASPPLiteBlock without image pooling: four branches concatenated, then 1x1."""

    def __init__(self, in_ch, aspp_ch, out_ch, dilations: Sequence[int] = ASPP_DILATIONS):
        super().__init__()
        self.conv1x1 = conv_bn_act(in_ch, aspp_ch)
        self.aspp_bra1 = separable(in_ch, aspp_ch, dilations[0])
        self.aspp_bra2 = separable(in_ch, aspp_ch, dilations[1])
        self.aspp_bra3 = separable(in_ch, aspp_ch, dilations[2])
        self.dropout = nn.Dropout2d(p=0.2)  # identity in eval mode; kept for the module tree
        self.aspp_out = conv_bn_act(4 * aspp_ch, out_ch)

    def forward(self, x):
        branches = [self.conv1x1(x), self.aspp_bra1(x), self.aspp_bra2(x), self.aspp_bra3(x)]
        return self.aspp_out(self.dropout(torch.cat(branches, 1)))


def prediction(in_ch, num_classes):
    """The Lite head: depthwise 3x3 + BN (no ReLU), then 1x1 to the classes without bias."""
    return separable(in_ch, num_classes, norm=(True, False), act=(False, False))


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 ``features[0:18]`` with ReLU; ``forward`` returns every block's output."""

    def __init__(self, last_stage_stride: int = 2):
        super().__init__()
        blocks: List[nn.Module] = [ConvBNReLU6(3, STEM_CHANNELS, 3, 2, 1, activation=nn.ReLU)]
        channels = STEM_CHANNELS
        for t, c, n, s in MOBILENETV2_SETTING:
            stride = last_stage_stride if c == 160 else s  # TI's strides[4]: 1 for DeepLabV3Lite
            for i in range(n):
                blocks.append(
                    InvertedResidual(channels, c, stride if i == 0 else 1, t, activation=nn.ReLU)
                )
                channels = c
        self.features = nn.Sequential(*blocks)

    def forward(self, x) -> List[torch.Tensor]:
        outputs = []
        for block in self.features:
            x = block(x)
            outputs.append(x)
        return outputs


class DeepLabV3LiteDecoder(nn.Module):
    """ASPP at 1/16, x4 upsample, concat the 1/4 shortcut (24 -> 48 ch), head, x4 upsample."""

    def __init__(self, num_classes):
        super().__init__()
        self.aspp = DWASPPLite(FEATURE_CHANNELS[32], ASPP_CHANNELS, DECODER_CHANNELS)
        self.shortcut = conv_bn_act(FEATURE_CHANNELS[4], 48)
        self.pred = prediction(DECODER_CHANNELS + 48, num_classes)

    def forward(self, features):
        shortcut = self.shortcut(features[FEATURE_INDEX[4]])  # (N, 48, H/4, W/4)
        x = upsample(self.aspp(features[-1]), 4)  # (N, 256, H/4, W/4)
        return upsample(self.pred(torch.cat((x, shortcut), 1)), 4)


class UNetLiteDecoder(nn.Module):
    """ASPP at 1/32, then at 1/16, 1/8, 1/4, 1/2: x2 upsample, concat the encoder feature,
    separable conv down to max(feature channels, 2 * classes, 32); head; x2 upsample."""

    STRIDES = (16, 8, 4, 2)

    def __init__(self, num_classes):
        super().__init__()
        self.rfblock = DWASPPLite(FEATURE_CHANNELS[32], ASPP_CHANNELS, DECODER_CHANNELS)
        minimum = max(2 * num_classes, 32)
        smooth: List[nn.Module] = [None]  # TI's list starts with an unused level
        channels = DECODER_CHANNELS
        for stride in self.STRIDES:
            out_ch = max(minimum, FEATURE_CHANNELS[stride])
            smooth.append(separable(channels + FEATURE_CHANNELS[stride], out_ch))
            channels = out_ch
        self.unet = nn.Module()
        self.unet.smooth_convs = nn.ModuleList(smooth)
        self.pred = prediction(channels, num_classes)

    def forward(self, features):
        x = self.rfblock(features[-1])
        for level, stride in enumerate(self.STRIDES, start=1):
            x = torch.cat((upsample(x, 2), features[FEATURE_INDEX[stride]]), 1)
            x = self.unet.smooth_convs[level](x)
        return upsample(self.pred(x), 2)


class FPNLiteDecoder(nn.Module):
    """ASPP at 1/32, then at 1/16, 1/8, 1/4: x2 upsample, add a 1x1 lateral of the encoder
    feature, separable conv (in the loop, TI's ``inloop_fpn``); head; x4 upsample."""

    STRIDES = (16, 8, 4)

    def __init__(self, num_classes):
        super().__init__()
        self.rfblock = DWASPPLite(FEATURE_CHANNELS[32], ASPP_CHANNELS, DECODER_CHANNELS)
        self.fpn = nn.Module()
        # registration order = TI's (smooth_convs before shortcuts) = the checkpoint's key order
        self.fpn.smooth_convs = nn.ModuleList(
            [None] + [separable(DECODER_CHANNELS, DECODER_CHANNELS) for _ in self.STRIDES]
        )
        self.fpn.shortcuts = nn.ModuleList(
            [None] + [conv_bn_act(FEATURE_CHANNELS[s], DECODER_CHANNELS) for s in self.STRIDES]
        )
        self.pred = prediction(DECODER_CHANNELS, num_classes)

    def forward(self, features):
        x = self.rfblock(features[-1])
        for level, stride in enumerate(self.STRIDES, start=1):
            lateral = self.fpn.shortcuts[level](features[FEATURE_INDEX[stride]])
            x = self.fpn.smooth_convs[level](upsample(x, 2) + lateral)
        return upsample(self.pred(x), 4)


class TILiteNet(nn.Module):
    """TI's Pixel2PixelNet with one decoder: ``encoder`` + ``decoders.0``; returns logits."""

    def __init__(self, decoder: nn.Module, last_stage_stride: int = 2):
        super().__init__()
        self.encoder = MobileNetV2Encoder(last_stage_stride)
        self.decoders = nn.ModuleList([decoder])

    def forward(self, x):
        return self.decoders[0](self.encoder(x))  # (N, K, H, W)


_ZOO = "TI edge-AI model zoo, Cityscapes at 768x384"


@register_model(
    "ti_deeplabv3lite_mnv2",
    family="ti_lite",
    stride=16,
    dataset="cityscapes",
    paper={
        "macs": 3.54e9,
        "resolution": (384, 768),
        "miou_val": 69.13,
        "source": _ZOO + " (MobileNetV2S16+DeepLabV3Lite)",
    },
    **_PREPROCESS,
)
def ti_deeplabv3lite_mnv2(*, num_classes: int = 19) -> TILiteNet:
    """MobileNetV2 OS16 + DeepLabV3Lite; TI's deeplabv3plus_mobilenetv2_tv_edgeailite."""
    return TILiteNet(DeepLabV3LiteDecoder(num_classes), last_stage_stride=1)


@register_model(
    "ti_unetlite_mnv2",
    family="ti_lite",
    stride=32,
    dataset="cityscapes",
    paper={
        "macs": 2.20e9,
        "resolution": (384, 768),
        "miou_val": 68.94,
        "source": _ZOO + " (MobileNetV2+UNetLite)",
    },
    **_PREPROCESS,
)
def ti_unetlite_mnv2(*, num_classes: int = 19) -> TILiteNet:
    """MobileNetV2 + UNetLite; TI's unet_aspp_mobilenetv2_tv_edgeailite."""
    return TILiteNet(UNetLiteDecoder(num_classes))


@register_model(
    "ti_fpnlite_mnv2",
    family="ti_lite",
    stride=32,
    dataset="cityscapes",
    paper={
        "macs": 3.84e9,
        "resolution": (384, 768),
        "miou_val": 70.39,
        "source": _ZOO + " (MobileNetV2+FPNLite)",
    },
    **_PREPROCESS,
)
def ti_fpnlite_mnv2(*, num_classes: int = 19) -> TILiteNet:
    """MobileNetV2 + FPNLite; TI's fpn_aspp_mobilenetv2_tv_edgeailite."""
    return TILiteNet(FPNLiteDecoder(num_classes))
