"""Parameters and multiply-adds, in the two conventions papers quote.

``macs`` counts the multiply-adds of convolutions and linear layers (and matrix products): the
figure of SwiftNet's and most "GMACs" tables. ``flops_fvcore`` adds what fvcore's default
handlers also count, because RegSeg's "39.1 GFLOPs" comes from fvcore: BatchNorm (2 per element
in eval mode with affine parameters, 1 without), bilinear upsampling (4 per output element),
nearest upsampling (1 per output element) and adaptive average pooling (1 per input element).
Like fvcore it ignores activations, element-wise sums and fixed-window pooling.

Counting intercepts torch functions during one forward pass (a ``TorchFunctionMode``), so
functional calls such as ``F.interpolate`` count as well as modules. The forward runs on the
``meta`` device when the model allows it, so even 1024x2048 costs no real compute.
"""

from collections import OrderedDict, namedtuple

Complexity = namedtuple("Complexity", ["params", "macs", "flops_fvcore", "input_hw", "by_op"])
Complexity.__doc__ = """params; macs (conv/linear multiply-adds); flops_fvcore (fvcore's count);
input_hw; by_op (OrderedDict op name -> fvcore-convention count)."""


def _numel(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _make_counter():
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    class Counter(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.macs = 0
            self.extra = 0
            self.by_op = OrderedDict()

        def _add(self, op, macs=0, extra=0):
            self.macs += macs
            self.extra += extra
            self.by_op[op] = self.by_op.get(op, 0) + macs + extra

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if func in (F.conv1d, F.conv2d, F.conv3d, torch.conv2d, torch.conv1d, torch.conv3d):
                weight = args[1] if len(args) > 1 else kwargs["weight"]
                # out elements x (in_ch / groups) x kernel area: weight[0] is one filter
                self._add("conv", macs=_numel(out.shape) * _numel(weight.shape[1:]))
            elif func in (F.conv_transpose2d, torch.conv_transpose2d):
                weight = args[1] if len(args) > 1 else kwargs["weight"]
                inp = args[0]
                self._add("conv_transpose", macs=_numel(inp.shape) * _numel(weight.shape[1:]))
            elif func is F.linear:
                weight = args[1] if len(args) > 1 else kwargs["weight"]
                self._add("linear", macs=_numel(out.shape) * int(weight.shape[-1]))
            elif func in (torch.matmul, torch.mm, torch.bmm, torch.Tensor.matmul):
                a = args[0]
                self._add("matmul", macs=_numel(out.shape) * int(a.shape[-1]))
            elif func is F.batch_norm:
                weight = kwargs.get("weight", args[3] if len(args) > 3 else None)
                training = kwargs.get("training", args[5] if len(args) > 5 else False)
                per = 4 if training else (2 if weight is not None else 1)
                self._add("batch_norm", extra=per * _numel(args[0].shape))
            elif func is F.interpolate:
                mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
                per = {"bilinear": 4, "nearest": 1}.get(mode, 0)
                self._add("upsample_" + mode, extra=per * _numel(out.shape))
            elif func is F.adaptive_avg_pool2d:
                self._add("adaptive_avg_pool2d", extra=_numel(args[0].shape))
            return out

    return Counter()


def complexity(model, input_hw, in_channels=3):
    """Count params and multiply-adds of ``model`` for one ``1 x in_channels x H x W`` input.

    Returns ``Complexity(params, macs, flops_fvcore, input_hw, by_op)``.
    """
    import copy

    import torch

    height, width = int(input_hw[0]), int(input_hw[1])
    params = sum(p.numel() for p in model.parameters())
    try:
        # meta tensors carry shapes only: the count costs nothing even at 1024x2048.
        probe = copy.deepcopy(model).to("meta").eval()
        x = torch.empty(1, in_channels, height, width, device="meta")
    except Exception:  # a model with non-meta-able state: count on the CPU
        probe = model.eval()
        x = torch.zeros(1, in_channels, height, width)
    counter = _make_counter()
    with torch.no_grad(), counter:
        probe(x)
    return Complexity(
        params=params,
        macs=counter.macs,
        flops_fvcore=counter.macs + counter.extra,
        input_hw=(height, width),
        by_op=counter.by_op,
    )


def format_count(n):
    """12345678 -> '12.35 M' ; 38353186560 -> '38.35 G'."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return "{:.2f} {}".format(n / scale, unit)
    return str(n)
