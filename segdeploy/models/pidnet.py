"""PIDNet: "PIDNet: A Real-time Semantic Segmentation Network Inspired by PID Controllers" (Xu,
Xiong, Bhattacharyya; CVPR 2023, arXiv 2206.02066).

Official implementation: github.com/XuJiacong/PIDNet (MIT licence), ``models/pidnet.py`` and
``models/model_utils.py`` (``PIDNet(m, n, planes, ppm_planes, head_planes)``: S = (2, 3, 32, 96,
128), M = (2, 3, 64, 96, 128), L = (3, 4, 64, 112, 256)). Module names, parameter shapes and the
eval-mode forward follow that code so the released Cityscapes checkpoints load.

Three branches on DDRNet's dual-resolution layout (``ddrnet.py`` supplies the shared blocks):

    I (integral)     conv1 -> layer1..layer5, the context branch down to 1/64, then PAPPM (S, M)
                     or DAPPM (L)
    P (proportional) layer3_ -> layer4_ -> layer5_ at 1/8, fed from I by pixel-attention-guided
                     fusion (PagFM: a sigmoid similarity gate between the two branches)
    D (derivative)   layer3_d -> layer4_d -> layer5_d at 1/8, plus 3x3 convs of I resized to 1/8
    fusion           Bag (L) / Light_Bag (S, M): sigmoid(D) gates P against I; segmenthead

What the deployment form leaves out, and adds:

- The training-only heads ``seghead_p`` (auxiliary semantic head on P) and ``seghead_d`` (the
  boundary head on D), built with ``augment=True`` and present in the released checkpoints, are
  not built; loading drops their keys with one line (``ModelSpec.training_only``). The official
  evaluation runs ``augment=True`` and keeps output 1 (``TEST.OUTPUT_INDEX: 1``), which is what
  ``augment=False`` returns.
- The official evaluation (``datasets/base_dataset.py`` ``inference``) resizes the 1/8 logits to
  the input size bilinearly with ``align_corners=config.MODEL.ALIGN_CORNERS``, which is True (the
  default in ``configs/default.py``; no Cityscapes config overrides it), although inside the
  model every resize uses ``align_corners=False``. ``forward`` ends with that True resize.

The released checkpoints are ``FullModel`` state_dicts: keys under ``model.`` (stripped when
loading) and the OHEM loss's class weights (``sem_loss.criterion.weight``), dropped.
Inputs: RGB scaled to 0..1, ImageNet mean/std.
"""

import torch
from torch import nn
from torch.nn import functional as F

from .ddrnet import (
    DAPPM,
    DualBasicBlock,
    DualBottleneck,
    SegmentHead,
    bn_relu_conv,
    conv_bn,
    make_layer,
    projection,
    pyramid_pools,
    stem,
    upsample_like,
)
from .registry import register_model

_REPO = "github.com/XuJiacong/PIDNet (MIT licence)"


class PAPPM(nn.Module):
    """Parallel Aggregation PPM (PAPPM): the four pooled branches, each resized back and
    added to the unpooled one, share one grouped (4 groups) 3x3 conv instead of DAPPM's chain."""

    def __init__(self, inplanes: int, branch_planes: int, outplanes: int):
        super().__init__()
        pools = pyramid_pools()
        self.scale1 = bn_relu_conv(inplanes, branch_planes, pool=pools[0])
        self.scale2 = bn_relu_conv(inplanes, branch_planes, pool=pools[1])
        self.scale3 = bn_relu_conv(inplanes, branch_planes, pool=pools[2])
        self.scale4 = bn_relu_conv(inplanes, branch_planes, pool=pools[3])
        self.scale0 = bn_relu_conv(inplanes, branch_planes)
        self.scale_process = bn_relu_conv(branch_planes * 4, branch_planes * 4, 3, groups=4)
        self.compression = bn_relu_conv(branch_planes * 5, outplanes)
        self.shortcut = bn_relu_conv(inplanes, outplanes)

    def forward(self, x):
        size = x.shape[-2:]
        base = self.scale0(x)
        scales = (self.scale1, self.scale2, self.scale3, self.scale4)
        pooled = [upsample_like(scale(x), size) + base for scale in scales]
        out = self.scale_process(torch.cat(pooled, dim=1))
        return self.compression(torch.cat([base, out], dim=1)) + self.shortcut(x)


