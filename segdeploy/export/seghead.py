"""Graph rewrite: the final bilinear Resize + ArgMax of a graph becomes one ``SegHead`` node.

    logits (N, C, h, w)                               logits (N, C, h, w)
        │                                                 │
      Resize(mode=linear, half_pixel |          ==>    SegHead(out_h, out_w, align_corners,
             pytorch_half_pixel | align_corners,               scale_h, scale_w,
             sizes or scales on H, W only)                     plugin_version="1",
        │                                                      plugin_namespace="")
      ArgMax(axis=1, keepdims=0)                          │
        │                                               labels (N, out_h, out_w) int32
      labels (N, out_h, out_w) int64

``SegHead`` is the fused head kernel's TensorRT plugin (``segdeploy/plugins/seghead``): it reads the
low-resolution logits once and writes the labels, where TensorRT's import of the standard head
writes the full-resolution logits and reads them again for a TopK. The pattern is found by
structure: an ArgMax over the channel axis (keepdims 0, first index) whose only input is the
output of a linear Resize that scales H and W alone, with constant sizes or scales, and that
nothing else reads. Anything else is left as it is, with the reason.

Where TensorRT meets the node (as for ``DBlockConv``, see ``segdeploy.export.dblock``): the ONNX
parser hands an op it has no importer for to its fallback plugin importer, which finds the creator
by op type, ``plugin_version`` and ``plugin_namespace`` and fills the fields from the attributes
of the same names; the node lives in the ``trt.plugins`` domain so that onnx.checker accepts it.
``scale_h`` / ``scale_w`` are the Resize's scales where it was given scales (ONNX Runtime then
uses the float scale itself, which differs from out / in), 0 where it was given sizes.

The labels become int32 (the plugin's output; TensorRT's ArgMax gives int32 too). ``check`` runs
the standard graph and the rewritten one in ONNX Runtime, the ``SegHead`` node computed by the
kernel's host build (``segdeploy.plugins.seghead.host``), and counts the labels that differ.

Python 3.6 compatible; onnx is imported inside the functions.
"""

import copy

import numpy as np

from .._deps import require
from ..engines.onnx_edit import drop_unused, node_attrs
from ..errors import SegDeployError
from ..plugins.seghead import PLUGIN_NAME, PLUGIN_VERSION

