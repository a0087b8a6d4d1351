"""FC-HarDNet-70 (Chao et al., "HarDNet: A Low Memory Traffic Network", ICCV 2019).

Official implementation: PingoLH/FCHarDNet (MIT licence), ``ptsemseg/models/hardnet.py``, class
``hardnet``. Names, shapes and the eval-mode forward follow it, so the released Cityscapes
checkpoint (``hardnet70_cityscapes_model.pkl``, ``{'model_state': ...}`` with DataParallel's
``module.`` prefix) loads into these modules. The model is registered as the official
evaluation (``validate.py``) runs it: there are no auxiliary heads. ``validate.py`` then applies
``v2_transform()`` (the same weights regrouped for the CatConv2d CUDA kernel) and optionally
folds BatchNorm; both leave the outputs unchanged, and we keep the checkpoint's layout.

A U-shaped encoder-decoder of harmonic dense blocks (HarDBlock): layer ``k`` of a block reads
the outputs of layers ``k - 2**i`` for every power of two dividing ``k``, and the block emits
the concatenation of its odd layers and its last one. Average pools (2x2, stride 2) downsample;
the decoder upsamples bilinearly (``align_corners=True``) to each skip's size, and the logits
(at 1/4) are upsampled to the input size bilinearly with ``align_corners=True`` inside the model,
as the official forward does; ``validate.py`` evaluates at 1024x2048 with no further resize.

Pre-processing (``ptsemseg/loader/cityscapes_loader.py``): BGR, 0..1, ImageNet statistics in
BGR order.
"""

from typing import List

import torch
from torch import nn
from torch.nn import functional as F

from .registry import register_model

FCHARDNET_LICENSE = "MIT (PingoLH/FCHarDNet)"
# FC-HarDNet-70: stem widths, per-block growth rates, depths and transition widths
STEM = (16, 24, 32, 48)
GROWTH = (10, 16, 18, 24, 32)
DEPTH = (4, 4, 8, 8, 8)
TRANSITION = (64, 96, 160, 224, 320)
GROWTH_MULTIPLIER = 1.7


