import pytest
import torch

from segdeploy.export import fold_batchnorm
from segdeploy.models import build, list_models
from segdeploy.models.fold import count_batchnorms
from segdeploy.models.golden import deterministic_state, probe_input


def _with_stats(name):
    model = build(name)
    # deterministic_state gives BNs non-trivial running statistics and affine parameters
    model.load_state_dict(deterministic_state(model))
    return model.eval()


@pytest.mark.parametrize("name", list_models())
def test_folding_keeps_outputs(name):
    model = _with_stats(name)
    spec = model.segdeploy_spec
    folded = fold_batchnorm(model)
    h, w = 2 * spec.stride * 2, 4 * spec.stride * 2
    x = torch.from_numpy(probe_input((1, 3, h, w), scale=2.0))
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert out.shape == ref.shape
    rel = (out - ref).abs().max() / ref.abs().max()
    assert rel < 1e-4, rel
    assert count_batchnorms(folded) < count_batchnorms(model)
    assert not folded.training


@pytest.mark.parametrize("name", [n for n in list_models() if n.startswith("regseg")])
def test_regseg_has_no_batchnorm_left(name):
    model = _with_stats(name)
    folded = fold_batchnorm(model)
    assert count_batchnorms(model) > 0
    assert count_batchnorms(folded) == 0


def test_input_model_is_not_modified():
    model = _with_stats("regseg_tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bn_after_concat_of_split_branches_is_folded():
    # The D-block pattern that fx's stock fusion misses: split -> convs -> cat -> BN.
    class Branches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.b = torch.nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2, bias=False)
            self.bn = torch.nn.BatchNorm2d(8)

        def forward(self, x):
            parts = torch.split(x, 4, dim=1)
            return self.bn(torch.cat([self.a(parts[0]), self.b(parts[1])], dim=1))

    model = Branches().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.weight.uniform_(0.5, 2)
        model.bn.bias.uniform_(-1, 1)
    folded = fold_batchnorm(model)
    x = torch.randn(2, 8, 16, 16)
    assert count_batchnorms(folded) == 0
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_bn_whose_conv_output_is_reused_is_left_alone():
    class Reuse(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)
            self.bn = torch.nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # folding would change the second use of y

    model = Reuse().eval()
    with torch.no_grad():
        model.bn.running_var.fill_(4.0)
    folded = fold_batchnorm(model)
    assert count_batchnorms(folded) == 1
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(folded(x), model(x))


class _PooledBN(torch.nn.Module):
    """BiSeNetV2's context embedding: BN of a pooled map, then a conv (1x1 or padded 3x3)."""

    def __init__(self, kernel):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(4)
        self.conv = torch.nn.Conv2d(4, 3, kernel, padding=kernel // 2)

    def forward(self, x):
        return self.conv(self.bn(x.mean(dim=(2, 3), keepdim=True) + x))


@pytest.mark.parametrize("kernel,folded", [(1, True), (3, False)])
def test_bn_before_an_unpadded_conv_folds_forward(kernel, folded):
    model = _PooledBN(kernel).eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-1, 1)
    out = fold_batchnorm(model)
    # a padded conv sees zeros at the border, not BN(0): that BN must stay
    assert count_batchnorms(out) == (0 if folded else 1)
    x = torch.randn(2, 4, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(out(x), model(x), rtol=1e-5, atol=1e-5)
