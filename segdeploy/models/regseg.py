"""RegSeg: "Rethinking Dilated Convolution for Real-time Semantic Segmentation" (Gao, 2021).

Paper: ``shared/papers/regseg-rethink-dilated-convolution.txt``; official implementation:
github.com/RolandGao/RegSeg, ``RegSeg(name="exp48_decoder26")``. Module names, parameter shapes and
the forward computation follow that implementation so its released Cityscapes and CamVid
checkpoints load with ``strict=True`` and give the same outputs.

Architecture (Table 2 of the paper, input 1024x2048):

    stem      3x3 conv s2, 32 ch                                     1/2
    stage4    D block 32->48, s2, d=1                                1/4
    stage8    D block 48->128 s2, 2x D block 128, d=1                1/8
    stage16   D block 128->256 s2, d=1; then 256-wide D blocks with
              dilations (1,1), (1,2), 4x(1,4), 6x(1,14); last block 256->320 with (1,14)   1/16
    decoder   Sec. 3.4: 1x1 heads on 1/4, 1/8, 1/16; sum at 1/8, 3x3 conv, concat at 1/4,
              3x3 conv, 1x1 classifier; bilinear upsample to the input

The D block (Fig. 3-4) is a Y block whose grouped 3x3 conv is split channel-wise into branches with
different dilation rates. Where it strides, the shortcut is 2x2 average pooling (ceil mode) then a
1x1 conv + BN.

Deployment choice (not a numerical change): the official code splits the channels with
``torch.tensor_split``, which the ONNX exporter turns into SplitToSequence/ConcatFromSequence plus
shape arithmetic; we split with constant sizes (``torch.split``) so the graph gets one static
Split node that ONNX Runtime and TensorRT keep in their fast layouts.
"""

from typing import Dict, List, Sequence

import torch
from torch import nn

from .layers import ConvBnAct, resize_to
from .registry import register_model

GROUP_WIDTH = 16

# exp48: one block (1,1) first; the first block of stage16 strides with dilation 1 alone.
REGSEG_DILATIONS = [[1], [1, 2]] + 4 * [[1, 4]] + 7 * [[1, 14]]


class SEModule(nn.Module):
    """Squeeze-and-excitation with 1x1 convs (keys ``conv1``, ``conv2``)."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = nn.Conv2d(channels, squeezed, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(squeezed, channels, 1, bias=True)
        self.act2 = nn.Sigmoid()

    def forward(self, x):
        scale = self.act2(self.conv2(self.act1(self.conv1(self.avg_pool(x)))))  # (B, C, 1, 1)
        return x * scale


class Shortcut(nn.Module):
    """Projection shortcut; with ``avg_downsample`` the stride is a 2x2 average pool."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, avg_downsample: bool):
        super().__init__()
        pool = avg_downsample and stride != 1
        self.avg = nn.AvgPool2d(2, 2, ceil_mode=True) if pool else None
        self.conv = nn.Conv2d(in_ch, out_ch, 1, stride=1 if pool else stride, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x):
        if self.avg is not None:
            x = self.avg(x)
        return self.bn(self.conv(x))


class DilatedConv(nn.Module):
    """Grouped 3x3 conv whose channels are split into equal branches of different dilation."""

    def __init__(self, width: int, dilations: Sequence[int], group_width: int, stride: int):
        super().__init__()
        branch = width // len(dilations)
        if branch * len(dilations) != width or branch % group_width:
            raise ValueError(
                "width {} does not split into {} branches of groups of {}".format(
                    width, len(dilations), group_width
                )
            )
        self.branch_width = branch
        self.convs = nn.ModuleList(
            nn.Conv2d(
                branch,
                branch,
                3,
                stride=stride,
                padding=d,
                dilation=d,
                groups=branch // group_width,
                bias=False,
            )
            for d in dilations
        )

    def forward(self, x):
        parts = torch.split(x, self.branch_width, dim=1)  # constant sizes -> one ONNX Split
        # Index rather than iterate: torch.fx (BatchNorm folding) cannot iterate a traced tuple.
        return torch.cat([conv(parts[i]) for i, conv in enumerate(self.convs)], dim=1)


