"""DDRNet: "Deep Dual-resolution Networks for Real-time and Accurate Semantic Segmentation of Road
Scenes" (Hong, Pan, Sun, Jia; arXiv 2101.06085, IEEE T-ITS 2022).

Official implementation: github.com/ydhongHIT/DDRNet (MIT licence), ``segmentation/DDRNet_23.py``
and ``segmentation/DDRNet_23_slim.py`` (``DualResNet``; slim: planes 32, head 64; full: planes 64,
head 128; both: BasicBlock layers [2, 2, 2, 2], DAPPM with 128 branch channels). Module names,
parameter shapes and the eval-mode forward follow that code, so the released Cityscapes
checkpoints load with ``strict`` key checking.

Architecture (input H x W):

    conv1     two 3x3 s2 convs (with bias) + BN + ReLU                        1/4
    layer1    BasicBlocks                                                     1/4
    layer2    BasicBlocks, s2                                                 1/8 (splits here)
    low-res   layer3 (1/16) -> layer4 (1/32) -> layer5 bottleneck (1/64) -> DAPPM
    high-res  layer3_ -> layer4_ -> layer5_ bottleneck, all at 1/8
    fusions   after layer3 and layer4: high->low by strided 3x3 convs (down3/down4), low->high by
              a 1x1 conv + BN (compression3/4) and a bilinear resize to 1/8
    head      DAPPM output resized to 1/8 + high-res branch -> segmenthead -> logits at 1/8

What the deployment form leaves out, and adds:

- The training-only auxiliary head ``seghead_extra`` (built with ``augment=True``; the released
  checkpoints carry it) is not built: loading drops its keys with one line
  (``ModelSpec.training_only``). Eval with ``augment=False`` returns the same main output.
- The official evaluation (HRNet-Semantic-Segmentation v1.1 ``inference``, which DDRNet trains
  and tests with) resizes the 1/8 logits to the input size outside the model, bilinearly; the
  README asks for ``align_corners=False`` everywhere with the released weights. ``forward``
  ends with that resize, so the exported graph returns logits at the input resolution.

The released checkpoints are HRNet ``FullModel`` state_dicts: keys under ``model.`` (stripped
when loading) plus the loss's class weights (``loss.criterion.weight``), which loading drops.
Inputs: RGB scaled to 0..1, ImageNet mean/std (HRNet's Cityscapes loader).
"""

import torch
from torch import nn
from torch.nn import functional as F

from .registry import register_model
from .resnet import BasicBlock, Bottleneck, conv3x3

_REPO = "github.com/ydhongHIT/DDRNet (MIT licence)"


def upsample_like(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize, ``align_corners=False`` (the official code's ``mode='bilinear'``)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class DualBasicBlock(BasicBlock):
    """torchvision's BasicBlock whose final ReLU can be left out (the last block of a layer)."""

    def __init__(self, inplanes, planes, stride=1, downsample=None, final_relu=True):
        super().__init__(inplanes, planes, stride, downsample)
        self.final_relu = final_relu

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + shortcut
        return self.relu(out) if self.final_relu else out


class DualBottleneck(Bottleneck):
    """torchvision's Bottleneck with a 2x expansion; no final ReLU unless asked for."""

    expansion = 2

    def __init__(self, inplanes, planes, stride=1, downsample=None, final_relu=False):
        super().__init__(inplanes, planes, stride, downsample)
        self.final_relu = final_relu

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out)) + shortcut
        return self.relu(out) if self.final_relu else out


def projection(inplanes: int, outplanes: int, stride: int) -> nn.Sequential:
    """1x1 (strided) conv + BN shortcut, keys ``0``/``1``."""
    return nn.Sequential(
        nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False), nn.BatchNorm2d(outplanes)
    )