class PagFM(nn.Module):
    """Pixel-attention-guided fusion: ``sigmoid(<f_x(x), up(f_y(y))>)`` over channels weighs the
    upsampled ``y`` against ``x``, pixel by pixel (keys ``f_x``, ``f_y``)."""

    def __init__(self, in_channels: int, mid_channels: int):
        super().__init__()
        self.f_x = conv_bn(in_channels, mid_channels)
        self.f_y = conv_bn(in_channels, mid_channels)

    def forward(self, x, y):
        size = x.shape[-2:]
        y_q = upsample_like(self.f_y(y), size)
        x_k = self.f_x(x)
        gate = torch.sigmoid(torch.sum(x_k * y_q, dim=1, keepdim=True))  # (B, 1, H, W)
        return (1 - gate) * x + gate * upsample_like(y, size)


class LightBag(nn.Module):
    """Light boundary-attention-guided fusion (S, M): two 1x1 conv + BN, summed."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_p = conv_bn(in_channels, out_channels)
        self.conv_i = conv_bn(in_channels, out_channels)

    def forward(self, p, i, d):
        edge = torch.sigmoid(d)
        return self.conv_p((1 - edge) * i + p) + self.conv_i(i + edge * p)


class Bag(nn.Module):
    """Boundary-attention-guided fusion (L): BN -> ReLU -> 3x3 conv of the gated sum."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = bn_relu_conv(in_channels, out_channels, 3)

    def forward(self, p, i, d):
        edge = torch.sigmoid(d)
        return self.conv(edge * p + (1 - edge) * i)


def single_block(inplanes: int, planes: int) -> DualBasicBlock:
    """One BasicBlock without its final ReLU (official ``_make_single_layer``)."""
    downsample = projection(inplanes, planes, 1) if inplanes != planes else None
    return DualBasicBlock(inplanes, planes, 1, downsample, final_relu=False)


