"""Graph rewrite: the labels head of a graph becomes one ``SegHead`` plugin node.

Two graphs meet the node (``segbuild --seghead-plugin``, ``python -m segdeploy.export.seghead``):

    with its head (segexport --head graph)            cut before it (segexport --head fused)

    logits (N, C, h, w)                               logits (N, C, h, w)   graph output; the
        │                                                  │                card's output.head =
      Resize(mode=linear, half_pixel |        ==>        SegHead(...)      {"kind": "fused",
             pytorch_half_pixel | align_corners,           │                 "size": [H, W], ...}
             sizes or scales on H, W only)               labels (N, H, W) int32
        │
      ArgMax(axis=1, keepdims=0)                      SegHead(out_h, out_w, align_corners,
        │                                                     scale_h, scale_w, uint8_labels,
      labels (N, H, W) int64                                  plugin_version="1",
                                                              plugin_namespace="")

On the left (``fuse_head``) the pattern is found by structure: an ArgMax over the channel axis
(keepdims 0, first index) whose only input is the output of a linear Resize that scales H and W
alone, with constant sizes or scales, and that nothing else reads; anything else is left as it
is, with the reason. On the right (``append_head``) the node is appended after the logits output,
its fields taken from the card's ``output.head``. Either way the card's output becomes the labels
and ``output.head`` says the SegHead node computes them (``{"kind": "seghead", ...}``).

``SegHead`` is the fused head kernel's TensorRT plugin (``segdeploy/plugins/seghead``): it reads the
low-resolution logits once and writes the labels, where TensorRT's import of the standard head
writes the full-resolution logits and reads them again for a TopK. Where TensorRT meets the node
(as for ``DBlockConv``, see ``dblock_graph``): the ONNX parser hands an op it has no importer for
to its fallback plugin importer, which finds the creator by op type, ``plugin_version`` and
``plugin_namespace`` and fills the fields from the attributes of the same names; the node lives
in the ``trt.plugins`` domain so that onnx.checker accepts it. ``scale_h`` / ``scale_w`` are the
Resize's scales where it was given scales (ONNX Runtime then uses the float scale itself, which
differs from out / in), 0 where it was given sizes. The labels become int32 (the plugin's output;
TensorRT's ArgMax gives int32 too).

Free of torch and Python 3.6 compatible: segbuild calls ``fuse_file`` on the device, segexport's
side (``export.seghead``) checks the labels in ONNX Runtime. onnx is imported inside the functions.
"""

import copy
import os

import numpy as np

from .. import card as card_mod
from .._deps import require
from .._io import atomic_path
from ..card import read_onnx_card, store_onnx_card
from ..errors import SegDeployError
from .onnx_edit import drop_unused, node_attrs

# The plugin's identity, once: plugins/seghead (its library, host build) imports them from here.
PLUGIN_NAME = "SegHead"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""
DOMAIN = "trt.plugins"
MODES = card_mod.HEAD_MODES
MAX_CLASSES = 255
SUFFIX = ".seghead.onnx"
LABELS = "labels"  # the labels output appended after a cut graph's logits
BUILD_COMMAND = "python -m segdeploy.plugins.seghead.build --out build/seghead"
LIBRARY = "build/seghead/libseghead_plugin.so"


class _Skip(Exception):
    """An ArgMax that does not fit the SegHead contract (message: why)."""


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


class _Graph(object):
    def __init__(self, graph):
        from onnx import numpy_helper

        self.graph = graph
        self.producer = {}
        self.consumers = {}
        self.constants = dict((t.name, numpy_helper.to_array(t)) for t in graph.initializer)
        for node in graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            if node.op_type == "Constant" and node.output:
                value = node_attrs(node).get("value")
                if value is not None:
                    self.constants[node.output[0]] = numpy_helper.to_array(value)
        self.outputs = set(o.name for o in graph.output)


