"""segexport's side of the SegHead rewrite: check its labels in ONNX Runtime, and its command line.

The rewrite itself (the final bilinear Resize + ArgMax of a graph, or the logits of a graph cut
before them, become one ``SegHead`` plugin node) lives at the engines level,
``segdeploy.engines.seghead_graph``, where ``segbuild --seghead-plugin`` calls it on the device;
its names are re-exported here for the callers that knew them here.

``check`` runs the standard graph and the rewritten one in ONNX Runtime, the ``SegHead`` node
computed by the kernel's host build (``segdeploy.runtime.seghead_op``), and counts the labels
that differ. ``python -m segdeploy.export.seghead NAME.onnx`` writes ``NAME.seghead.onnx`` (with
its model card saying the labels come from the SegHead node) after that check.

Python 3.6 compatible; onnx is imported inside the functions.
"""

import copy

import numpy as np

from .. import card as card_mod
from .._deps import require
from ..engines.seghead_graph import (  # noqa: F401  (the rewrite, as callers knew it here)
    DOMAIN,
    MAX_CLASSES,
    MODES,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    Head,
    find_heads,
    fuse_file,
    fuse_head,
    head_card,
    seghead_path,
)
from ..errors import SegDeployError

# --- running a SegHead graph in ONNX Runtime on the host build ---------------------------------


def host_session(fused_proto, threads=1):
    """An ONNX Runtime session of a SegHead graph (int32 labels) whose SegHead nodes run on the
    kernel's host build (a functional check: every call crosses into Python)."""
    ort = require("onnxruntime", "running SegHead graphs in ONNX Runtime")
    from ..errors import EngineError
    from ..runtime import seghead_op

    proto = copy.deepcopy(fused_proto)
    try:
        seghead_op.adapt(proto)
    except EngineError as exc:
        raise SegDeployError(str(exc)) from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.register_custom_ops_library(seghead_op.register())
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
        card = card_mod.read_onnx_card(proto, args.model)
        if card is not None:  # the labels now come from the SegHead node: the card says so
            wanted = card["output"]["name"]
            entry = next((e for e in summary["fused"] if e["output"] == wanted), None)
            card = head_card(card, entry, args.uint8_labels) if entry else None
        if card is not None:
            card_mod.store_onnx_card(fused, card)
        write_bytes(out, fused.SerializeToString())
        if card is not None:
            card_mod.write_sidecar(out, card)
        print("wrote {}".format(out))
        return 0

    return run_main(parser.prog, body, "nothing written")


if __name__ == "__main__":
    import sys

    sys.exit(main())