class PIDNet(nn.Module):
    """PIDNet in its deployment form; ``forward(x)`` returns logits at the input size."""

    def __init__(self, m=2, n=3, num_classes=19, planes=64, ppm_planes=96, head_planes=128):
        super().__init__()
        self.conv1 = stem(planes)
        self.relu = nn.ReLU(inplace=False)
        self.layer1 = make_layer(DualBasicBlock, planes, planes, m)
        self.layer2 = make_layer(DualBasicBlock, planes, planes * 2, m, stride=2)
        self.layer3 = make_layer(DualBasicBlock, planes * 2, planes * 4, n, stride=2)
        self.layer4 = make_layer(DualBasicBlock, planes * 4, planes * 8, n, stride=2)
        self.layer5 = make_layer(DualBottleneck, planes * 8, planes * 8, 2, stride=2)
        # P branch
        self.compression3 = conv_bn(planes * 4, planes * 2)
        self.compression4 = conv_bn(planes * 8, planes * 2)
        self.pag3 = PagFM(planes * 2, planes)
        self.pag4 = PagFM(planes * 2, planes)
        self.layer3_ = make_layer(DualBasicBlock, planes * 2, planes * 2, m)
        self.layer4_ = make_layer(DualBasicBlock, planes * 2, planes * 2, m)
        self.layer5_ = make_layer(DualBottleneck, planes * 2, planes * 2, 1)
        # D branch
        light = m == 2
        if light:
            self.layer3_d = single_block(planes * 2, planes)
            self.layer4_d = make_layer(DualBottleneck, planes, planes, 1)
            self.diff3 = conv_bn(planes * 4, planes, 3)
        else:
            self.layer3_d = single_block(planes * 2, planes * 2)
            self.layer4_d = single_block(planes * 2, planes * 2)
            self.diff3 = conv_bn(planes * 4, planes * 2, 3)
        self.diff4 = conv_bn(planes * 8, planes * 2, 3)
        pool = PAPPM if light else DAPPM
        self.spp = pool(planes * 16, ppm_planes, planes * 4)
        self.dfm = LightBag(planes * 4, planes * 4) if light else Bag(planes * 4, planes * 4)
        self.layer5_d = make_layer(DualBottleneck, planes * 2, planes * 2, 1)
        # (the official augment=True builds seghead_p and seghead_d here: training only)
        self.final_layer = SegmentHead(planes * 4, head_planes, num_classes)

    def forward(self, x):
        size = x.shape[-2:]
        out8 = (x.shape[-2] // 8, x.shape[-1] // 8)
        x = self.layer1(self.conv1(x))  # 1/4
        x = self.relu(self.layer2(self.relu(x)))  # 1/8
        p = self.layer3_(x)
        d = self.layer3_d(x)
        x = self.relu(self.layer3(x))  # 1/16
        p = self.pag3(p, self.compression3(x))
        d = d + upsample_like(self.diff3(x), out8)
        x = self.relu(self.layer4(x))  # 1/32
        p = self.layer4_(self.relu(p))
        d = self.layer4_d(self.relu(d))
        p = self.pag4(p, self.compression4(x))
        d = d + upsample_like(self.diff4(x), out8)
        p = self.layer5_(self.relu(p))
        d = self.layer5_d(self.relu(d))
        i = upsample_like(self.spp(self.layer5(x)), out8)  # PAPPM/DAPPM at 1/64
        logits = self.final_layer(self.dfm(p, i, d))  # (B, K, H/8, W/8)
        # the official evaluation's resize (align_corners=True), in the graph
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


_PAPER = "PIDNet paper (CVPR 2023, arXiv 2206.02066) Cityscapes table, 1024x2048"
_COMMON = {
    "resolution": (1024, 2048),
    "fps_device": "rtx3090",
    "fps_protocol": "pidnet",
    # README: timed "using the method introduced by SwiftNet" (FP32, BatchNorm folded: the speed
    # script's note), "No third-party acceleration lib is used"
    "fps_precision": "fp32",
    "fps_software": "PyTorch, no TensorRT",
    "counting": "'GFLOPs' in fvcore's convention (multiply-adds + BatchNorm + resizes): the "
    "official code counted that way gives S 47.7 and L 275.8",
    "upsample": "outside the model in the official eval: bilinear, align_corners=True "
    "(configs/default.py MODEL.ALIGN_CORNERS); in our graph",
    "license": "MIT",
}
_SPEC = {"family": "pidnet", "stride": 8, "training_only": ("seghead_p.", "seghead_d.")}


def _paper(params, gflops, fps, miou_val, variant, note=""):
    source = (
        "{} ({}: {} M, {} GFLOPs{}); FPS (RTX 3090, PyTorch, no TensorRT) and val mIoU of the "
        "released checkpoint: README; {}"
    )
    return dict(
        _COMMON,
        params=params * 1e6,
        flops_fvcore=gflops * 1e9,
        fps=fps,
        miou_val=miou_val,
        source=source.format(_PAPER, variant, params, gflops, note, _REPO),
    )


@register_model("pidnet_s", paper=_paper(7.6, 47.6, 93.2, 78.8, "PIDNet-S"), **_SPEC)
def pidnet_s(*, num_classes: int = 19) -> PIDNet:
    """PIDNet-S (official get_pred_model('pidnet_s')), logits at input size."""
    return PIDNet(m=2, n=3, num_classes=num_classes, planes=32, ppm_planes=96, head_planes=128)


@register_model(
    "pidnet_m",
    paper=_paper(
        34.4,
        197.4,
        42.2,
        79.9,
        "PIDNet-M",
        "; the official code's PIDNet-M has 28.5 M and 178.1 fvcore GFLOPs",
    ),
    **_SPEC,
)
def pidnet_m(*, num_classes: int = 19) -> PIDNet:
    """PIDNet-M (official get_pred_model('pidnet_m')), logits at input size."""
    return PIDNet(m=2, n=3, num_classes=num_classes, planes=64, ppm_planes=96, head_planes=128)


@register_model("pidnet_l", paper=_paper(36.9, 275.8, 31.1, 80.9, "PIDNet-L"), **_SPEC)
def pidnet_l(*, num_classes: int = 19) -> PIDNet:
    """PIDNet-L (official get_pred_model('pidnet_l')), logits at input size."""
    return PIDNet(m=3, n=4, num_classes=num_classes, planes=64, ppm_planes=112, head_planes=256)


@register_model("pidnet_tiny", tiny=True, **_SPEC)
def pidnet_tiny(*, num_classes: int = 19) -> PIDNet:
    """PIDNet-S at planes 8 (same PAPPM, PagFM, Light_Bag and final resize): for tests."""
    return PIDNet(m=2, n=3, num_classes=num_classes, planes=8, ppm_planes=16, head_planes=16)