def _shape(proto, name):
    """Static dims of tensor ``name`` (None for unknown ones), or None when unknown."""
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(proto)
    except Exception:  # shape inference fails on some exported graphs: then the shape is unknown
        inferred = proto
    g = inferred.graph
    for info in list(g.value_info) + list(g.input) + list(g.output):
        if info.name == name and info.type.tensor_type.HasField("shape"):
            return [d.dim_value if d.HasField("dim_value") else None
                    for d in info.type.tensor_type.shape.dim]  # fmt: skip
    return None


class Head(object):
    """One matched Resize -> ArgMax pair and the SegHead fields that replace it."""

    def __init__(self, resize, argmax, out_h, out_w, align_corners, scale_h, scale_w, classes,
                 batch=None, mode=None, logits_hw=None):  # fmt: skip
        self.batch = batch
        self.mode = mode or ("align_corners" if align_corners else "half_pixel")
        self.logits_hw = logits_hw  # [h, w] where the graph's shapes say it, else None
        self.resize = resize
        self.argmax = argmax
        self.out_h = out_h
        self.out_w = out_w
        self.align_corners = align_corners
        self.scale_h = scale_h
        self.scale_w = scale_w
        self.classes = classes

    @property
    def input(self):
        return self.resize.input[0]

    @property
    def output(self):
        return self.argmax.output[0]


def _match(proto, g, argmax):
    a = node_attrs(argmax)
    if int(a.get("axis", 0)) not in (1, -3) or int(a.get("keepdims", 1)) != 0:
        raise _Skip("it is not an ArgMax over the channel axis with keepdims=0")
    if int(a.get("select_last_index", 0)) != 0:
        raise _Skip("it picks the last index of equal maxima (SegHead picks the first)")
    resize = g.producer.get(argmax.input[0])
    if resize is None or resize.op_type != "Resize" or resize.domain not in ("", "ai.onnx"):
        raise _Skip("its input is not the output of a Resize")
    if len(g.consumers.get(resize.output[0], ())) != 1 or resize.output[0] in g.outputs:
        raise _Skip("the resized logits are read elsewhere too")
    r = node_attrs(resize)
    mode = _text(r.get("mode", "nearest"))
    ctm = _text(r.get("coordinate_transformation_mode", "half_pixel"))
    if mode != "linear":
        raise _Skip("its Resize is {} (SegHead is bilinear)".format(mode))
    if ctm not in MODES:
        raise _Skip("its Resize uses coordinate_transformation_mode {}".format(ctm))
    if (
        int(r.get("antialias", 0))
        or _text(r.get("keep_aspect_ratio_policy", "stretch")) != "stretch"
    ):
        raise _Skip("its Resize uses antialias or keep_aspect_ratio_policy")
    axes = [int(v) for v in r.get("axes", [])]
    x_shape = _shape(proto, resize.input[0])
    if x_shape is not None and len(x_shape) != 4:
        raise _Skip("its logits are not N x C x H x W")
    rank = 4
    axes = [v % rank for v in axes] if axes else list(range(rank))
    inputs = list(resize.input) + [""] * (4 - len(resize.input))
    scales = g.constants.get(inputs[2]) if inputs[2] else None
    sizes = g.constants.get(inputs[3]) if inputs[3] else None
    if (inputs[2] and scales is None) or (inputs[3] and sizes is None):
        raise _Skip("its Resize takes sizes or scales computed in the graph (a dynamic size)")
    scale_h = scale_w = 0.0
    if sizes is not None and sizes.size:
        full = dict(zip(axes, [int(v) for v in sizes.reshape(-1)]))
        if any(ax in full and x_shape and x_shape[ax] is not None and full[ax] != x_shape[ax]
               for ax in (0, 1)):  # fmt: skip
            raise _Skip("its Resize changes N or C")
        if 2 not in full or 3 not in full:
            raise _Skip("its Resize does not size H and W")
        out_h, out_w = full[2], full[3]
    elif scales is not None and scales.size:
        full = dict(zip(axes, [float(v) for v in scales.reshape(-1)]))
        if full.get(0, 1.0) != 1.0 or full.get(1, 1.0) != 1.0:
            raise _Skip("its Resize scales N or C")
        scale_h, scale_w = full.get(2, 1.0), full.get(3, 1.0)
        if x_shape is None or x_shape[2] is None or x_shape[3] is None:
            raise _Skip("its Resize scales logits of unknown H x W (the output size is needed)")
        out_h = int(np.floor(x_shape[2] * np.float32(scale_h)))
        out_w = int(np.floor(x_shape[3] * np.float32(scale_w)))
    else:
        raise _Skip("its Resize has neither sizes nor scales")
    if min(out_h, out_w) < 1:
        raise _Skip("its output is empty")
    if ctm == "half_pixel" and min(out_h, out_w) == 1:
        raise _Skip("half_pixel to an output of length 1 (SegHead follows pytorch_half_pixel)")
    classes = x_shape[1] if x_shape else None
    if classes is not None and classes > MAX_CLASSES:
        raise _Skip("{} classes do not fit uint8 labels (at most {})".format(classes, MAX_CLASSES))
    batch = x_shape[0] if x_shape else None
    logits_hw = None
    if x_shape and x_shape[2] is not None and x_shape[3] is not None:
        logits_hw = [int(x_shape[2]), int(x_shape[3])]
    return Head(
        resize, argmax, out_h, out_w, ctm == "align_corners", scale_h, scale_w, classes, batch,
        ctm, logits_hw,
    )  # fmt: skip


