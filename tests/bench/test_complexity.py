import torch

from segdeploy.bench import complexity
from segdeploy.bench.counting import format_count
from segdeploy.models import build


def test_regseg_published_figures():
    c = complexity(build("regseg"), (1024, 2048))
    assert c.params == 3_334_951
    assert c.macs == 38_353_186_560
    # the paper's "39.1 GFLOPs" is fvcore's count
    assert round(c.flops_fvcore / 1e9, 2) == 39.08


def test_counts_a_small_model_by_hand():
    class Small(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, groups=1, bias=True)
            self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
            self.bn = torch.nn.BatchNorm2d(8)
            self.fc = torch.nn.Linear(8, 5)

        def forward(self, x):
            x = self.bn(self.dw(self.conv(x)))  # (1, 8, 4, 6)
            x = torch.nn.functional.interpolate(x, size=(8, 12), mode="bilinear")
            return self.fc(torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))

    c = complexity(Small(), (4, 6))
    conv = 8 * 4 * 6 * 3 * 9
    dw = 8 * 4 * 6 * 1 * 9
    fc = 5 * 8
    assert c.macs == conv + dw + fc
    bn, up, pool = 2 * 8 * 24, 4 * 8 * 96, 8 * 96
    assert c.flops_fvcore == c.macs + bn + up + pool
    assert c.params == sum(p.numel() for p in Small().parameters())


def test_format_count():
    assert format_count(38_353_186_560) == "38.35 G"
    assert format_count(3_334_951) == "3.33 M"
    assert format_count(12) == "12"