PLUGIN_NAMESPACE = ""
DOMAIN = "trt.plugins"
MODES = ("half_pixel", "pytorch_half_pixel", "align_corners")
MAX_CLASSES = 255
_EXT_DOMAIN = "ai.onnx.contrib"


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
                 batch=None):  # fmt: skip
        self.batch = batch
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
    return Head(
        resize, argmax, out_h, out_w, ctm == "align_corners", scale_h, scale_w, classes, batch
    )


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
    from onnx import TensorProto, helper

    proto = copy.deepcopy(model_proto)
    heads, skipped = find_heads(proto)
    graph = proto.graph
    label_type = TensorProto.UINT8 if uint8_labels else TensorProto.INT32
    replace = {}
    summary = []
    taken = set(n.name for n in graph.node)
    for i, head in enumerate(heads):
        name = "{}_{}".format(PLUGIN_NAME, i)
        while name in taken:
            name += "_"
        taken.add(name)
        node = helper.make_node(
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
        replace[id(head.argmax)] = node
        replace[id(head.resize)] = None
        summary.append(
            {
                "node": name,
                "input": head.input,
                "output": head.output,
                "out_size": [int(head.out_h), int(head.out_w)],
                "align_corners": bool(head.align_corners),
                "scales": [float(head.scale_h), float(head.scale_w)],
                "classes": head.classes,
                "replaced": [n.name or n.op_type for n in (head.resize, head.argmax)],
            }
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
            out.CopyFrom(
                helper.make_tensor_value_info(
                    out.name, label_type, [batch or "N", head.out_h, head.out_w]
                )
            )
    for info in list(graph.value_info):
        if info.name in resized or info.name in outputs:
            graph.value_info.remove(info)
    drop_unused(graph)
    if heads and not any(o.domain == DOMAIN for o in proto.opset_import):
        proto.opset_import.extend([helper.make_opsetid(DOMAIN, 1)])
    onnx.checker.check_model(proto)
    return proto, {
        "plugin": PLUGIN_NAME,
        "plugin_version": PLUGIN_VERSION,
        "domain": DOMAIN,
        "labels": "uint8" if uint8_labels else "int32",
        "fused": summary,
        "skipped": skipped,
    }


def _has_dims(info, rank):
    t = info.type.tensor_type
    return t.HasField("shape") and len(t.shape.dim) == rank


# --- running a SegHead graph in ONNX Runtime on the host build ---------------------------------

_registered = []


def _register_op():
    """Declare SegHead as an onnxruntime-extensions Python op computed by the host build."""
    ext = require("onnxruntime_extensions", "running SegHead graphs in ONNX Runtime")
    if not _registered:
        from ..plugins.seghead.host import seg_head

        attrs = {
            "out_h": ext.PyCustomOpDef.dt_int64,
            "out_w": ext.PyCustomOpDef.dt_int64,
            "align_corners": ext.PyCustomOpDef.dt_int64,
            "scale_h": ext.PyCustomOpDef.dt_float,
            "scale_w": ext.PyCustomOpDef.dt_float,
        }

        def seg_head_op(x, **a):
            scales = None
            if a["scale_h"] > 0 and a["scale_w"] > 0:
                scales = (a["scale_h"], a["scale_w"])
            labels = seg_head(
                x, (int(a["out_h"]), int(a["out_w"])), bool(a["align_corners"]), scales
            )
            return labels.astype(np.int32)

        ext.onnx_op(
            op_type=PLUGIN_NAME,
            inputs=[ext.PyCustomOpDef.dt_float],
            outputs=[ext.PyCustomOpDef.dt_int32],
            attrs=attrs,
        )(seg_head_op)
        _registered.append(seg_head_op)
    return ext.get_library_path()


def host_session(fused_proto, threads=1):
    """An ONNX Runtime session of a SegHead graph (int32 labels) whose SegHead nodes run on the
    kernel's host build (a functional check: every call crosses into Python)."""
    ort = require("onnxruntime", "running SegHead graphs in ONNX Runtime")
    from onnx import helper

    proto = copy.deepcopy(fused_proto)
    for node in proto.graph.node:
        if node.op_type == PLUGIN_NAME:
            if any(a.name == "uint8_labels" and a.i for a in node.attribute):
                raise SegDeployError("the host op runs int32-label SegHead nodes only")
            node.domain = _EXT_DOMAIN
            keep = [a for a in node.attribute if a.name not in ("uint8_labels",)]
            del node.attribute[:]
            node.attribute.extend(keep)
    if not any(o.domain == _EXT_DOMAIN for o in proto.opset_import):
        proto.opset_import.extend([helper.make_opsetid(_EXT_DOMAIN, 1)])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.register_custom_ops_library(_register_op())
    return ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def check(standard_proto, fused_proto, inputs):
    """Run the standard graph and the SegHead graph in ONNX Runtime on each feed dict of
    ``inputs``; return {'pixels', 'disagreements', 'classes'} over the labels outputs
    (``classes``: the distinct labels the standard graph gave)."""
    ort = require("onnxruntime", "checking a SegHead graph")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    ref = ort.InferenceSession(
        standard_proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    cand = host_session(fused_proto)
    names = [o.name for o in fused_proto.graph.output]
    pixels = disagreements = 0
    classes = set()
    for feed in inputs:
        want = dict(zip([o.name for o in ref.get_outputs()], ref.run(None, feed)))
        got = dict(zip(names, cand.run(None, feed)))
        for name in names:
            a, b = np.asarray(want[name]), np.asarray(got[name])
            if a.shape != b.shape:
                raise SegDeployError(
                    "output {}: the SegHead graph gives shape {}, the standard one {}".format(
                        name, b.shape, a.shape
                    )
                )
            if a.ndim == 3 and np.issubdtype(a.dtype, np.integer):
                pixels += a.size
                disagreements += int((a.astype(np.int64) != b.astype(np.int64)).sum())
                classes.update(np.unique(a).tolist())
    return {"pixels": pixels, "disagreements": disagreements, "classes": len(classes)}


def standard_head_graph(classes, height, width, out_size, align_corners=False, opset=13):
    """The standard head alone: ``logits`` (1 x classes x height x width, float32) -> Resize
    (linear, sizes; pytorch_half_pixel or align_corners, as the TorchScript exporter writes them)
    -> ArgMax -> ``labels`` (1 x out_h x out_w, int64). What ``segbench --head`` times."""
    require("onnx", "the SegHead graph rewrite")
    from onnx import TensorProto, helper, numpy_helper

    out_h, out_w = (int(v) for v in out_size)
    sizes = np.array([1, classes, out_h, out_w], np.int64)
    mode = "align_corners" if align_corners else "pytorch_half_pixel"
    nodes = [
        helper.make_node(
            "Resize",
            ["logits", "", "", "sizes"],
            ["resized"],
            name="head_resize",
            mode="linear",
            coordinate_transformation_mode=mode,
        ),
        helper.make_node(
            "ArgMax", ["resized"], ["labels"], name="labels_argmax", axis=1, keepdims=0
        ),  # fmt: skip
    ]
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes, height, width])],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, [1, out_h, out_w])],
        [numpy_helper.from_array(sizes, "sizes")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


# --- command line ----------------------------------------------------------------------------


def _random_feeds(proto, count, seed=0):
    """``count`` feed dicts of random inputs of the graph's static input shapes."""
    from onnx import TensorProto

    rng = np.random.RandomState(seed)
    initializers = set(t.name for t in proto.graph.initializer)
    feeds = [{} for _ in range(count)]
    for info in proto.graph.input:
        if info.name in initializers:
            continue
        t = info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
        if not dims or min(dims) < 1:
            raise SegDeployError(
                "--check needs static input shapes; {} is {} (export at a fixed --res, or "
                "--check 0)".format(info.name, [d.dim_param or d.dim_value for d in t.shape.dim])
            )
        for feed in feeds:
            if t.elem_type == TensorProto.UINT8:
                feed[info.name] = rng.randint(0, 256, dims).astype(np.uint8)
            else:
                feed[info.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def main(argv=None):
    import argparse

    from .._cli import run_main
    from .._io import check_writable_file, write_bytes
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="python -m segdeploy.export.seghead",
        description="Replace a graph's final Resize + ArgMax with one SegHead plugin node (for "
        "TensorRT with libseghead_plugin.so) and check its labels against the standard graph in "
        "ONNX Runtime, SegHead computed by the kernel's host build.",
    )
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    parser.add_argument("model", help="ONNX graph ending in Resize + ArgMax")
    parser.add_argument("--out", help="output path (default: MODEL with .seghead.onnx)")
    parser.add_argument(
        "--uint8-labels", action="store_true", help="uint8 labels (TensorRT 10+; default int32)"
    )
    parser.add_argument(
        "--check",
        type=int,
        default=2,
        metavar="N",
        help="random inputs to compare the two graphs on (default 2; 0: no check)",
    )
    args = parser.parse_args(argv)

    def body():
        onnx = require("onnx", "the SegHead graph rewrite")
        out = args.out or (args.model[: -len(".onnx")] if args.model.endswith(".onnx") else
                           args.model) + ".seghead.onnx"  # fmt: skip
        check_writable_file(out, "--out")
        if args.check < 0:
            raise SegDeployError("--check must be 0 or more, got {}".format(args.check))
        try:
            proto = onnx.load(args.model)
        except Exception as exc:  # onnx raises several types for a bad file
            raise SegDeployError("cannot read {} as ONNX: {}".format(args.model, exc)) from None
        fused, summary = fuse_head(proto, uint8_labels=args.uint8_labels)
        if not summary["fused"]:
            reasons = "; ".join(
                "{}: {}".format(s["argmax"], s["reason"]) for s in summary["skipped"]
            )
            raise SegDeployError(
                "{} has no Resize + ArgMax head to fuse ({})".format(
                    args.model, reasons or "no ArgMax"
                )
            )
        for head in summary["fused"]:
            print(
                "{}: {} -> {} x {} labels ({})".format(
                    head["node"],
                    head["input"],
                    head["out_size"][0],
                    head["out_size"][1],
                    "align_corners" if head["align_corners"] else "half_pixel",
                )  # fmt: skip
            )
        if args.check:
            if args.uint8_labels:
                raise SegDeployError(
                    "--check runs int32-label graphs; drop --uint8-labels or --check 0"
                )
            figures = check(proto, fused, _random_feeds(proto, args.check))
            print(
                "labels: {disagreements} of {pixels} differ from the standard graph "
                "({classes} classes present)".format(**figures)
            )
            if figures["disagreements"]:
                raise SegDeployError("the SegHead graph's labels differ from the standard graph's")
        write_bytes(out, fused.SerializeToString())
        print("wrote {}".format(out))
        return 0

    return run_main(parser.prog, body, "nothing written")


if __name__ == "__main__":
    import sys

    sys.exit(main())
