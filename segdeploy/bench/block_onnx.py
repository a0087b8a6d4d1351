"""The ``segbench --blocks`` graphs written as ONNX bytes with numpy alone, no onnx package.

A Jetson TX2 (JetPack 4.6, Python 3.6) has TensorRT but no onnx, and ``--blocks --backends
tensorrt`` builds its engines from ONNX graphs of the RegSeg blocks. This module writes those
graphs, and the fused (1,14) graph with its ``DBlockConv`` node, straight into the protobuf wire
format, field for field what ``onnx.helper`` writes for ``blocks.onnx_block`` and what
``engines.dblock_graph.fuse_dblocks`` makes of it (tests/bench/test_block_onnx.py compares them on
the host). Only what these graphs use: float32/int64 initializers as raw data, INT / INTS /
STRING attributes, static float32 inputs and outputs. Python 3.6 compatible.
"""

import os

import numpy as np

from .._io import write_bytes
from .block_graphs import BLOCKS, FUSED, FUSED_OF, GROUP_WIDTH

_FLOAT, _INT64 = 1, 7
_ATTR_INT, _ATTR_STRING, _ATTR_INTS = 2, 3, 7
_DTYPES = {np.dtype(np.float32): _FLOAT, np.dtype(np.int64): _INT64}
# engines.dblock_graph's plugin contract (kept equal by the host test).
PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE, DOMAIN = "DBlockConv", "1", "", "trt.plugins"


def _varint(value):
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf writes negative numbers
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field, wire):
    return _varint((field << 3) | wire)


def _int(field, value):
    return _key(field, 0) + _varint(int(value))


def _bytes(field, data):
    if not isinstance(data, bytes):
        data = data.encode("utf-8")
    return _key(field, 2) + _varint(len(data)) + data


def tensor(name, array):
    """TensorProto: dims (1), data_type (2), name (8), raw_data (9, little-endian)."""
    array = np.asarray(array)
    body = b"".join(_int(1, d) for d in array.shape)
    body += _int(2, _DTYPES[array.dtype]) + _bytes(8, name)
    return body + _bytes(9, array.astype(array.dtype.newbyteorder("<")).tobytes())


def attribute(name, value):
    """AttributeProto: name (1), i (3) / s (4) / ints (8, one field each), type (20)."""
    body = _bytes(1, name)
    if isinstance(value, str):
        return body + _bytes(4, value) + _int(20, _ATTR_STRING)
    if isinstance(value, (list, tuple)):
        return body + b"".join(_int(8, v) for v in value) + _int(20, _ATTR_INTS)
    return body + _int(3, value) + _int(20, _ATTR_INT)


def node(op_type, inputs, outputs, name, domain=None, **attrs):
    """NodeProto: input (1), output (2), name (3), op_type (4), attribute (5, sorted by name as
    onnx.helper does), domain (7)."""
    body = b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs)
    body += _bytes(3, name) + _bytes(4, op_type)
    body += b"".join(_bytes(5, attribute(k, attrs[k])) for k in sorted(attrs))
    return body + (_bytes(7, domain) if domain is not None else b"")


def value_info(name, shape, elem_type=_FLOAT):
    dims = b"".join(_bytes(1, _int(1, d)) for d in shape)
    tensor_type = _int(1, elem_type) + _bytes(2, dims)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


def model(nodes, inits, inputs, outputs, graph_name, opsets, ir_version=7):
    """ModelProto: ir_version (1), graph (7), opset_import (8)."""
    graph = b"".join(_bytes(1, n) for n in nodes) + _bytes(2, graph_name)
    graph += b"".join(_bytes(5, t) for t in inits)
    graph += b"".join(_bytes(11, v) for v in inputs) + b"".join(_bytes(12, v) for v in outputs)
    out = _int(1, ir_version) + _bytes(7, graph)
    for domain, version in opsets:
        out += _bytes(8, _bytes(1, domain) + _int(2, version))  # "" written too, as onnx does
    return out