def find_heads(model_proto):
    """(heads, skipped): the matched Resize + ArgMax pairs and, for other ArgMax nodes, why not."""
    require("onnx", "the SegHead graph rewrite")
    g = _Graph(model_proto.graph)
    heads, skipped = [], []
    for node in model_proto.graph.node:
        if node.op_type != "ArgMax" or node.domain not in ("", "ai.onnx"):
            continue
        try:
            heads.append(_match(model_proto, g, node))
        except _Skip as why:
            skipped.append({"argmax": node.name or node.output[0], "reason": str(why)})
    return heads, skipped


def fuse_head(model_proto, uint8_labels=False):
    """A copy of ``model_proto`` with its Resize + ArgMax head replaced by one SegHead node.

    Returns (fused ModelProto, summary dict: the head's fields and what it replaced, and the
    ArgMax nodes left with the reason). ``uint8_labels``: the node writes uint8 labels (TensorRT
    10+, where the labels feed another layer); default int32. The input model is not modified.
    """
    onnx = require("onnx", "the SegHead graph rewrite")
    from onnx import helper

    proto = copy.deepcopy(model_proto)
    heads, skipped = find_heads(proto)
    graph = proto.graph
    replace = {}
    summary = []
    taken = set(n.name for n in graph.node)
    for i, head in enumerate(heads):
        name = "{}_{}".format(PLUGIN_NAME, i)
        while name in taken:
            name += "_"
        taken.add(name)
        node = plugin_node(head, name, uint8_labels)
        replace[id(head.argmax)] = node
        replace[id(head.resize)] = None
        summary.append(
            _fused_entry(head, name, [n.name or n.op_type for n in (head.resize, head.argmax)])
        )
    kept = []
    for node in graph.node:
        if id(node) in replace:
            if replace[id(node)] is not None:
                kept.append(replace[id(node)])
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    outputs = set(h.output for h in heads)
    resized = set(h.resize.output[0] for h in heads)
    by_output = dict((h.output, h) for h in heads)
    for out in graph.output:
        if out.name in by_output:
            head = by_output[out.name]
            batch = out.type.tensor_type.shape.dim[0] if _has_dims(out, 3) else None
            batch = (batch.dim_param or batch.dim_value) if batch is not None else head.batch
            out.CopyFrom(_labels_info(out.name, uint8_labels, batch, head.out_h, head.out_w))
    for info in list(graph.value_info):
        if info.name in resized or info.name in outputs:
            graph.value_info.remove(info)
    drop_unused(graph)
    if heads and not any(o.domain == DOMAIN for o in proto.opset_import):
        proto.opset_import.extend([helper.make_opsetid(DOMAIN, 1)])
    onnx.checker.check_model(proto)
    return proto, _summary(uint8_labels, summary, skipped)


