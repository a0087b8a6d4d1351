"""Graph rewrite: every split-dilation 3x3 stage of a D block becomes one ``DBlockConv`` node.

    X (N, C, H, W)                                      X (N, C, H, W)
        │                                                   │
      Split(axis=1, [C/2, C/2])              W (C, 16, 3, 3) ─┤  both convs' weights, stacked
     ┌──┴─────────────┐                      B (C,)          ─┤  both convs' biases (0 if none)
   Conv d1          Conv d2                                   │
   (3x3, groups of 16, stride 1, pad = dilation)   ==>   DBlockConv(dilations=[d1, d2],
     └──┬─────────────┘                                      group_width=16, relu=0|1,
      Concat(axis=1)                                         plugin_version="1",
        │                                                    plugin_namespace="")
     [Relu]  (fused when it is the Concat's only consumer)    │
        │                                                     Y
        Y

The pattern is found by structure (op types, attributes, constant weights, who consumes what),
never by node names, so it matches RegSeg, its tiny variant and any graph built the same way.
A candidate that breaks the contract (group width other than 16, unequal halves, stride, padding
other than the dilation, a tensor used elsewhere) is left as it is and listed with the reason.

Where TensorRT meets the node: onnx-tensorrt dispatches on ``op_type`` alone and hands any op it
has no importer for to its ``FallbackPluginImporter``, which looks up the plugin creator by that
name, the ``plugin_version`` and ``plugin_namespace`` string attributes, and fills the creator's
fields from the attributes of the same names (``dilations`` INTS, ``group_width`` and ``relu``
INT); other attributes are ignored. The node's domain is not read (8.2 to 10.x); it must not be
the default ONNX domain, where onnx.checker and ONNX Runtime reject unknown ops, so the node lives
in ``trt.plugins``, declared in the model's opset imports. W and B are plugin inputs (constants
the parser turns into tensors), so the plugin carries no weights of its own.

Python 3.6 compatible and free of torch: ``segbuild --dblock-plugin`` calls ``fuse_file`` on the
device, and segexport (``export.dblock``) checks the fused graph. onnx is imported inside the
functions.
"""

import copy
import os

import numpy as np

from .. import card as card_mod
from .._deps import require
from .._io import atomic_path
from ..card import read_onnx_card as read_card
from ..card import store_onnx_card as store_card
from ..errors import SegDeployError
from .onnx_edit import drop_unused, node_attrs

PLUGIN_NAME = "DBlockConv"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""
DOMAIN = "trt.plugins"
GROUP_WIDTH = 16
SUFFIX = ".dblock.onnx"


class Block(object):
    """One matched Split -> Conv -> Conv -> Concat (-> Relu) pattern."""

    def __init__(self, split, convs, concat, relu, weights, biases, dilations):
        self.split = split  # NodeProto
        self.convs = convs  # [NodeProto, NodeProto]
        self.concat = concat
        self.relu = relu  # NodeProto or None
        self.weights = weights  # [ndarray (C/2, 16, 3, 3)] * 2
        self.biases = biases  # [ndarray (C/2,)] * 2
        self.dilations = dilations  # (d1, d2)

    @property
    def nodes(self):
        return [self.split] + self.convs + [self.concat] + ([self.relu] if self.relu else [])

    @property
    def channels(self):
        return int(sum(w.shape[0] for w in self.weights))

    @property
    def input(self):
        return self.split.input[0]

    @property
    def output(self):
        return (self.relu or self.concat).output[0]


class _Graph(object):
    """Read-only indexes over a GraphProto: constants, consumers, graph outputs."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self.graph = graph
        self.initializers = {t.name: t for t in graph.initializer}
        self.constant_nodes = {}
        for node in graph.node:
            if node.op_type == "Constant" and len(node.output) == 1:
                self.constant_nodes[node.output[0]] = node
        self.consumers = {}
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, i))
        self.graph_outputs = set(o.name for o in graph.output)
        self._to_array = numpy_helper.to_array

    def constant(self, name):
        """The value of tensor ``name`` if it is an initializer or a Constant's output."""
        if name in self.initializers:
            return self._to_array(self.initializers[name])
        node = self.constant_nodes.get(name)
        if node is not None:
            for attr in node.attribute:
                if attr.name == "value":
                    return self._to_array(attr.t)
        return None

    def only_consumer(self, name):
        """The single node reading tensor ``name`` (not a graph output), else None."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.graph_outputs:
            return None
        return users[0]


def _split_sizes(g, node, opset):
    """The Split's output sizes along its axis, or None when they follow from the input."""
    attrs = node_attrs(node)
    if "split" in attrs:  # opset < 13
        return [int(v) for v in attrs["split"]]
    if len(node.input) > 1 and node.input[1]:
        value = g.constant(node.input[1])
        if value is None:
            raise _Skip("its split sizes are computed at run time")
        return [int(v) for v in value.reshape(-1)]
    return None  # equal parts (num_outputs in opset 18+, or by output count)


class _Skip(Exception):
    """A candidate Split that does not fit the DBlockConv contract (message: why)."""