class ConvLayer(nn.Sequential):
    """Conv ('same' padding, no bias) -> BatchNorm -> ReLU, keys ``conv``, ``norm``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False))
        self.add_module("norm", nn.BatchNorm2d(out_ch))
        self.add_module("relu", nn.ReLU(inplace=True))


def harmonic_links(layer: int, base_ch: int, growth: int, multiplier: float):
    """(out_channels, in_channels, sources) of layer ``layer`` (1-based) of a HarDBlock whose
    input (layer 0) has ``base_ch`` channels: layer k reads layers k - 2**i for each 2**i
    dividing k; its width is ``growth * multiplier**(number of sources - 1)``, rounded to even."""
    if layer == 0:
        return base_ch, 0, []
    sources = [layer - 2**i for i in range(10) if layer % 2**i == 0]
    width = growth
    for _ in sources[1:]:  # multiplied step by step, as the official code rounds
        width *= multiplier
    out_ch = int(int(width + 1) / 2) * 2
    in_ch = sum(harmonic_links(s, base_ch, growth, multiplier)[0] for s in sources)
    return out_ch, in_ch, sources


class HarDBlock(nn.Module):
    """A harmonic dense block of ``n_layers`` 3x3 ConvLayers; emits odd layers and the last."""

    def __init__(self, in_ch: int, growth: int, multiplier: float, n_layers: int):
        super().__init__()
        self.links: List[List[int]] = []
        self.out_channels = 0
        layers = []
        for i in range(1, n_layers + 1):
            out_ch, layer_in, sources = harmonic_links(i, in_ch, growth, multiplier)
            self.links.append(sources)
            layers.append(ConvLayer(layer_in, out_ch))
            if i % 2 == 1 or i == n_layers:
                self.out_channels += out_ch
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        outputs = [x]
        for sources, layer in zip(self.links, self.layers):
            inputs = [outputs[s] for s in sources]
            outputs.append(layer(torch.cat(inputs, 1) if len(inputs) > 1 else inputs[0]))
        last = len(outputs) - 1
        return torch.cat([o for i, o in enumerate(outputs) if i % 2 == 1 or i == last], 1)


class FCHarDNet(nn.Module):
    """FC-HarDNet-70; ``forward(x)`` returns logits at the input size."""

    def __init__(self, num_classes: int = 19):
        super().__init__()
        self.base = nn.ModuleList(
            [
                ConvLayer(3, STEM[0], stride=2),
                ConvLayer(STEM[0], STEM[1]),
                ConvLayer(STEM[1], STEM[2], stride=2),
                ConvLayer(STEM[2], STEM[3]),
            ]
        )
        self.skip_layers = []  # indices in ``base`` whose outputs feed the decoder
        skip_channels = []
        ch = STEM[3]
        n_blocks = len(DEPTH)
        for i in range(n_blocks):
            block = HarDBlock(ch, GROWTH[i], GROWTH_MULTIPLIER, DEPTH[i])
            self.base.append(block)
            skip_channels.append(block.out_channels)
            if i < n_blocks - 1:
                self.skip_layers.append(len(self.base) - 1)
            self.base.append(ConvLayer(block.out_channels, TRANSITION[i], kernel=1))
            ch = TRANSITION[i]
            if i < n_blocks - 1:
                self.base.append(nn.AvgPool2d(kernel_size=2, stride=2))
        # decoder: upsample, concatenate the skip, 1x1 conv to half, HarDBlock
        self.denseBlocksUp = nn.ModuleList()  # registered before conv1x1_up: the official order
        self.conv1x1_up = nn.ModuleList()
        for i in range(n_blocks - 2, -1, -1):
            cat_ch = ch + skip_channels[i]
            self.conv1x1_up.append(ConvLayer(cat_ch, cat_ch // 2, kernel=1))
            block = HarDBlock(cat_ch // 2, GROWTH[i], GROWTH_MULTIPLIER, DEPTH[i])
            self.denseBlocksUp.append(block)
            ch = block.out_channels
        self.finalConv = nn.Conv2d(ch, num_classes, kernel_size=1, bias=True)

    def forward(self, x):
        skips = []
        y = x
        for i, layer in enumerate(self.base):
            y = layer(y)
            if i in self.skip_layers:
                skips.append(y)
        for conv, block in zip(self.conv1x1_up, self.denseBlocksUp):
            skip = skips.pop()
            up = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            y = block(conv(torch.cat([up, skip], 1)))
        logits = self.finalConv(y)  # (B, K, H/4, W/4)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)


@register_model(
    "fchardnet70",
    family="fchardnet",
    stride=64,  # four 2x2 average pools after the 1/4 stem
    dataset="cityscapes",
    channel_order="BGR",
    mean=(0.406, 0.456, 0.485),
    std=(0.225, 0.224, 0.229),
    paper={
        "resolution": (1024, 2048),
        "params": 4.12e6,
        "flops_fvcore": 35.6e9,
        "fps": 53.0,
        "fps_device": "gtx1080ti",
        "fps_protocol": "fchardnet",
        "miou_val": 77.7,
        "miou_test": 76.0,
        "license": FCHARDNET_LICENSE,
        "implementation": "official (PingoLH/FCHarDNet)",
        "upsample": "in the model: bilinear, align_corners=True to the input size; "
        "validate.py evaluates at 1024x2048 with no further resize",
        "counting": "RegSeg Table 9 (4.12 M, 35.6 GFLOPs) matches fvcore's count (multiply-adds "
        "+ BN + upsampling); the FCHarDNet README gives 4.1 M and 35.4 'GMACs / GFLOPs'",
        "source": "RegSeg Table 9 (FC-HarDNet-70: 4.12 M, 35.6 GFLOPs at 1024x2048, 53 FPS, "
        "val 77.7, test 76.0); FCHarDNet README (53 FPS on a 1080 Ti, 70 on a Titan V)",
    },
)
def fchardnet70(*, num_classes: int = 19) -> FCHarDNet:
    """FC-HarDNet-70 (official PingoLH/FCHarDNet ``hardnet``); 4,119,257 params at 19 classes."""
    return FCHarDNet(num_classes)
