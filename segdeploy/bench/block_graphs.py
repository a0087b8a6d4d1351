"""The blocks of RegSeg's Table 1 as ``segbench --blocks`` times them: deterministic fan-in-scaled
weights, the input at RegSeg's 1/16 stage, each block as an ONNX graph (what segexport writes for
it, BatchNorm folded) and as the PyTorch module, and the model card the graphs carry.

Python 3.6 compatible; torch and onnx are imported by the functions that use them.
"""

import numpy as np

WIDTH = 256
GROUP_WIDTH = 16
SQUEEZE = WIDTH // 4  # RegSeg's SE squeezes to in_channels // 4
STRIDE = 16  # the blocks sit at 1/16 of the frame

# (label, dilations; None = the Y block's single grouped conv)
BLOCKS = (
    ("Y block", None),
    ("D block (1,1)", (1, 1)),
    ("D block (1,4)", (1, 4)),
    ("D block (1,10)", (1, 10)),
    ("D block (1,14)", (1, 14)),
)
FUSED = "D block (1,14) fused"
FUSED_OF = "D block (1,14)"

# RegSeg paper, Table 1 (ms on a T4; the ratio is to the Y block).
PAPER_MS = {"Y block": 1.0, "D block (1,1)": 1.1, "D block (1,4)": 1.2, "D block (1,10)": 1.2}
PAPER_SOURCE = (
    "RegSeg paper Table 1: T4, PyTorch 1.9 + CUDA 10.2, mixed precision, 1 x 256 x 64 x 128, "
    "w=256, g=16 (Sec. 4.7 timing: 10 warm-up, mean of 100)"
)
HOST_OP_NOTE = (
    "functional check only: DBlockConv runs the kernel's host build through an ONNX Runtime "
    "Python op (copies through Python lists); not a speed proxy"
)


# --- the blocks ---------------------------------------------------------------------------------