def _has_dims(info, rank):
    t = info.type.tensor_type
    return t.HasField("shape") and len(t.shape.dim) == rank


def plugin_node(head, name, uint8_labels=False):
    """The ``SegHead`` NodeProto reading ``head.input`` and writing ``head.output``."""
    from onnx import helper

    return helper.make_node(
        PLUGIN_NAME,
        [head.input],
        [head.output],
        name=name,
        domain=DOMAIN,
        out_h=int(head.out_h),
        out_w=int(head.out_w),
        align_corners=1 if head.align_corners else 0,
        scale_h=float(head.scale_h),
        scale_w=float(head.scale_w),
        uint8_labels=1 if uint8_labels else 0,
        plugin_version=PLUGIN_VERSION,
        plugin_namespace=PLUGIN_NAMESPACE,
    )


def _labels_info(name, uint8_labels, batch, out_h, out_w):
    from onnx import TensorProto, helper

    label_type = TensorProto.UINT8 if uint8_labels else TensorProto.INT32
    return helper.make_tensor_value_info(name, label_type, [batch or "N", out_h, out_w])


def _fused_entry(head, name, replaced):
    return {
        "node": name,
        "input": head.input,
        "output": head.output,
        "out_size": [int(head.out_h), int(head.out_w)],
        "align_corners": bool(head.align_corners),
        "mode": head.mode,
        "scales": [float(head.scale_h), float(head.scale_w)],
        "classes": head.classes,
        "logits_size": head.logits_hw,
        "replaced": replaced,
    }


def _summary(uint8_labels, fused, skipped):
    return {
        "plugin": PLUGIN_NAME,
        "plugin_version": PLUGIN_VERSION,
        "plugin_namespace": PLUGIN_NAMESPACE,
        "domain": DOMAIN,
        "labels": "uint8" if uint8_labels else "int32",
        "fused": fused,
        "skipped": skipped,
    }


class _Appended(object):
    """What ``plugin_node`` needs for a SegHead appended after a cut graph's logits."""

    def __init__(self, logits, labels, size, align_corners, mode, classes, logits_hw):
        self.input, self.output = logits, labels
        self.out_h, self.out_w = (int(v) for v in size)
        self.align_corners = bool(align_corners)
        self.mode = mode or ("align_corners" if align_corners else "half_pixel")  # card's default
        self.scale_h = self.scale_w = 0.0  # out / in, as the runtime's fused head takes it
        self.classes, self.logits_hw = classes, logits_hw


