"""ResNet backbones with torchvision's parameter names (no torchvision dependency).

"Deep Residual Learning for Image Recognition" (He et al., CVPR 2016). Module names follow
``torchvision.models.resnet`` (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``,
...), so ImageNet weights in torchvision's format load into it (``backbone_weights.py``) and so do
the segmentation checkpoints of implementations built on torchvision's ResNet (SwiftNet single
scale, DeepLabV3Plus-Pytorch). There is no ``avgpool``/``fc``: ``forward`` returns the four stage
outputs at strides 4, 8, 16 and 32 (less where ``replace_stride_with_dilation`` trades a stride
for dilation, as DeepLab's output stride 8/16 does).

Computation is torchvision's: BatchNorm eps 1e-5 / momentum 0.1, in-place ReLUs, the stride on
the bottleneck's 3x3 conv ("ResNet v1.5"), a 1x1 strided conv + BN projection shortcut.
"""

from typing import List, Sequence, Tuple

import torch
from torch import nn


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 conv, no bias, 'same' padding for its dilation."""
    return nn.Conv2d(
        in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); returns ReLU(branch + shortcut)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, dilation=1):
        super().__init__()
        if dilation != 1:
            # as torchvision: the published ResNet-18/34 never dilate
            raise ValueError("BasicBlock does not support dilation")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided, dilated) -> 1x1 expand x4 (ResNet-50/101)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


RESNET_CONFIGS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


def make_layer(
    block, inplanes: int, planes: int, blocks: int, stride: int, dilation: int, dilate: bool
) -> Tuple[nn.Sequential, int, int]:
    """One stage as torchvision builds it; returns (stage, out_channels, dilation after it).

    With ``dilate`` the stage keeps its resolution: its stride becomes dilation for every block
    after the first, the first one keeping the dilation of the previous stage (torchvision's and
    DeepLab's rule).
    """
    previous_dilation = dilation
    if dilate:
        dilation *= stride
        stride = 1
    out_ch = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_ch:
        downsample = nn.Sequential(conv1x1(inplanes, out_ch, stride), nn.BatchNorm2d(out_ch))
    layers = [block(inplanes, planes, stride, downsample, previous_dilation)]
    layers += [block(out_ch, planes, dilation=dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers), out_ch, dilation


class ResNet(nn.Module):
    """Stem and four stages; ``forward(x)`` returns ``[c2, c3, c4, c5]`` (strides 4..32)."""

    def __init__(
        self,
        block,
        layers: Sequence[int],
        replace_stride_with_dilation: Sequence[bool] = (False, False, False),
    ):
        super().__init__()
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("replace_stride_with_dilation needs 3 flags (layer2..layer4)")
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels, dilation = 64, 1
        widths = (64, 128, 256, 512)
        strides = (1, 2, 2, 2)
        dilate = (False,) + tuple(replace_stride_with_dilation)
        out_channels = []
        for i in range(4):
            layer, channels, dilation = make_layer(
                block, channels, widths[i], layers[i], strides[i], dilation, dilate[i]
            )
            setattr(self, "layer{}".format(i + 1), layer)
            out_channels.append(channels)
        self.out_channels = tuple(out_channels)

    def forward_stem(self, x):
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)

    def forward(self, x) -> List[torch.Tensor]:
        x = self.forward_stem(x)
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]


def resnet(name: str, replace_stride_with_dilation=(False, False, False)) -> ResNet:
    """``resnet18`` / ``resnet34`` / ``resnet50`` / ``resnet101`` backbone without ``fc``."""
    if name not in RESNET_CONFIGS:
        raise ValueError("unknown ResNet {!r}; known: {}".format(name, ", ".join(RESNET_CONFIGS)))
    block, layers = RESNET_CONFIGS[name]
    return ResNet(block, layers, replace_stride_with_dilation)
