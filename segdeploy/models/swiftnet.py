"""SwiftNet: "In Defense of Pre-trained ImageNet Architectures for Real-time Semantic Segmentation
of Road-driving Images" (Oršić, Krešo, Bevandić, Šegvić, CVPR 2019), and the pyramid-fusion model
of "Efficient semantic segmentation with pyramidal fusion" (Oršić, Šegvić, Pattern Recognition
2020).

Paper: ``shared/papers/swiftnet-in-defense-of-pretrained-imagenet.txt``; official implementation:
github.com/orsic/swiftnet (``models/resnet/resnet_single_scale.py``,
``models/resnet/resnet_pyramid.py``, ``models/util.py``, ``models/semseg.py``). Module names,
parameter shapes, BatchNorm settings and the forward computation follow that code, so its
released Cityscapes checkpoints load with ``strict=True`` and give the same logits.

Models (Sec. 3.2-3.3):

    swiftnet_rn18          ResNet-18 (torchvision names) -> SPP on the 1/32 features (1x1 512->128,
                           three pooled levels on 8x16, 4x8, 2x4 grids of 42 ch, 1x1 fuse 254->128)
                           -> three upsampling modules (1x1 lateral "bottleneck" + bilinear x2 +
                           sum + BN-ReLU-3x3 "blend") at 1/16, 1/8, 1/4 -> BN-ReLU-1x1 logits
                           -> bilinear to the input
    swiftnet_rn18_pyramid  one ResNet-18 applied to the image and its bicubic 1/2 and 1/4
                           downsamplings (shared convs, one BatchNorm per level); 1x1 bottlenecks
                           on every stage output, summed where resolutions coincide; five
                           upsampling modules (1/128 -> 1/4), no SPP
    swiftnet_mnv2          MobileNetV2 encoder in the single-scale model (no official code)

Where the official code differs from the paper, we follow the code (its checkpoints need it):

- Single scale: the paper routes the lateral features "from the output of the elementwise sum
  within the last residual block" (before the ReLU, Fig. 2). The official ``BasicBlock`` returns
  ``(relu, out)`` but applies an *in-place* ReLU to ``out``, so both are the post-ReLU tensor:
  the laterals (and the SPP input) are the stage outputs after ReLU.
- Pyramid: the official ``BasicBlock`` of ``resnet_pyramid.py`` adds in place and applies a
  non-in-place ReLU, so there the laterals really are the pre-ReLU sums. Features of equal
  resolution are summed (the paper's Fig. 4 concatenates); there is no SPP.
- Normalisation happens in the model: ``(image - img_mean) / img_std`` on 0-255 RGB with the
  training set statistics of the official config (the state_dict buffers ``img_mean``/
  ``img_std``; a checkpoint brings its own). The official forward does this in place on the
  caller's tensor; ours does not modify its input.
- The decoder's BatchNorms use momentum 0.1 except the SPP's (0.005); all eps 1e-5.

SwiftNet-MNv2 is built from the paper only: torchvision's MobileNetV2 ``features[0:18]`` (the
final 1x1 conv to 1280 is not used, which matches the paper's 2.4 M parameters), laterals from
the last residual block of each resolution (blocks 3, 6, 13: 24, 32, 96 ch), SPP on block 17
(320 ch); decoder and normalisation as in the ResNet-18 model.

The official call is ``model(image, target_size, image_size)`` returning ``(logits, extras)``;
ours is ``model(x)`` returning the logits at the input resolution (``image_size = x.shape[-2:]``).
"""

import re
from typing import List

import torch
from torch import fx, nn
from torch.nn import functional as F

from .backbone_weights import load_backbone_weights, prefixed_key_map
from .layers import resize_to
from .mobilenetv2 import mobilenet_v2_blocks
from .registry import register_model
from .resnet import BasicBlock, ResNet, conv3x3

# Cityscapes train statistics of the official configs (configs/rn18_*.py), 0-255 RGB
SWIFTNET_MEAN = (73.15, 82.90, 72.3)
SWIFTNET_STD = (47.67, 48.49, 47.73)
SPP_BN_MOMENTUM = 0.01 / 2
SPP_GRIDS = (8, 4, 2)
NUM_FEATURES = 128