def append_head(model_proto, card, uint8_labels=False):
    """A copy of a graph cut before its head (``segexport --head fused``) whose logits output
    feeds a SegHead node, the labels its only output; ``(proto, summary)`` as ``fuse_head``.

    The node's fields come from the card's ``output.head`` (size, align_corners, mode; the scale
    is out / in, as the Resize given sizes that the cut removed). SegDeployError, in one line,
    when the card has no fused head or the graph does not fit it."""
    onnx = require("onnx", "the SegHead graph rewrite")
    from onnx import helper

    head = card_mod.fused_head(card)
    if head is None:
        raise SegDeployError("the card's output.head is not 'fused': no logits to append to")
    if (card.get("input") or {}).get("dynamic"):
        raise SegDeployError(
            "SegHead writes labels of one fixed size and this graph's input is dynamic; export "
            "it at a fixed --res, or let the runtime run the head (segbuild without "
            "--seghead-plugin)"
        )
    proto = copy.deepcopy(model_proto)
    graph = proto.graph
    name = card["output"]["name"]
    outputs = [o.name for o in graph.output]
    if name not in outputs:
        raise SegDeployError(
            "the card's output {!r} is not an output of the graph (it has {})".format(name, outputs)
        )
    info = graph.output[outputs.index(name)]
    dims = list(info.type.tensor_type.shape.dim) if _has_dims(info, 4) else None
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims] if dims else None
    classes = fixed[1] if fixed else None
    classes = classes or int(card["model"]["num_classes"])
    if classes > MAX_CLASSES:
        raise SegDeployError(
            "{} classes do not fit SegHead's labels (at most {})".format(classes, MAX_CLASSES)
        )
    logits_hw = fixed[2:] if fixed and None not in fixed[2:] else None
    if logits_hw and head.get("logits_size") and list(head["logits_size"]) != logits_hw:
        raise SegDeployError(
            "the card says the logits are {} but the graph's output {!r} is {}".format(
                "x".join(map(str, head["logits_size"])), name, "x".join(map(str, logits_hw))
            )
        )
    taken = set(t.name for t in graph.initializer) | set(i.name for i in graph.input)
    for node in graph.node:
        taken.update(node.output)
        taken.add(node.name)
    labels = LABELS
    while labels in taken:
        labels += "_"
    node_name = PLUGIN_NAME + "_0"
    while node_name in taken:
        node_name += "_"
    appended = _Appended(
        name, labels, head["size"], head["align_corners"], head.get("mode"), classes, logits_hw
    )
    graph.node.extend([plugin_node(appended, node_name, uint8_labels)])
    batch = (dims[0].dim_param or dims[0].dim_value) if dims else None
    keep = [o for o in graph.output if o.name != name]
    del graph.output[:]
    labels_info = _labels_info(labels, uint8_labels, batch, appended.out_h, appended.out_w)
    graph.output.extend(keep + [labels_info])
    if not any(o.domain == DOMAIN for o in proto.opset_import):
        proto.opset_import.extend([helper.make_opsetid(DOMAIN, 1)])
    onnx.checker.check_model(proto)
    entry = _fused_entry(appended, node_name, [])
    return proto, _summary(uint8_labels, [entry], [])


def head_card(card, entry, uint8_labels=False):
    """A copy of ``card`` whose output is the labels the SegHead node ``entry`` (an item of a
    summary's ``fused``) writes: ``output.head = {"kind": "seghead", ...}``."""
    out = copy.deepcopy(card)
    before = out["output"].get("head") or {}
    logits_size = entry.get("logits_size") or before.get("logits_size")
    out["output"].update(
        name=entry["output"],
        kind="labels",
        dtype="uint8" if uint8_labels else "int32",
        resolution="input",
        head={
            "kind": "seghead",
            "node": entry["node"],
            "plugin": PLUGIN_NAME,
            "plugin_version": PLUGIN_VERSION,
            "size": list(entry["out_size"]),
            "logits_size": list(logits_size) if logits_size else None,
            "align_corners": bool(entry["align_corners"]),
            "mode": entry["mode"],
            "scales": list(entry["scales"]) if any(entry["scales"]) else None,
        },
    )
    return card_mod.validate(out, "the SegHead graph's card")


def seghead_path(onnx_path):
    """``out/regseg.onnx`` -> ``out/regseg.seghead.onnx``."""
    root, ext = os.path.splitext(os.fspath(onnx_path))
    return root + SUFFIX if ext.lower() == ".onnx" else os.fspath(onnx_path) + SUFFIX


