"""MobileNetV2 blocks with torchvision's parameter names (no torchvision dependency).

"MobileNetV2: Inverted Residuals and Linear Bottlenecks" (Sandler et al., CVPR 2018). Blocks are
numbered like ``torchvision.models.mobilenet_v2().features`` (0: stem, 1..17: inverted residuals)
and keep its key layout (``features.3.conv.1.0.weight`` is block 3's depthwise conv), so ImageNet
weights in torchvision's format load (``backbone_weights.py``). The final 1x1 conv to 1280
channels (``features.18``) and the classifier are not built: no segmentation model here uses them.

Two padding conventions:

- torchvision's (``pad_input=False``, ``stem_padding=1``): every 3x3 conv pads itself by its
  dilation. SwiftNet-MNv2 uses this.
- DeepLabV3Plus-Pytorch's (``pad_input=True``, ``stem_padding=0``): that implementation zero-pads
  the *block input* (``F.pad`` by the dilation) before the 1x1 expansion conv and runs the
  depthwise conv unpadded, and its stem conv has no padding at all. The border pixels therefore
  see BN(conv(0)) after expansion rather than zeros, and a 64x128 input gives a 31x63 stem
  output. Its checkpoints were trained that way, so its model keeps it.

Output stride below 32 is reached as DeepLabV3Plus-Pytorch does it: once the running stride equals
``output_stride``, later strides become dilation; a stage's first block keeps the previous
dilation.
"""

from collections import OrderedDict
from typing import List

from torch import nn
from torch.nn import functional as F

# (expansion t, channels c, repeats n, first stride s): Table 2 of the paper
MOBILENETV2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) -> BN -> ReLU6 with keys ``0``, ``1``, ``2`` (Conv2dNormActivation).

    ``activation`` replaces ReLU6 where a model was trained with another one (TI's Lite models
    use ReLU); it has no parameters, so the key layout stays the same.
    """

    def __init__(
        self,
        in_ch,
        out_ch,
        kernel_size=3,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        activation=nn.ReLU6,
    ):
        super().__init__(
            nn.Conv2d(
                in_ch,
                out_ch,
                kernel_size,
                stride,
                padding,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_ch),
            activation(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection, identity shortcut when shapes allow."""

    def __init__(
        self,
        inp: int,
        oup: int,
        stride: int,
        expand_ratio: int,
        dilation: int = 1,
        pad_input: bool = False,
        activation=nn.ReLU6,
    ):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        # The 3x3 depthwise conv spans 2*dilation+1 pixels: pad by `dilation` on each side, either
        # in the conv itself or (DeepLabV3Plus-Pytorch) on the block input.
        self.input_padding = (dilation, dilation, dilation, dilation) if pad_input else None
        dw_padding = 0 if pad_input else dilation
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden, kernel_size=1, activation=activation))
        layers += [
            ConvBNReLU6(
                hidden,
                hidden,
                3,
                stride,
                dw_padding,
                dilation,
                groups=hidden,
                activation=activation,
            ),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        y = x if self.input_padding is None else F.pad(x, self.input_padding)
        y = self.conv(y)
        return x + y if self.use_res_connect else y


def mobilenet_v2_blocks(
    output_stride: int = 32, pad_input: bool = False, stem_padding: int = 1
) -> List[nn.Module]:
    """torchvision's ``features[0:18]`` as a list (stem + 17 inverted residuals)."""
    if output_stride not in (8, 16, 32):
        raise ValueError(
            "MobileNetV2 output_stride must be 8, 16 or 32, not {}".format(output_stride)
        )
    blocks = [ConvBNReLU6(3, STEM_CHANNELS, 3, 2, stem_padding)]
    current_stride, dilation, channels = 2, 1, STEM_CHANNELS
    for t, c, n, s in MOBILENETV2_SETTING:
        previous_dilation = dilation
        if current_stride == output_stride:
            stride, dilation = 1, dilation * s
        else:
            stride, current_stride = s, current_stride * s
        for i in range(n):
            blocks.append(
                InvertedResidual(
                    channels,
                    c,
                    stride if i == 0 else 1,
                    t,
                    previous_dilation if i == 0 else dilation,
                    pad_input,
                )
            )
            channels = c
    return blocks


def numbered_sequential(blocks, start: int) -> nn.Sequential:
    """An ``nn.Sequential`` whose children are named ``start``, ``start+1``, ... (key layout of
    a slice of torchvision's ``features``)."""
    return nn.Sequential(OrderedDict((str(start + i), b) for i, b in enumerate(blocks)))