def _match_conv(g, split_out, position):
    """The Conv reading ``split_out`` and its (weight, bias, dilation), or raise _Skip."""
    use = g.only_consumer(split_out)
    if use is None:
        raise _Skip("split output {} has other consumers".format(position))
    conv, index = use
    if conv.op_type != "Conv" or index != 0:
        raise _Skip("split output {} does not feed a Conv".format(position))
    attrs = node_attrs(conv)
    weight = g.constant(conv.input[1]) if len(conv.input) > 1 else None
    if weight is None or weight.ndim != 4:
        raise _Skip("{} has no constant 4-D weight".format(conv.name or "a Conv"))
    if tuple(weight.shape[1:]) != (GROUP_WIDTH, 3, 3):
        raise _Skip(
            "its convs are not 3x3 with groups of {} input channels (weight {})".format(
                GROUP_WIDTH, tuple(weight.shape)
            )
        )
    out_ch = weight.shape[0]
    group = int(attrs.get("group", 1))
    if group * GROUP_WIDTH != out_ch:
        raise _Skip(
            "its convs have {} output channels in {} groups, not groups of {}".format(
                out_ch, group, GROUP_WIDTH
            )
        )
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise _Skip("its convs use auto_pad")
    dil = [int(v) for v in attrs.get("dilations", [1, 1])]
    strides = [int(v) for v in attrs.get("strides", [1, 1])]
    pads = [int(v) for v in attrs.get("pads", [0, 0, 0, 0])]
    if len(dil) != 2 or dil[0] != dil[1] or dil[0] < 1:
        raise _Skip("its convs' dilations {} are not one rate for both axes".format(dil))
    if strides != [1, 1]:
        raise _Skip("its convs have strides {}".format(strides))
    if pads != [dil[0]] * 4:
        raise _Skip("its convs' pads {} differ from the dilation {}".format(pads, dil[0]))
    bias = None
    if len(conv.input) > 2 and conv.input[2]:
        bias = g.constant(conv.input[2])
        if bias is None:
            raise _Skip("{} has a non-constant bias".format(conv.name or "a Conv"))
    else:
        bias = np.zeros((out_ch,), weight.dtype)
    if g.only_consumer(conv.output[0]) is None:
        raise _Skip("a conv's output has other consumers")
    return conv, weight, bias.reshape(-1), dil[0]


def _match(g, split, opset):
    """The Block starting at ``split``, or raise _Skip."""
    attrs = node_attrs(split)
    if int(attrs.get("axis", 0)) not in (1, -3) or len(split.output) != 2:
        raise _Skip("it does not split the channel axis in two")
    sizes = _split_sizes(g, split, opset)
    found = [_match_conv(g, split.output[i], i) for i in range(2)]
    convs = [f[0] for f in found]
    weights = [f[1] for f in found]
    biases = [f[2] for f in found]
    half = weights[0].shape[0]
    if weights[1].shape[0] != half or (sizes is not None and sizes != [half, half]):
        raise _Skip(
            "its halves are not equal ({} and {} channels)".format(
                sizes or weights[0].shape[0], weights[1].shape[0]
            )
        )
    concat, _ = g.only_consumer(convs[0].output[0])
    if (
        concat.op_type != "Concat"
        or list(concat.input) != [convs[0].output[0], convs[1].output[0]]
        or int(node_attrs(concat).get("axis", 0)) not in (1, -3)
    ):
        raise _Skip("its convs do not meet in one channel Concat, in order")
    relu = None
    use = g.only_consumer(concat.output[0])
    if use is not None and use[0].op_type == "Relu":
        relu = use[0]
    dilations = (found[0][3], found[1][3])
    return Block(split, convs, concat, relu, weights, biases, dilations)