def fuse_file(onnx_path, out_path=None, uint8_labels=False):
    """Read a graph, put a SegHead node where its labels head is (or after the logits of a
    graph cut before it, as its card says), write ``<name>.seghead.onnx`` with its card in the
    metadata and the sidecar. Returns (out_path, summary); SegDeployError in one line when the
    graph has no head to fuse."""
    onnx = require("onnx", "the SegHead graph rewrite")
    if not os.path.isfile(onnx_path):
        raise SegDeployError("ONNX file {} does not exist".format(onnx_path))
    try:
        proto = onnx.load(onnx_path)
    except Exception as exc:  # onnx raises several types for a bad file
        raise SegDeployError("cannot read {} as ONNX: {}".format(onnx_path, exc)) from None
    if any(n.op_type == PLUGIN_NAME for n in proto.graph.node):
        raise SegDeployError(
            "{} already holds a {} node; pass the graph without it".format(onnx_path, PLUGIN_NAME)
        )
    card = read_onnx_card(proto, "{} metadata".format(onnx_path))
    if card is None and os.path.isfile(card_mod.sidecar_path(onnx_path)):
        card = card_mod.read_sidecar(onnx_path)
    if card is not None and card_mod.fused_head(card) is not None:
        fused, summary = append_head(proto, card, uint8_labels)
    else:
        fused, summary = fuse_head(proto, uint8_labels)
    if not summary["fused"]:
        reasons = "; ".join("{}: {}".format(s["argmax"], s["reason"]) for s in summary["skipped"])
        raise SegDeployError(
            "{} has no Resize + ArgMax head to fuse ({})".format(onnx_path, reasons or "no ArgMax")
        )
    out_path = out_path or seghead_path(onnx_path)
    if card is not None:
        wanted = card["output"]["name"]
        entry = next((e for e in summary["fused"] if e["output"] == wanted), summary["fused"][0])
        card = head_card(card, entry, uint8_labels)
        store_onnx_card(fused, card)
    with atomic_path(out_path) as tmp:
        onnx.save_model(fused, tmp)
    if card is not None:
        card_mod.write_sidecar(out_path, card)
    return out_path, summary


# --- segbuild --seghead-plugin ------------------------------------------------------------------


def check_plugin_args(args):
    """One sentence (SegDeployError) when segbuild --seghead-plugin lacks its plugin library. A
    --print-trtexec line without --plugin names the library where the build command writes it."""
    plugins = list(args.plugin or ())
    both = getattr(args, "dblock_plugin", False)
    if args.print_trtexec:
        if not plugins:
            args.plugin = (["build/dblock/libdblock_plugin.so"] if both else []) + [LIBRARY]
        return
    if not plugins:
        raise SegDeployError(
            "--seghead-plugin builds a SegHead plugin layer: pass the plugin library with "
            "--plugin {} (build it on this device with {})".format(LIBRARY, BUILD_COMMAND)
        )
    if both and len(plugins) < 2:
        raise SegDeployError(
            "--dblock-plugin with --seghead-plugin needs both plugin libraries: --plugin "
            "build/dblock/libdblock_plugin.so --plugin {} (build the second with {})".format(
                LIBRARY, BUILD_COMMAND
            )
        )


def segbuild_step(onnx_path, args, out):
    """segbuild --seghead-plugin: the SegHead graph beside ``onnx_path`` (and beside its FP16-typed
    twin or INT8 Q/DQ sibling, when segbuild builds from them); returns the graph to build from."""
    from .plan_build import fp16_sibling, int8_sibling

    fused, summary = fuse_file(onnx_path)
    entry = summary["fused"][0]
    print(
        "segbuild: labels head -> {} node {} ({} -> {}x{} int32 labels, {}): {}".format(
            PLUGIN_NAME,
            entry["node"],
            entry["input"],
            entry["out_size"][0],
            entry["out_size"][1],
            entry["mode"],
            fused,
        ),
        file=out,
    )
    for wanted, sibling in ((args.fp16, fp16_sibling), (args.int8, int8_sibling)):
        source = sibling(onnx_path)
        if wanted and source != os.fspath(onnx_path) and os.path.isfile(source):
            fuse_file(source, out_path=sibling(fused))  # TensorRT 11 FP16, or the Q/DQ graph
    return fused