def block_bytes(dilations, weights, height, width, fused=False, opset=13):
    """``blocks.onnx_block`` as bytes; ``fused``: the D block with its split 3x3 stage, the
    Concat and the ReLU after it as one DBlockConv node (what ``fuse_dblocks`` writes)."""
    inits, nodes = [], []

    def const(name, array):
        inits.append(tensor(name, array))
        return name

    def conv(name, x, wb, dilation=1, groups=1):
        w, b = wb
        k = w.shape[-1]
        pad = dilation * (k // 2)
        inputs = [x, const(name + ".weight", w), const(name + ".bias", b)]
        nodes.append(
            node("Conv", inputs, [name], name, kernel_shape=[k, k], dilations=[dilation] * 2,
                 pads=[pad] * 4, strides=[1, 1], group=groups)
        )  # fmt: skip
        return name

    def op(kind, inputs, name, **attrs):
        nodes.append(node(kind, inputs, [name], name, **attrs))
        return name

    width_ = weights["conv1"][0].shape[0]
    h = op("Relu", [conv("conv1", "x", weights["conv1"])], "act1")
    fused_init = []
    if dilations is None:
        h = op("Relu", [conv("conv2", h, weights["conv2"][0], 1, width_ // GROUP_WIDTH)], "act2")
    elif fused:
        w = np.concatenate([wb[0] for wb in weights["conv2"]], axis=0).astype(np.float32)
        b = np.concatenate([wb[1] for wb in weights["conv2"]], axis=0).astype(np.float32)
        fused_init = [tensor("dblock_0.weight", w), tensor("dblock_0.bias", b)]
        nodes.append(
            node(PLUGIN_NAME, [h, "dblock_0.weight", "dblock_0.bias"], ["act2"],
                 PLUGIN_NAME + "_0", domain=DOMAIN, dilations=[int(d) for d in dilations],
                 group_width=GROUP_WIDTH, relu=1, plugin_version=PLUGIN_VERSION,
                 plugin_namespace=PLUGIN_NAMESPACE)
        )  # fmt: skip
        h = "act2"
    else:
        half = width_ // 2
        const("split_sizes", np.array([half, half], np.int64))
        nodes.append(node("Split", [h, "split_sizes"], ["part0", "part1"], "split", axis=1))
        branches = [
            conv("conv2_{}".format(i), "part{}".format(i), wb, d, half // GROUP_WIDTH)
            for i, (wb, d) in enumerate(zip(weights["conv2"], dilations))
        ]
        h = op("Relu", [op("Concat", branches, "concat", axis=1)], "act2")
    s = op("GlobalAveragePool", [h], "se_pool")
    s = op("Relu", [conv("se1", s, weights["se1"])], "se_act1")
    s = op("Sigmoid", [conv("se2", s, weights["se2"])], "se_act2")
    h = op("Mul", [h, s], "se_scale")
    h = op("Add", [conv("conv3", h, weights["conv3"]), "x"], "residual")
    op("Relu", [h], "y")
    shape = [1, width_, height, width]
    opsets = [("", opset)] + ([(DOMAIN, 1)] if fused else [])
    return model(
        nodes, inits + fused_init, [value_info("x", shape)], [value_info("y", shape)],
        "regseg_block", opsets,
    )  # fmt: skip


def write_graphs(weights, height, width, workdir):
    """What ``blocks._write_graphs`` writes (FP32 graphs), without onnx: label -> path."""
    paths = {}
    for label, dilations in BLOCKS:
        path = os.path.join(workdir, "block_{}.onnx".format(len(paths)))
        write_bytes(path, block_bytes(dilations, weights[label], height, width))
        paths[label] = path
        if label == FUSED_OF:
            path = os.path.join(workdir, "block_fused.onnx")
            write_bytes(path, block_bytes(dilations, weights[label], height, width, fused=True))
            paths[FUSED] = path
    return paths