def find_blocks(model_proto):
    """(blocks, skipped): the matched patterns and, for other Splits, why they were left."""
    require("onnx", "the D-block graph rewrite")
    g = _Graph(model_proto.graph)
    opset = next((o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    blocks, skipped = [], []
    for node in model_proto.graph.node:
        if node.op_type != "Split" or node.domain not in ("", "ai.onnx"):
            continue
        try:
            blocks.append(_match(g, node, opset))
        except _Skip as why:
            skipped.append({"split": node.name, "reason": str(why)})
    return blocks, skipped


def _unique(name, taken):
    out, i = name, 1
    while out in taken:
        i += 1
        out = "{}_{}".format(name, i)
    taken.add(out)
    return out


def fuse_dblocks(model_proto):
    """A copy of ``model_proto`` with every matched pattern replaced by one DBlockConv node.

    Returns (fused ModelProto, summary dict). The summary lists every fused block (the input and
    output tensors it connects, channels, dilations, ReLU fused, the nodes it replaced) and every
    Split left in place with the reason. The input model is not modified.
    """
    onnx = require("onnx", "the D-block graph rewrite")
    from onnx import helper, numpy_helper

    proto = copy.deepcopy(model_proto)
    blocks, skipped = find_blocks(proto)
    graph = proto.graph
    taken = set(t.name for t in graph.initializer)
    for node in graph.node:
        taken.update(node.output)
        taken.add(node.name)
    removed = set()
    first_of = {}  # id of the block's Split -> the DBlockConv node that takes its place
    summary = []
    for i, block in enumerate(blocks):
        w_name = _unique("dblock_{}.weight".format(i), taken)
        b_name = _unique("dblock_{}.bias".format(i), taken)
        weight = np.concatenate(block.weights, axis=0).astype(block.weights[0].dtype)
        bias = np.concatenate(block.biases, axis=0).astype(weight.dtype)
        graph.initializer.extend(
            [numpy_helper.from_array(weight, w_name), numpy_helper.from_array(bias, b_name)]
        )
        node = helper.make_node(
            PLUGIN_NAME,
            [block.input, w_name, b_name],
            [block.output],
            name=_unique("{}_{}".format(PLUGIN_NAME, i), taken),
            domain=DOMAIN,
            dilations=[int(d) for d in block.dilations],
            group_width=GROUP_WIDTH,
            relu=1 if block.relu is not None else 0,
            plugin_version=PLUGIN_VERSION,
            plugin_namespace=PLUGIN_NAMESPACE,
        )
        first_of[id(block.split)] = node
        removed.update(id(n) for n in block.nodes)
        summary.append(
            {
                "node": node.name,
                "input": block.input,
                "output": block.output,
                "channels": block.channels,
                "dilations": [int(d) for d in block.dilations],
                "relu": block.relu is not None,
                "replaced": [n.name or n.op_type for n in block.nodes],
            }
        )
    # Rebuild the node list in order: each DBlockConv takes its Split's place (X is ready there;
    # everything that reads Y came after the pattern's last node).
    kept = []
    for node in graph.node:
        if id(node) in first_of:
            kept.append(first_of[id(node)])
        elif id(node) not in removed:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    drop_unused(graph)
    if blocks and not any(o.domain == DOMAIN for o in proto.opset_import):
        proto.opset_import.extend([helper.make_opsetid(DOMAIN, 1)])
    onnx.checker.check_model(proto)
    return proto, {
        "plugin": PLUGIN_NAME,
        "plugin_version": PLUGIN_VERSION,
        "plugin_namespace": PLUGIN_NAMESPACE,
        "domain": DOMAIN,
        "group_width": GROUP_WIDTH,
        "fused": summary,
        "skipped": skipped,
    }


def dblock_path(onnx_path):
    """``out/regseg.onnx`` -> ``out/regseg.dblock.onnx``."""
    root, ext = os.path.splitext(os.fspath(onnx_path))
    return root + SUFFIX if ext.lower() == ".onnx" else os.fspath(onnx_path) + SUFFIX


def card_section(summary):
    """What the model card records about the rewrite (the full list goes to the report)."""
    return {
        "plugin": summary["plugin"],
        "plugin_version": summary["plugin_version"],
        "plugin_namespace": summary["plugin_namespace"],
        "domain": summary["domain"],
        "blocks": [
            {"node": b["node"], "channels": b["channels"], "dilations": b["dilations"]}
            for b in summary["fused"]
        ],
        "relu_fused": sum(1 for b in summary["fused"] if b["relu"]),
        "skipped": summary["skipped"],
    }


def save(model_proto, path):
    onnx = require("onnx", "the D-block graph rewrite")
    with atomic_path(path) as tmp:
        onnx.save_model(model_proto, tmp)


def fuse_file(onnx_path, out_path=None, require_blocks=True):
    """Read a standard graph, fuse its D blocks, write ``<name>.dblock.onnx`` (and its sidecar
    when the graph carries a model card). Returns (out_path, summary).

    ``require_blocks``: raise SegDeployError when the graph has no pattern to fuse.
    """
    onnx = require("onnx", "the D-block graph rewrite")
    if not os.path.isfile(onnx_path):
        raise SegDeployError("ONNX file {} does not exist".format(onnx_path))
    try:
        proto = onnx.load(onnx_path)
    except Exception as exc:
        raise SegDeployError("cannot read {} as ONNX: {}".format(onnx_path, exc)) from None
    if any(n.op_type == PLUGIN_NAME for n in proto.graph.node):
        raise SegDeployError(
            "{} already holds {} nodes; pass the standard graph (without {})".format(
                onnx_path, PLUGIN_NAME, SUFFIX
            )
        )
    fused, summary = fuse_dblocks(proto)
    if require_blocks and not summary["fused"]:
        raise SegDeployError(
            "{} has no split-dilation D block to fuse (no Split -> Conv -> Conv -> Concat with "
            "3x3 convs in groups of {}){}".format(
                onnx_path,
                GROUP_WIDTH,
                "; Splits left: " + "; ".join(s["reason"] for s in summary["skipped"])
                if summary["skipped"]
                else "",
            )
        )
    out_path = out_path or dblock_path(onnx_path)
    card = read_card(proto, "ONNX metadata")
    if card is not None:
        card = dict(card, dblock=card_section(summary))
        store_card(fused, card)
    save(fused, out_path)
    if card is not None:
        card_mod.write_sidecar(out_path, card)
    return out_path, summary