class BNReluConv(nn.Sequential):
    """BN -> ReLU -> kxk conv (pre-activation), keys ``norm``, ``relu``, ``conv``."""

    def __init__(self, in_ch, out_ch, k=3, bn_momentum=0.1, bias=False):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_ch, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)  # acts on the BN output, never on a shared tensor
        self.conv = nn.Conv2d(in_ch, out_ch, k, padding=k // 2, bias=bias)


def _window_average(n: int, out: int, like: torch.Tensor) -> torch.Tensor:
    """``(out, n)`` matrix averaging adaptive pooling's windows [i*n//out, ceil((i+1)*n/out))."""
    weights = torch.zeros(out, n, dtype=like.dtype, device=like.device)
    for i in range(out):
        start, stop = (i * n) // out, -(-(i + 1) * n // out)
        weights[i, start:stop] = 1.0 / (stop - start)
    return weights


def spp_grid_pool(x: torch.Tensor, rows: int) -> torch.Tensor:
    """Average-pool ``x`` onto a grid of ``rows`` rows and as many columns as keep its aspect.

    Columns are ``max(1, round(rows * W / H))`` with Python's round (ties to even), as in the
    official SPP, which then calls ``adaptive_avg_pool2d``. Registered with ``torch.fx.wrap``:
    the grid depends on the concrete input size, which fx's symbolic proxies cannot evaluate.

    Deployment: where the windows are uniform (1024x2048 input: 32x64 -> 8x16, 4x8, 2x4) this is
    the same average as a fixed ``avg_pool2d`` (one ONNX AveragePool). The ONNX exporter cannot
    export adaptive pooling with non-uniform windows (small inputs), so under export those are
    two matrix products with constant window-averaging matrices: the same windows and weights.
    Either way the exported graph holds the grid of the export resolution: a graph exported with
    dynamic H/W pools on that grid at every size, unlike the official model.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])  # concrete ints even under the ONNX tracer
    cols = max(1, round(w / h * rows))
    if h % rows == 0 and w % cols == 0:
        return F.avg_pool2d(x, (h // rows, w // cols))  # (B, C, rows, cols)
    if torch.onnx.is_in_onnx_export():
        pooled = torch.matmul(_window_average(h, rows, x), x)  # (B, C, rows, w)
        return torch.matmul(pooled, _window_average(w, cols, x).t())  # (B, C, rows, cols)
    return F.adaptive_avg_pool2d(x, (rows, cols))  # (B, C, rows, cols)


fx.wrap("spp_grid_pool")


class SpatialPyramidPooling(nn.Module):
    """1x1 to ``bt_size``, pooled levels (1x1 each, upsampled back), concat, 1x1 fuse."""

    def __init__(
        self, in_ch, num_levels=3, bt_size=NUM_FEATURES, out_size=NUM_FEATURES, grids=SPP_GRIDS
    ):
        super().__init__()
        level_size = bt_size // num_levels
        self.grids = tuple(grids)
        self.spp = nn.Sequential()
        self.spp.add_module("spp_bn", BNReluConv(in_ch, bt_size, 1, SPP_BN_MOMENTUM))
        for i in range(num_levels):
            self.spp.add_module(
                "spp{}".format(i), BNReluConv(bt_size, level_size, 1, SPP_BN_MOMENTUM)
            )
        final = bt_size + num_levels * level_size
        self.spp.add_module("spp_fuse", BNReluConv(final, out_size, 1, SPP_BN_MOMENTUM))

    def forward(self, x):
        size = x.shape[-2:]
        x = self.spp[0](x)  # (B, bt, h, w)
        levels = [x]
        for i in range(1, len(self.spp) - 1):
            level = self.spp[i](spp_grid_pool(x, self.grids[i - 1]))  # (B, level, g, g*w/h)
            levels.append(resize_to(level, size))
        return self.spp[-1](torch.cat(levels, 1))  # (B, out, h, w)


class Upsample(nn.Module):
    """Official ``_Upsample``: 1x1 lateral bottleneck, bilinear upsampling, sum, 3x3 blend."""

    def __init__(self, num_features, skip_ch, out_ch, k=3):
        super().__init__()
        self.bottleneck = BNReluConv(skip_ch, num_features, k=1)
        self.blend_conv = BNReluConv(num_features, out_ch, k=k)

    def forward(self, x, skip):
        skip = self.bottleneck(skip)  # (B, F, h, w)
        x = resize_to(x, skip.shape[-2:])
        return self.blend_conv(x + skip)


class UpsampleBlend(nn.Module):
    """Official ``_UpsampleBlend`` (pyramid model): the lateral is projected outside."""

    def __init__(self, num_features, k=3):
        super().__init__()
        self.blend_conv = BNReluConv(num_features, num_features, k=k)

    def forward(self, x, skip):
        x = resize_to(x, skip.shape[-2:])
        return self.blend_conv(x + skip)


def _register_normalization(module, mean, std):
    module.register_buffer("img_mean", torch.tensor(mean).view(1, -1, 1, 1))
    module.register_buffer("img_std", torch.tensor(std).view(1, -1, 1, 1))


class SwiftNetResNet(ResNet):
    """Official single-scale ``ResNet``: ResNet + SPP + upsampling path; returns 1/4 features."""

    def __init__(
        self, layers=(2, 2, 2, 2), num_features=NUM_FEATURES, mean=SWIFTNET_MEAN, std=SWIFTNET_STD
    ):
        super().__init__(BasicBlock, layers)
        _register_normalization(self, mean, std)
        c2, c3, c4, c5 = self.out_channels
        self.spp = SpatialPyramidPooling(c5, bt_size=num_features, out_size=num_features)
        # deepest first, as the official code reverses its list
        self.upsample = nn.ModuleList(
            [Upsample(num_features, c, num_features) for c in (c4, c3, c2)]
        )
        self.num_features = num_features

    def forward(self, image):
        x = (image - self.img_mean) / self.img_std
        c2, c3, c4, c5 = super().forward(x)  # post-ReLU stage outputs (see module doc)
        x = self.spp(c5)  # (B, F, H/32, W/32)
        for up, skip in zip(self.upsample, (c4, c3, c2)):
            x = up(x, skip)
        return x  # (B, F, H/4, W/4)


class SwiftNetMobileNetV2(nn.Module):
    """MobileNetV2 encoder (torchvision key names) in the single-scale SwiftNet."""

    LATERALS = (3, 6, 13)  # last block of the 1/4, 1/8 and 1/16 resolutions
    LAST = 17

    def __init__(self, num_features=NUM_FEATURES, mean=SWIFTNET_MEAN, std=SWIFTNET_STD):
        super().__init__()
        _register_normalization(self, mean, std)
        self.features = nn.Sequential(*mobilenet_v2_blocks())
        ch = [self.features[i].conv[-1].num_features for i in self.LATERALS + (self.LAST,)]
        self.spp = SpatialPyramidPooling(ch[3], bt_size=num_features, out_size=num_features)
        self.upsample = nn.ModuleList(
            [Upsample(num_features, c, num_features) for c in reversed(ch[:3])]
        )
        self.num_features = num_features

    def forward(self, image):
        x = (image - self.img_mean) / self.img_std
        skips = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.LATERALS:
                skips.append(x)
        x = self.spp(x)  # (B, F, H/32, W/32)
        for up, skip in zip(self.upsample, reversed(skips)):
            x = up(x, skip)
        return x  # (B, F, H/4, W/4)


class PyramidBasicBlock(nn.Module):
    """Official pyramid ``BasicBlock``: shared convs, one BN per pyramid level.

    Returns ``(relu(sum), sum)``: the pre-ReLU sum feeds the lateral connection.
    """

    def __init__(self, inplanes, planes, stride=1, downsample=None, levels=3):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.ModuleList([nn.BatchNorm2d(planes) for _ in range(levels)])
        self.relu_inp = nn.ReLU(inplace=True)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.ModuleList([nn.BatchNorm2d(planes) for _ in range(levels)])
        self.downsample = downsample  # shared across levels, a single BN

    def forward(self, x, level: int):
        out = self.relu_inp(self.bn1[level](self.conv1(x)))
        out = self.bn2[level](self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        out = out + shortcut
        return self.relu(out), out


class SwiftNetPyramidResNet(nn.Module):
    """Official ``resnet_pyramid.ResNet`` (output stride 4): interleaved pyramid fusion."""

    def __init__(
        self,
        layers=(2, 2, 2, 2),
        num_features=NUM_FEATURES,
        pyramid_levels=3,
        mean=SWIFTNET_MEAN,
        std=SWIFTNET_STD,
    ):
        super().__init__()
        self.pyramid_levels = pyramid_levels
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        _register_normalization(self, mean, std)
        self.bn1 = nn.ModuleList([nn.BatchNorm2d(64) for _ in range(pyramid_levels)])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes, bottlenecks = 64, []
        for i, (planes, stride) in enumerate(zip((64, 128, 256, 512), (1, 2, 2, 2))):
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )
            blocks = [PyramidBasicBlock(inplanes, planes, stride, downsample, pyramid_levels)]
            blocks += [
                PyramidBasicBlock(planes, planes, levels=pyramid_levels)
                for _ in range(1, layers[i])
            ]
            setattr(self, "layer{}".format(i + 1), nn.Sequential(*blocks))
            inplanes = planes
            bottlenecks.append(nn.Conv2d(planes, num_features, 1, bias=False))
        self.upsample_bottlenecks = nn.ModuleList(bottlenecks[::-1])  # layer4 first
        # one blend per resolution from 1/(4 * 2**(levels + 2)) ... up to 1/4, less the deepest
        self.upsample_blends = nn.ModuleList(
            [UpsampleBlend(num_features) for _ in range(pyramid_levels + 2)]
        )
        self.num_features = num_features

    def forward_level(self, image, level: int) -> List[torch.Tensor]:
        """The four lateral projections of one pyramid level (strides 4..32 of ``image``)."""
        x = self.maxpool(self.relu(self.bn1[level](self.conv1(image))))
        laterals = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x, skip = block(x, level)
            laterals.append(skip)
        bottlenecks = list(self.upsample_bottlenecks)[::-1]  # layer1's first
        return [b(f) for b, f in zip(bottlenecks, laterals)]

    def forward(self, image):
        image = (image - self.img_mean) / self.img_std
        pyramid = [image]
        for level in range(1, self.pyramid_levels):
            pyramid.append(
                F.interpolate(image, scale_factor=1 / 2**level, mode="bicubic", align_corners=None)
            )
        # resolution index r (stride 4 * 2**r of the input) collects level l's stage r - l;
        # sums run in level order, as the official sum() over its lists
        skips: List[List[torch.Tensor]] = [[] for _ in range(self.pyramid_levels + 3)]
        for level, img in enumerate(pyramid):
            for stage, feat in enumerate(self.forward_level(img, level)):
                skips[level + stage].append(feat)
        skips = skips[::-1]  # deepest first
        x = skips[0][0]  # (B, F, H/128, W/128) for 3 levels
        for sk, blend in zip(skips[1:], self.upsample_blends):
            total = sk[0]
            for s in sk[1:]:
                total = total + s
            x = blend(x, total)
        return x  # (B, F, H/4, W/4)


class SwiftNet(nn.Module):
    """``backbone`` (encoder + decoder, official naming) and ``logits``; ``forward(x)`` returns
    ``(B, num_classes, H, W)`` logits for a 0-255 RGB image."""

    def __init__(self, backbone: nn.Module, num_classes: int, backbone_arch: str):
        super().__init__()
        self.backbone = backbone
        self.logits = BNReluConv(backbone.num_features, num_classes, k=1, bias=True)
        self.backbone_arch = backbone_arch

    def forward(self, x):
        features = self.backbone(x)  # (B, F, H/4, W/4)
        return resize_to(self.logits(features), x.shape[-2:])  # (B, K, H, W)

    def backbone_key_map(self):
        """Model key -> torchvision ImageNet key, for ``load_backbone_weights``."""
        keys = self.backbone.state_dict()
        if isinstance(self.backbone, SwiftNetMobileNetV2):
            return prefixed_key_map([k for k in keys if k.startswith("features.")], "backbone.")
        pattern = re.compile(r"^(conv1|bn1|layer\d)\.")
        mapping = prefixed_key_map([k for k in keys if pattern.match(k)], "backbone.")
        # the pyramid's per-level BNs (bn1.<level>.weight) all start from ImageNet's bn1.weight
        return {mk: re.sub(r"\b(bn\d)\.\d+\.", r"\1.", tv) for mk, tv in mapping.items()}


def _finish(model: SwiftNet, backbone_weights):
    if backbone_weights is not None:
        load_backbone_weights(model, backbone_weights)
    return model


_PREPROCESS = dict(channel_order="RGB", input_scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@register_model(
    "swiftnet_rn18",
    family="swiftnet",
    stride=32,
    dynamic_shapes=False,  # the SPP grid follows the input's aspect ratio
    dataset="cityscapes",
    paper={
        "params": 11.8e6,
        "macs": 104.0e9,
        "resolution": (1024, 2048),
        "fps": 39.9,
        "fps_device": "gtx1080ti",
        "fps_protocol": "swiftnet",
        "miou_val": 75.4,
        "source": "SwiftNet paper, Table 1 (SwiftNetRN-18, ImageNet pre-trained, val)",
    },
    **_PREPROCESS,
)
def swiftnet_rn18(*, num_classes: int = 19, backbone_weights=None) -> SwiftNet:
    """SwiftNet single scale, ResNet-18; official rn18_single_scale; 11,797,071 params at 19."""
    return _finish(SwiftNet(SwiftNetResNet(), num_classes, "resnet18"), backbone_weights)


@register_model(
    "swiftnet_rn18_pyramid",
    family="swiftnet",
    stride=128,
    dataset="cityscapes",
    paper={
        "params": 12.9e6,
        "macs": 114.0e9,
        "resolution": (1024, 2048),
        "fps": 34.0,
        "fps_device": "gtx1080ti",
        "fps_protocol": "swiftnet",
        "miou_val": 74.4,
        "source": "SwiftNet paper, Table 1 (SwiftNetRN-18 pyr, val); the released code is the "
        "later 3-level summing pyramid of the Pattern Recognition 2020 paper",
    },
    **_PREPROCESS,
)
def swiftnet_rn18_pyramid(*, num_classes: int = 19, backbone_weights=None) -> SwiftNet:
    """SwiftNet interleaved pyramid fusion (3 levels), ResNet-18; official rn18_pyramid."""
    model = SwiftNet(SwiftNetPyramidResNet(), num_classes, "resnet18")
    return _finish(model, backbone_weights)


@register_model(
    "swiftnet_mnv2",
    family="swiftnet",
    stride=32,
    dynamic_shapes=False,  # the SPP grid follows the input's aspect ratio
    dataset="cityscapes",
    paper={
        "params": 2.4e6,
        "macs": 41.0e9,
        "resolution": (1024, 2048),
        "fps": 27.7,
        "fps_device": "gtx1080ti",
        "fps_protocol": "swiftnet",
        "miou_val": 75.3,
        "source": "SwiftNet paper, Table 1 (SwiftNetMN V2, ImageNet pre-trained, val)",
    },
    **_PREPROCESS,
)
def swiftnet_mnv2(*, num_classes: int = 19, backbone_weights=None) -> SwiftNet:
    """SwiftNet single scale, MobileNetV2 (from the paper; no official code)."""
    return _finish(SwiftNet(SwiftNetMobileNetV2(), num_classes, "mobilenet_v2"), backbone_weights)


@register_model(
    "swiftnet_tiny", family="swiftnet", stride=32, tiny=True, dynamic_shapes=False, **_PREPROCESS
)
def swiftnet_tiny(*, num_classes: int = 19) -> SwiftNet:
    """SwiftNet single scale with one block per ResNet stage and 64 decoder features: for tests."""
    return SwiftNet(SwiftNetResNet(layers=(1, 1, 1, 1), num_features=64), num_classes, "resnet10")