def block_weights(dilations, seed=0):
    """Deterministic fan-in-scaled weights and biases of one block (numpy, float32)."""
    rng = np.random.RandomState(seed)

    def conv(out_ch, in_ch, k):
        fan_in = in_ch * k * k
        w = rng.standard_normal((out_ch, in_ch, k, k)) * np.sqrt(2.0 / fan_in)
        return w.astype(np.float32), (0.1 * rng.standard_normal(out_ch)).astype(np.float32)

    weights = {}
    weights["conv1"] = conv(WIDTH, WIDTH, 1)
    if dilations is None:
        weights["conv2"] = [conv(WIDTH, GROUP_WIDTH, 3)]
    else:
        weights["conv2"] = [conv(WIDTH // 2, GROUP_WIDTH, 3) for _ in dilations]
    weights["se1"] = conv(SQUEEZE, WIDTH, 1)
    weights["se2"] = conv(WIDTH, SQUEEZE, 1)
    weights["conv3"] = conv(WIDTH, WIDTH, 1)
    return weights


def onnx_block(dilations, weights, height, width, opset=13):
    """The block as an ONNX graph: x (1, 256, h, w) -> y (1, 256, h, w), BatchNorm folded."""
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def conv(name, x, wb, dilation=1, groups=1):
        w, b = wb
        k = w.shape[-1]
        pad = dilation * (k // 2)
        nodes.append(
            helper.make_node(
                "Conv",
                [x, const(name + ".weight", w), const(name + ".bias", b)],
                [name],
                name=name,
                kernel_shape=[k, k],
                dilations=[dilation, dilation],
                pads=[pad] * 4,
                strides=[1, 1],
                group=groups,
            )
        )
        return name

    def op(kind, inputs, name, **attrs):
        nodes.append(helper.make_node(kind, inputs, [name], name=name, **attrs))
        return name

    h = op("Relu", [conv("conv1", "x", weights["conv1"])], "act1")
    if dilations is None:
        mid = conv("conv2", h, weights["conv2"][0], 1, WIDTH // GROUP_WIDTH)
    else:
        half = WIDTH // 2
        sizes = const("split_sizes", np.array([half, half], np.int64))
        nodes.append(
            helper.make_node("Split", [h, sizes], ["part0", "part1"], name="split", axis=1)
        )
        branches = [
            conv("conv2_{}".format(i), "part{}".format(i), wb, d, half // GROUP_WIDTH)
            for i, (wb, d) in enumerate(zip(weights["conv2"], dilations))
        ]
        mid = op("Concat", branches, "concat", axis=1)
    h = op("Relu", [mid], "act2")
    s = op("GlobalAveragePool", [h], "se_pool")
    s = op("Relu", [conv("se1", s, weights["se1"])], "se_act1")
    s = op("Sigmoid", [conv("se2", s, weights["se2"])], "se_act2")
    h = op("Mul", [h, s], "se_scale")
    h = op("Add", [conv("conv3", h, weights["conv3"]), "x"], "residual")
    op("Relu", [h], "y")
    shape = [1, WIDTH, height, width]
    graph = helper.make_graph(
        nodes,
        "regseg_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        inits,
    )
    # IR 7 (opset 13) is what TensorRT 8.2's parser and every ONNX Runtime read.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


def torch_block(dilations, weights):
    """RegSeg's DBlock (``segdeploy.models.regseg``) carrying ``weights``; BatchNorms kept with
    identity statistics and the conv bias as their shift, so it computes ``onnx_block``."""
    import torch

    from ..models.regseg import DBlock

    block = DBlock(WIDTH, WIDTH, list(dilations or [1]), GROUP_WIDTH, 1).eval()

    def load(conv, bn, wb):
        w, b = wb
        conv.weight.data.copy_(torch.from_numpy(w))
        if bn is None:
            conv.bias.data.copy_(torch.from_numpy(b))
            return
        bn.weight.data.fill_(1.0)
        bn.running_mean.data.zero_()
        bn.running_var.data.fill_(1.0 - bn.eps)  # gamma / sqrt(var + eps) = 1
        bn.bias.data[: b.shape[0]].copy_(torch.from_numpy(b))

    load(block.conv1, block.bn1, weights["conv1"])
    if dilations is None:
        load(block.conv2, block.bn2, weights["conv2"][0])
    else:
        for conv, wb in zip(block.conv2.convs, weights["conv2"]):
            conv.weight.data.copy_(torch.from_numpy(wb[0]))
        load_bias = np.concatenate([wb[1] for wb in weights["conv2"]])
        block.bn2.weight.data.fill_(1.0)
        block.bn2.running_mean.data.zero_()
        block.bn2.running_var.data.fill_(1.0 - block.bn2.eps)
        block.bn2.bias.data.copy_(torch.from_numpy(load_bias))
    load(block.se.conv1, None, weights["se1"])
    load(block.se.conv2, None, weights["se2"])
    load(block.conv3, block.bn3, weights["conv3"])
    return block


def block_input(height, width, seed=1):
    """The block's input: 1 x 256 x h x w, post-ReLU-like (non-negative) values."""
    rng = np.random.RandomState(seed)
    return np.maximum(rng.standard_normal((1, WIDTH, height, width)), 0).astype(np.float32)


def block_card(height, width):
    """The minimal model card engines want for a block graph (input x, output y)."""
    from ..card import SCHEMA

    return {
        "schema": SCHEMA,
        "model": {"name": "regseg_block", "num_classes": WIDTH},
        "input": {
            "name": "x",
            "layout": "NCHW",
            "channel_order": "RGB",
            "dtype": "float32",
            "scale": 1.0,
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
            "height": height,
            "width": width,
            "dynamic": None,
            "stride": 1,
        },
        "output": {"name": "y", "kind": "logits", "dtype": "float32", "resolution": "input"},
        "provenance": {},
        "parity": {},
    }


# --- runners: one callable per block and backend -------------------------------------------------
