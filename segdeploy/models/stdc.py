"""STDC-Seg (Fan et al., "Rethinking BiSeNet for Real-time Semantic Segmentation", CVPR 2021).

Official implementation: MichaelFan01/STDC-Seg (MIT licence), ``models/model_stages.py`` on the
backbones of ``nets/stdcnet.py``; STDC1 is ``STDCNet813``, STDC2 ``STDCNet1446``. Module names,
parameter shapes and the eval-mode forward follow that code, so its released Cityscapes
checkpoints (``model_maxmIOU50.pth`` / ``model_maxmIOU75.pth``) load into these modules.

Seg50 and Seg75 are not different networks: they are the same weights run on the Cityscapes
frame scaled by 0.5 (512x1024) or 0.75 (768x1536); each has its own checkpoint. The registry
records both resolutions in ``paper["resolutions"]``.

The deployment form (what the official ``evaluation.py`` runs) differs from the training
model as follows:

- The detail-guidance and auxiliary heads (``conv_out16``, ``conv_out32``, ``conv_out_sp2`` ..
  ``conv_out_sp16``) are not built; their checkpoint keys are declared ``training_only``. The
  official evaluation uses only the first output (``net(imgs)[0]``).
- The backbone's ImageNet classifier (``conv_last``, ``fc``, ``bn``, ``linear``; 3.1 M
  parameters) is not built either: every released configuration has ``use_conv_last=False``, so
  the segmentation forward never runs it; its keys are declared ``training_only`` as well.
- The official backbone names each stage twice (``features.N`` and ``x2``/``x4``/.../``x32``,
  views of the same modules); both names are kept, so the state_dict is the official one.
- The head's BatchNorms are InPlaceABNSync with ``activation='none'`` in the official code: a
  plain BatchNorm (eps 1e-5) whose state_dict has no ``num_batches_tracked``. ``HeadBatchNorm``
  is a BatchNorm2d with the same keys.
- Global average pooling is a mean over H, W (the official ``avg_pool2d`` with the whole map as
  its window, which an ONNX export would freeze at the export size), and the nearest upsampling
  of the 1x1 global context to the 1/32 map is a broadcast add: the same values.

The logits are upsampled inside the model to the input size, bilinear with
``align_corners=True`` (as the official forward does). The official evaluation then resizes
them to the label size, again bilinear with ``align_corners=True``; at the network's own
resolution that step is the identity, and at Seg50/Seg75 our runtime brings the labels back to
the frame size instead (nearest neighbour), which the zoo table states.
"""

import torch
from torch import nn
from torch.nn import functional as F

from .registry import register_model

STDC_LICENSE = "MIT (MichaelFan01/STDC-Seg)"
STDC_TRAINING_ONLY = (
    "conv_out16.",
    "conv_out32.",
    "conv_out_sp16.",
    "conv_out_sp8.",
    "conv_out_sp4.",
    "conv_out_sp2.",
    "cp.backbone.conv_last.",
    "cp.backbone.fc.",
    "cp.backbone.bn.",
    "cp.backbone.linear.",
)
# STDCNet813 / STDCNet1446: blocks per stage (1/8, 1/16, 1/32), 4 convolutions per block
STDC_LAYERS = {"stdc1": (2, 2, 2), "stdc2": (4, 5, 3)}


class HeadBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with InPlaceABN's state_dict keys: no ``num_batches_tracked``.

    The official head normalizes with InPlaceABNSync(activation='none'), whose buffers are
    only ``running_mean`` and ``running_var``; in eval mode it computes what this computes.
    """

    def __init__(self, num_features: int):
        super().__init__(num_features)
        self.register_buffer("num_batches_tracked", None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        # torch adds a num_batches_tracked entry to old-format (version < 2) state_dicts;
        # this module has none, so load as the current format.
        metadata = dict(local_metadata, version=self._version)
        super()._load_from_state_dict(state_dict, prefix, metadata, *args)


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, 1) mean over H, W: the official whole-map ``avg_pool2d``, at any size."""
    return x.mean(dim=(2, 3), keepdim=True)


# --- backbone (nets/stdcnet.py) -----------------------------------------------------------------


