"""Layers shared by several model families."""

import torch
from torch import nn
from torch.nn import functional as F


class ConvBnAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> optional ReLU, with keys ``conv``, ``bn``, ``act``."""

    def __init__(
        self, in_ch, out_ch, kernel_size=1, stride=1, padding=0, dilation=1, groups=1, act=True
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_ch, out_ch, kernel_size, stride, padding, dilation, groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_ch)
        if act:
            self.act = nn.ReLU(inplace=True)


def resize_to(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize with ``align_corners=False``: what every zoo decoder uses."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