def make_layer(block, inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """``blocks`` residual blocks; the first may stride/project, the last has no final ReLU.

    The first block keeps the block type's default (BasicBlock: ReLU, bottleneck: none), and so
    does a layer of one block.
    """
    out = planes * block.expansion
    downsample = projection(inplanes, out, stride) if stride != 1 or inplanes != out else None
    layers = [block(inplanes, planes, stride, downsample)]
    for i in range(1, blocks):
        layers.append(block(out, planes, final_relu=i < blocks - 1))
    return nn.Sequential(*layers)


def conv_bn(in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1) -> nn.Sequential:
    """Conv (no bias) + BN, keys ``0``/``1``."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    )


def bn_relu_conv(in_ch: int, out_ch: int, kernel_size: int = 1, groups: int = 1, pool=None):
    """(Pool) -> BN -> ReLU -> conv (no bias): keys ``0``..``2``, or ``0``..``3`` with a pool."""
    layers = [] if pool is None else [pool]
    layers += [
        nn.BatchNorm2d(in_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, groups=groups, bias=False),
    ]
    return nn.Sequential(*layers)


def pyramid_pools():
    """The four pooled branches of DAPPM/PAPPM: windows 5/9/17 at strides 2/4/8, then global."""
    return [
        nn.AvgPool2d(kernel_size=5, stride=2, padding=2),
        nn.AvgPool2d(kernel_size=9, stride=4, padding=4),
        nn.AvgPool2d(kernel_size=17, stride=8, padding=8),
        nn.AdaptiveAvgPool2d((1, 1)),
    ]


class DAPPM(nn.Module):
    """Deep Aggregation Pyramid Pooling Module (DAPPM): each pooled branch, resized back
    and added to the previous branch's output, goes through its own 3x3 conv; the five are
    concatenated and compressed, plus a 1x1 shortcut."""

    def __init__(self, inplanes: int, branch_planes: int, outplanes: int):
        super().__init__()
        pools = pyramid_pools()
        self.scale1 = bn_relu_conv(inplanes, branch_planes, pool=pools[0])
        self.scale2 = bn_relu_conv(inplanes, branch_planes, pool=pools[1])
        self.scale3 = bn_relu_conv(inplanes, branch_planes, pool=pools[2])
        self.scale4 = bn_relu_conv(inplanes, branch_planes, pool=pools[3])
        self.scale0 = bn_relu_conv(inplanes, branch_planes)
        self.process1 = bn_relu_conv(branch_planes, branch_planes, 3)
        self.process2 = bn_relu_conv(branch_planes, branch_planes, 3)
        self.process3 = bn_relu_conv(branch_planes, branch_planes, 3)
        self.process4 = bn_relu_conv(branch_planes, branch_planes, 3)
        self.compression = bn_relu_conv(branch_planes * 5, outplanes)
        self.shortcut = bn_relu_conv(inplanes, outplanes)

    def forward(self, x):
        size = x.shape[-2:]
        scales = (self.scale1, self.scale2, self.scale3, self.scale4)
        processes = (self.process1, self.process2, self.process3, self.process4)
        outs = [self.scale0(x)]
        for scale, process in zip(scales, processes):
            outs.append(process(upsample_like(scale(x), size) + outs[-1]))
        return self.compression(torch.cat(outs, dim=1)) + self.shortcut(x)


class SegmentHead(nn.Module):
    """BN -> ReLU -> 3x3 conv -> BN -> ReLU -> 1x1 classifier (with bias); official
    ``segmenthead`` (keys ``bn1``, ``conv1``, ``bn2``, ``conv2``), at the input's resolution."""

    def __init__(self, inplanes: int, interplanes: int, outplanes: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = conv3x3(inplanes, interplanes)
        self.bn2 = nn.BatchNorm2d(interplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(interplanes, outplanes, 1, bias=True)

    def forward(self, x):
        x = self.conv1(self.relu(self.bn1(x)))
        return self.conv2(self.relu(self.bn2(x)))


def stem(planes: int) -> nn.Sequential:
    """Two 3x3 stride-2 convs with bias, each + BN + ReLU (keys ``0``, ``1``, ``3``, ``4``)."""
    return nn.Sequential(
        nn.Conv2d(3, planes, 3, stride=2, padding=1),
        nn.BatchNorm2d(planes),
        nn.ReLU(inplace=True),
        nn.Conv2d(planes, planes, 3, stride=2, padding=1),
        nn.BatchNorm2d(planes),
        nn.ReLU(inplace=True),
    )


class DDRNet(nn.Module):
    """DualResNet in its deployment form; ``forward(x)`` returns logits at the input size."""

    def __init__(self, num_classes=19, planes=64, spp_planes=128, head_planes=128):
        super().__init__()
        high = planes * 2
        self.conv1 = stem(planes)
        self.relu = nn.ReLU(inplace=False)
        self.layer1 = make_layer(DualBasicBlock, planes, planes, 2)
        self.layer2 = make_layer(DualBasicBlock, planes, planes * 2, 2, stride=2)
        self.layer3 = make_layer(DualBasicBlock, planes * 2, planes * 4, 2, stride=2)
        self.layer4 = make_layer(DualBasicBlock, planes * 4, planes * 8, 2, stride=2)
        self.compression3 = conv_bn(planes * 4, high)
        self.compression4 = conv_bn(planes * 8, high)
        self.down3 = conv_bn(high, planes * 4, 3, stride=2)
        self.down4 = nn.Sequential(
            *conv_bn(high, planes * 4, 3, stride=2),
            nn.ReLU(inplace=True),
            *conv_bn(planes * 4, planes * 8, 3, stride=2),
        )
        self.layer3_ = make_layer(DualBasicBlock, planes * 2, high, 2)
        self.layer4_ = make_layer(DualBasicBlock, high, high, 2)
        self.layer5_ = make_layer(DualBottleneck, high, high, 1)
        self.layer5 = make_layer(DualBottleneck, planes * 8, planes * 8, 1, stride=2)
        self.spp = DAPPM(planes * 16, spp_planes, planes * 4)
        # (the official augment=True builds seghead_extra here: training only)
        self.final_layer = SegmentHead(planes * 4, head_planes, num_classes)

    def forward(self, x):
        size = x.shape[-2:]
        out8 = (x.shape[-2] // 8, x.shape[-1] // 8)
        x = self.layer1(self.conv1(x))  # (B, C, H/4, W/4)
        x = self.layer2(self.relu(x))  # 1/8
        low = self.layer3(self.relu(x))  # 1/16
        high = self.layer3_(self.relu(x))  # 1/8
        low_in = low
        low = low + self.down3(self.relu(high))
        high = high + upsample_like(self.compression3(self.relu(low_in)), out8)
        low4 = self.layer4(self.relu(low))  # 1/32
        high = self.layer4_(self.relu(high))
        low = low4 + self.down4(self.relu(high))
        high = high + upsample_like(self.compression4(self.relu(low4)), out8)
        high = self.layer5_(self.relu(high))
        context = upsample_like(self.spp(self.layer5(self.relu(low))), out8)  # DAPPM at 1/64
        logits = self.final_layer(context + high)  # (B, K, H/8, W/8)
        return upsample_like(logits, size)  # the official evaluation's resize, in the graph


_SPEC = {"training_only": ("seghead_extra.",)}
_DDRNET_PAPER = "DDRNet paper (arXiv 2101.06085), Cityscapes, RTX 2080 Ti, PyTorch, no TensorRT"


@register_model(
    "ddrnet23_slim",
    family="ddrnet",
    stride=8,  # any multiple of 8: the fusions resize to exactly (H//8, W//8)
    dataset="cityscapes",
    paper={
        "params": 5.7e6,
        "macs": 36.3e9,
        "resolution": (1024, 2048),
        "fps": 102.0,
        "fps_device": "rtx2080ti",
        "fps_protocol": "ddrnet",
        # README: "without using inference acceleration (like tensorRT)"
        "fps_software": "PyTorch, no TensorRT",
        "miou_val": 77.8,
        "counting": "'GFLOPs' that are conv multiply-adds (the official code counted so gives "
        "36.28 and 143.06 G; fvcore's convention would give 36.67 and 143.68)",
        "upsample": "outside the model in the official eval: bilinear, align_corners=False; "
        "in our graph",
        "license": "MIT",
        "source": _DDRNET_PAPER + " (DDRNet-23-slim: 5.7 M, 36.3 GFLOPs, 102 FPS); val mIoU "
        "of the released checkpoint from the README; " + _REPO,
    },
    **_SPEC,
)
def ddrnet23_slim(*, num_classes: int = 19) -> DDRNet:
    """DDRNet-23-slim (official DDRNet_23_slim.py, augment=False), logits at input size."""
    return DDRNet(num_classes, planes=32, spp_planes=128, head_planes=64)


@register_model(
    "ddrnet23",
    family="ddrnet",
    stride=8,
    dataset="cityscapes",
    paper={
        "params": 20.1e6,
        "macs": 143.1e9,
        "resolution": (1024, 2048),
        "fps": 37.1,
        "fps_device": "rtx2080ti",
        "fps_protocol": "ddrnet",
        # README: "without using inference acceleration (like tensorRT)"
        "fps_software": "PyTorch, no TensorRT",
        "miou_val": 79.5,
        "counting": "'GFLOPs' that are conv multiply-adds (the official code counted so gives "
        "36.28 and 143.06 G; fvcore's convention would give 36.67 and 143.68)",
        "upsample": "outside the model in the official eval: bilinear, align_corners=False; "
        "in our graph",
        "license": "MIT",
        "source": "RegSeg paper Table 9 (DDRNet-23: 20.1 M, 143.1 GFLOPs, 37.1 FPS) = "
        + _DDRNET_PAPER
        + "; val mIoU of the released checkpoint from the README; "
        + _REPO,
    },
    **_SPEC,
)
def ddrnet23(*, num_classes: int = 19) -> DDRNet:
    """DDRNet-23 (official DDRNet_23.py, augment=False), logits at input size."""
    return DDRNet(num_classes, planes=64, spp_planes=128, head_planes=128)


@register_model("ddrnet_tiny", family="ddrnet", stride=8, tiny=True, **_SPEC)
def ddrnet_tiny(*, num_classes: int = 19) -> DDRNet:
    """DDRNet-23 at planes 8 (same blocks, DAPPM, fusions and final resize): for tests."""
    return DDRNet(num_classes, planes=8, spp_planes=16, head_planes=16)