class ConvX(nn.Module):
    """Conv (no bias, 'same' padding) -> BatchNorm -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class CatBottleneck(nn.Module):
    """The STDC module: four convolutions, each halving the width of the one before
    (out/2, out/4, out/8, out/8), all outputs concatenated. At stride 2 the second conv sees
    the first one's output after a depthwise 3x3 stride-2 conv + BN (``avd_layer``), and the
    first one's output joins the concatenation through a 3x3 stride-2 average pool."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, n_convs: int = 4):
        super().__init__()
        self.stride = stride
        half = out_ch // 2
        self.conv_list = nn.ModuleList()  # registered first: the official key order
        if stride == 2:
            self.avd_layer = nn.Sequential(
                nn.Conv2d(half, half, 3, 2, 1, groups=half, bias=False),
                nn.BatchNorm2d(half),
            )
            self.skip = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
        widths = [out_ch // 2 ** (i + 1) for i in range(n_convs - 1)]
        widths.append(widths[-1])  # the last conv keeps the width of the one before
        self.conv_list.append(ConvX(in_ch, widths[0], kernel=1))
        for i in range(1, n_convs):
            self.conv_list.append(ConvX(widths[i - 1], widths[i]))

    def forward(self, x):
        first = self.conv_list[0](x)
        y = self.avd_layer(first) if self.stride == 2 else first
        outs = []
        for conv in self.conv_list[1:]:
            y = conv(y)
            outs.append(y)
        if self.stride == 2:
            first = self.skip(first)
        return torch.cat([first] + outs, dim=1)


class STDCNet(nn.Module):
    """The STDC backbone's feature extractor; returns the 1/2 .. 1/32 maps.

    ``features`` holds the stem (two stride-2 ConvX) and the STDC modules; ``x2`` .. ``x32``
    are Sequential views of its slices, as in the official code (so both key families exist).
    """

    def __init__(self, layers, base: int = 64):
        super().__init__()
        blocks = [ConvX(3, base // 2, 3, 2), ConvX(base // 2, base, 3, 2)]
        in_ch = base
        for stage, n_blocks in enumerate(layers):
            out_ch = base * 4 * 2**stage
            for j in range(n_blocks):
                blocks.append(CatBottleneck(in_ch, out_ch, stride=2 if j == 0 else 1))
                in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        ends = [1, 2]
        for n_blocks in layers:
            ends.append(ends[-1] + n_blocks)
        self.x2 = nn.Sequential(self.features[: ends[0]])
        self.x4 = nn.Sequential(self.features[ends[0] : ends[1]])
        self.x8 = nn.Sequential(self.features[ends[1] : ends[2]])
        self.x16 = nn.Sequential(self.features[ends[2] : ends[3]])
        self.x32 = nn.Sequential(self.features[ends[3] :])

    def forward(self, x):
        feat2 = self.x2(x)
        feat4 = self.x4(feat2)
        feat8 = self.x8(feat4)
        feat16 = self.x16(feat8)
        feat32 = self.x32(feat16)
        return feat2, feat4, feat8, feat16, feat32


# --- segmentation head (models/model_stages.py) -------------------------------------------------


class ConvBNReLU(nn.Module):
    """The head's conv (no bias) -> BatchNorm (InPlaceABN keys) -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False)
        self.bn = HeadBatchNorm(out_ch)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class AttentionRefinementModule(nn.Module):
    """3x3 ConvBNReLU, then a channel gate: sigmoid(BN(1x1 conv(global mean)))."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch)
        self.conv_atten = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn_atten = HeadBatchNorm(out_ch)
        self.sigmoid_atten = nn.Sigmoid()

    def forward(self, x):
        feat = self.conv(x)
        gate = self.sigmoid_atten(self.bn_atten(self.conv_atten(global_mean(feat))))
        return feat * gate


class ContextPath(nn.Module):
    """Backbone, ARMs on the 1/16 and 1/32 maps, global context, nearest-upsampled sums."""

    def __init__(self, layers):
        super().__init__()
        self.backbone = STDCNet(layers)
        self.arm16 = AttentionRefinementModule(512, 128)
        self.arm32 = AttentionRefinementModule(1024, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(1024, 128, kernel=1, padding=0)

    def forward(self, x):
        feat2, feat4, feat8, feat16, feat32 = self.backbone(x)
        context = self.conv_avg(global_mean(feat32))  # broadcast = official nearest 1x1 -> map
        feat32_sum = self.arm32(feat32) + context
        up32 = F.interpolate(feat32_sum, size=feat16.shape[-2:], mode="nearest")
        up32 = self.conv_head32(up32)
        feat16_sum = self.arm16(feat16) + up32
        up16 = F.interpolate(feat16_sum, size=feat8.shape[-2:], mode="nearest")
        up16 = self.conv_head16(up16)
        return feat8, up16


class FeatureFusionModule(nn.Module):
    """Concatenate, 1x1 ConvBNReLU, then ``feat * gate + feat`` with an SE-style gate."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_ch, out_ch, kernel=1, padding=0)
        self.conv1 = nn.Conv2d(out_ch, out_ch // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch // 4, out_ch, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.sigmoid = nn.Sigmoid()

    def forward(self, spatial, context):
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        gate = self.sigmoid(self.conv2(self.relu(self.conv1(global_mean(feat)))))
        return feat * gate + feat


class SegOutput(nn.Module):
    """3x3 ConvBNReLU then a 1x1 classifier without bias (``BiSeNetOutput``)."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch)
        self.conv_out = nn.Conv2d(mid_ch, num_classes, 1, bias=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))


class STDCSeg(nn.Module):
    """STDC-Seg in its deployment form; ``forward(x)`` returns logits at the input size."""

    def __init__(self, variant: str = "stdc1", num_classes: int = 19):
        super().__init__()
        self.cp = ContextPath(STDC_LAYERS[variant])
        self.ffm = FeatureFusionModule(256 + 128, 256)
        self.conv_out = SegOutput(256, 256, num_classes)

    def forward(self, x):
        feat8, context8 = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, context8))  # (B, K, H/8, W/8)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)


def _paper(**figures):
    paper = {
        "resolutions": {"Seg50": (512, 1024), "Seg75": (768, 1536)},
        "fps_device": "gtx1080ti",
        "fps_protocol": "stdc",
        "fps_software": "TensorRT 5.1.5 (the STDC-Seg README's speed-test setup)",
        "implementation": "official (MichaelFan01/STDC-Seg)",
        "license": STDC_LICENSE,
        "upsample": "in the model: bilinear, align_corners=True to the input size; "
        "evaluation.py then resizes to the label size bilinear, align_corners=True (our runtime "
        "resizes the labels with nearest neighbour instead)",
        "counting": "RegSeg Table 9's 16.1 M for STDC2-Seg75 is every parameter of the official "
        "training model (16,079,392: ImageNet classifier and detail/auxiliary heads included; "
        "the deployment form has 12,305,568); its 54.9 GFLOPs match neither the deployment "
        "form (52.78 GMACs, 53.03 G fvcore) nor the training forward (66.76 GMACs)",
    }
    paper.update(figures)
    return paper


@register_model(
    "stdc1_seg",
    family="stdc",
    stride=32,
    dataset="cityscapes",
    training_only=STDC_TRAINING_ONLY,
    paper=_paper(
        resolution=(512, 1024),
        fps=250.4,
        miou_test=71.9,
        source="STDC paper abstract (STDC1-Seg50: 71.9 test mIoU at 250.4 FPS on a GTX 1080 "
        "Ti); one official Cityscapes checkpoint per resolution (Seg50, Seg75)",
    ),
)
def stdc1_seg(*, num_classes: int = 19) -> STDCSeg:
    """STDC1-Seg (STDCNet813 backbone); Seg50/Seg75 = 512x1024/768x1536 inputs."""
    return STDCSeg("stdc1", num_classes)


@register_model(
    "stdc2_seg",
    family="stdc",
    stride=32,
    dataset="cityscapes",
    training_only=STDC_TRAINING_ONLY,
    paper=_paper(
        resolution=(768, 1536),
        params=16.1e6,
        flops_fvcore=54.9e9,
        fps=97.0,
        miou_val=77.0,
        miou_test=76.8,
        source="RegSeg Table 9 (STDC2-Seg75: 16.1 M, 54.9 GFLOPs, 97.0 FPS, val 77.0, test "
        "76.8); STDC paper abstract (76.8 test mIoU at 97.0 FPS on a GTX 1080 Ti)",
    ),
)
def stdc2_seg(*, num_classes: int = 19) -> STDCSeg:
    """STDC2-Seg (STDCNet1446 backbone); Seg50/Seg75 = 512x1024/768x1536 inputs."""
    return STDCSeg("stdc2", num_classes)
