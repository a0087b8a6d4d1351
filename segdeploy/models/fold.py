"""Fold every BatchNorm next to a convolution into that convolution.

Generic over the zoo: the model is traced with torch.fx and two patterns are rewritten.

    conv ─► BN                 ==>   conv'            (w' = w·γ/σ, b' = (b-μ)·γ/σ + β)

    x_a ─► conv_a ─┐                 x_a ─► conv_a' ─┐
    x_b ─► conv_b ─┼─► cat ─► BN ==> x_b ─► conv_b' ─┼─► cat
    ...            ┘                 ...             ┘

The second pattern is RegSeg's D block (the split branches of its dilated conv are concatenated,
then normalized): fx's stock conv-BN fusion misses it, so the BN is split per channel range and
each slice folded into the conv that produced those channels. A conv's result must feed only the
BN (or the cat), and the conv module must be called once, otherwise folding would change another
consumer; such BNs are left in place.

A BatchNorm after anything else is folded forward when its only reader is an unpadded, ungrouped
conv: conv(γ/σ·x + β') = (w·γ/σ) * x + (b + Σ w·β'). BiSeNetV2 normalizes its pooled context
so before a 1x1 conv; left in place it would be the graph's one BatchNormalization, whose
weights INT8 quantizers mistake for a conv's. Other BNs stay.
"""

import copy

import torch
from torch import fx, nn


class FoldError(RuntimeError):
    """torch.fx cannot trace the model, so its BatchNorms cannot be folded here."""


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _fold_into(conv: nn.Module, bn: nn.Module, start: int, stop: int) -> None:
    """Fold channels [start, stop) of ``bn`` into ``conv`` (whose out-channels they are)."""
    with torch.no_grad():
        var = bn.running_var[start:stop]
        mean = bn.running_mean[start:stop]
        gamma = bn.weight[start:stop] if bn.weight is not None else torch.ones_like(var)
        beta = bn.bias[start:stop] if bn.bias is not None else torch.zeros_like(var)
        scale = gamma / torch.sqrt(var + bn.eps)  # (C,)
        weight = conv.weight * scale.reshape([-1] + [1] * (conv.weight.dim() - 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
        conv.weight = nn.Parameter(weight)
        conv.bias = nn.Parameter((bias - mean) * scale + beta)


class _Tracer(fx.Tracer):
    """fx's tracer, with subclasses of the conv and BatchNorm modules kept as leaves too (fx
    keeps only torch.nn's own classes; a zoo model may subclass BatchNorm2d to change its
    state_dict keys, e.g. STDC-Seg's head without ``num_batches_tracked``)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _CONVS + _BNS) or super().is_leaf_module(m, module_qualified_name)


def _trace(model: nn.Module) -> fx.GraphModule:
    graph = _Tracer().trace(model)
    return fx.GraphModule(model, graph, type(model).__name__)


def _fold_forward(bn: nn.Module, conv: nn.Module) -> None:
    """Fold ``bn`` into the unpadded, ungrouped ``conv`` that reads its output:
    conv(s·x + t) = (w·s) * x + (b + Σ w·t), with s = γ/σ and t = β - μ·s per input channel."""
    with torch.no_grad():
        gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_var)
        scale = gamma / torch.sqrt(bn.running_var + bn.eps)
        shift = beta - bn.running_mean * scale
        dims = [1, -1] + [1] * (conv.weight.dim() - 2)
        extra = (conv.weight * shift.reshape(dims)).flatten(1).sum(1)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(extra)
        conv.weight = nn.Parameter(conv.weight * scale.reshape(dims))
        conv.bias = nn.Parameter(bias + extra)


def _next_conv(node, modules, counts):
    """The conv that alone reads ``node`` if it may absorb a BatchNorm in front of it (called
    once, no padding, one group: a zero-padded border or grouped channels would not follow)."""
    users = list(node.users)
    if len(users) != 1 or users[0].op != "call_module" or counts.get(users[0].target) != 1:
        return None
    conv = modules[users[0].target]
    if not isinstance(conv, _CONVS) or conv.groups != 1 or users[0].args[0] is not node:
        return None
    return conv if all(p == 0 for p in conv.padding) and conv.padding_mode == "zeros" else None


def _call_counts(graph: fx.Graph):
    counts = {}
    for node in graph.nodes:
        if node.op == "call_module":
            counts[node.target] = counts.get(node.target, 0) + 1
    return counts


def _conv_node(node, modules, counts):
    """``node``'s conv module if ``node`` is a once-called conv whose result has one user."""
    if node.op != "call_module" or counts.get(node.target) != 1 or len(node.users) != 1:
        return None
    module = modules[node.target]
    if isinstance(module, _CONVS) and module.padding_mode == "zeros":
        return module
    return None


def _cat_branches(node, modules, counts):
    """Convs feeding a channel concat, or None if any input is not a foldable conv."""
    is_cat = node.op == "call_function" and node.target in (torch.cat, torch.concat)
    if not is_cat or len(node.users) != 1:
        return None
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if dim != 1 or not isinstance(tensors, (list, tuple)):
        return None
    convs = [_conv_node(t, modules, counts) if isinstance(t, fx.Node) else None for t in tensors]
    return None if any(c is None for c in convs) else convs


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every conv-following BatchNorm folded.

    The result is a ``torch.fx.GraphModule`` computing the same function (to float rounding);
    the input model is not modified. BatchNorms that do not follow a convolution stay.
    """
    model = copy.deepcopy(model).eval()
    spec = getattr(model, "segdeploy_spec", None)
    try:
        traced = _trace(model)
    except Exception as exc:  # data-dependent control flow and the like
        raise FoldError("torch.fx cannot trace {}: {}".format(type(model).__name__, exc)) from exc
    modules = dict(traced.named_modules())
    counts = _call_counts(traced.graph)
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], _BNS):
            continue
        bn = modules[node.target]
        if counts.get(node.target) != 1 or not bn.track_running_stats:
            continue
        source = node.args[0]
        if not isinstance(source, fx.Node):
            continue
        conv = _conv_node(source, modules, counts)
        convs = _cat_branches(source, modules, counts)
        after = _next_conv(node, modules, counts)
        if conv is not None and conv.out_channels == bn.num_features:
            _fold_into(conv, bn, 0, bn.num_features)
        elif convs and sum(c.out_channels for c in convs) == bn.num_features:
            start = 0
            for branch in convs:
                _fold_into(branch, bn, start, start + branch.out_channels)
                start += branch.out_channels
        elif after is not None and isinstance(source, fx.Node):
            _fold_forward(bn, after)  # e.g. BiSeNetV2's BN of the pooled context -> 1x1 conv
        else:
            continue
        node.replace_all_uses_with(source)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    if spec is not None:
        traced.segdeploy_spec = spec
    return traced.eval()


def count_batchnorms(model: nn.Module) -> int:
    """How many BatchNorm modules ``model`` still has."""
    return sum(isinstance(m, _BNS) for m in model.modules())