class DBlock(nn.Module):
    """1x1 conv -> (split-dilated) grouped 3x3 conv -> SE -> 1x1 conv, plus shortcut, ReLU."""

    def __init__(
        self, in_ch: int, out_ch: int, dilations: Sequence[int], group_width: int, stride: int
    ):
        super().__init__()
        groups = out_ch // group_width
        self.conv1 = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = nn.ReLU(inplace=True)
        if len(dilations) == 1:
            d = dilations[0]
            self.conv2 = nn.Conv2d(
                out_ch, out_ch, 3, stride=stride, padding=d, dilation=d, groups=groups, bias=False
            )
        else:
            self.conv2 = DilatedConv(out_ch, dilations, group_width, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.act3 = nn.ReLU(inplace=True)
        # The official code squeezes to in_channels // 4 (not out_channels // 4).
        self.se = SEModule(out_ch, in_ch // 4)
        if stride != 1 or in_ch != out_ch:
            self.shortcut = Shortcut(in_ch, out_ch, stride, avg_downsample=True)
        else:
            self.shortcut = None

    def forward(self, x):
        shortcut = x if self.shortcut is None else self.shortcut(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.se(x)
        x = self.bn3(self.conv3(x))
        return self.act3(x + shortcut)


class RegSegBody(nn.Module):
    """The backbone; returns the 1/4, 1/8 and 1/16 feature maps."""

    def __init__(self, dilations: List[List[int]], group_width: int = GROUP_WIDTH):
        super().__init__()
        gw = group_width
        self.stage4 = DBlock(32, 48, [1], gw, 2)
        self.stage8 = nn.Sequential(
            DBlock(48, 128, [1], gw, 2),
            DBlock(128, 128, [1], gw, 1),
            DBlock(128, 128, [1], gw, 1),
        )
        self.stage16 = nn.Sequential(
            DBlock(128, 256, [1], gw, 2),
            *[DBlock(256, 256, d, gw, 1) for d in dilations[:-1]],
            DBlock(256, 320, dilations[-1], gw, 1),
        )
        self.out_channels = (48, 128, 320)

    def forward(self, x) -> Dict[str, torch.Tensor]:
        x4 = self.stage4(x)
        x8 = self.stage8(x4)
        x16 = self.stage16(x8)
        return {"4": x4, "8": x8, "16": x16}


class Decoder26(nn.Module):
    """The paper's decoder (Sec. 3.4, Fig. 5); ``Exp2_Decoder26`` in the official code."""

    def __init__(self, num_classes: int, channels=(48, 128, 320)):
        super().__init__()
        c4, c8, c16 = channels
        self.head16 = ConvBnAct(c16, 128, 1)
        self.head8 = ConvBnAct(c8, 128, 1)
        self.head4 = ConvBnAct(c4, 8, 1)
        self.conv8 = ConvBnAct(128, 64, 3, 1, 1)
        self.conv4 = ConvBnAct(64 + 8, 64, 3, 1, 1)
        self.classifier = nn.Conv2d(64, num_classes, 1)

    def forward(self, feats: Dict[str, torch.Tensor]):
        x4, x8, x16 = feats["4"], feats["8"], feats["16"]
        x16 = self.head16(x16)
        x8 = self.head8(x8)
        x4 = self.head4(x4)
        x8 = self.conv8(x8 + resize_to(x16, x8.shape[-2:]))  # (B, 64, H/8, W/8)
        x4 = torch.cat((resize_to(x8, x4.shape[-2:]), x4), dim=1)  # (B, 72, H/4, W/4)
        return self.classifier(self.conv4(x4))  # (B, K, H/4, W/4)


class RegSeg(nn.Module):
    """Stem, D-block body, decoder; ``forward(x)`` returns logits at the input resolution."""

    def __init__(self, num_classes: int = 19, dilations=None, group_width: int = GROUP_WIDTH):
        super().__init__()
        self.stem = ConvBnAct(3, 32, 3, 2, 1)
        self.body = RegSegBody(dilations or REGSEG_DILATIONS, group_width)
        self.decoder = Decoder26(num_classes, self.body.out_channels)

    def forward(self, x):
        size = x.shape[-2:]
        logits = self.decoder(self.body(self.stem(x)))
        return resize_to(logits, size)  # (B, K, H, W)


@register_model(
    "regseg",
    family="regseg",
    stride=16,
    dataset="cityscapes",
    paper={
        "params": 3.34e6,
        "flops_fvcore": 39.1e9,
        "resolution": (1024, 2048),
        "miou_val": 78.13,
        "fps": 30.0,
        "fps_device": "t4",
        "fps_protocol": "regseg",
        "source": "RegSeg paper, Table 1/4 (Cityscapes), Sec. 4.7",
    },
)
def regseg(*, num_classes: int = 19) -> RegSeg:
    """RegSeg (exp48_decoder26), as published; 3,334,951 parameters at 19 classes."""
    return RegSeg(num_classes=num_classes)


@register_model("regseg_tiny", family="regseg", stride=16, tiny=True)
def regseg_tiny(*, num_classes: int = 19) -> RegSeg:
    """RegSeg with a 4-block stage16 (same block types, split dilations included): for tests."""
    return RegSeg(num_classes=num_classes, dilations=[[1], [1, 2], [1, 4], [1, 14]])
