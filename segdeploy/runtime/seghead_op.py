"""ONNX Runtime custom op for ``SegHead`` nodes, computed by the fused head kernel's host build.

A ``segbuild --seghead-plugin`` graph (``NAME.seghead.onnx``) is made for TensorRT with the SegHead
plugin. To check what it computes on a machine without a GPU, ONNX Runtime can run it with this
op, which calls ``segdeploy.plugins.seghead.host.seg_head`` (the CUDA kernel's arithmetic
compiled as C++ for the CPU): the same int32 labels the plan returns. A functional check, not a
speed proxy (every call crosses into Python).

Opt-in only, like the D-block op: ``Runtime(path, custom_ops=["seghead"])`` (with ``"dblock"``
too for a graph holding both plugins), ``OnnxRuntimeEngine(..., custom_ops=...)``, or
``export.seghead.host_session``. The session gets an in-memory copy of the graph whose SegHead
nodes are moved to onnxruntime-extensions' domain (``ai.onnx.contrib``), read float32 logits
(a Cast in front: an FP16-typed graph's half logits convert exactly, as the kernel reads them)
and drop the ``uint8_labels`` attribute (the op writes int32 labels; a uint8-label node is
refused). The file is not changed. Python 3.6 compatible; onnx and onnxruntime_extensions are
imported when used.
"""

from .._deps import require
from ..engines.seghead_graph import PLUGIN_NAME
from ..errors import EngineError

OP_TYPE = PLUGIN_NAME
_EXT_DOMAIN = "ai.onnx.contrib"
_registered = []


def register():
    """Declare the Python op once per process; return the extensions library path."""
    ext = require("onnxruntime_extensions", "running SegHead graphs in ONNX Runtime")
    if not _registered:
        import numpy as np

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
            op_type=OP_TYPE,
            inputs=[ext.PyCustomOpDef.dt_float],
            outputs=[ext.PyCustomOpDef.dt_int32],
            attrs=attrs,
        )(seg_head_op)
        _registered.append(seg_head_op)
    return ext.get_library_path()


def count_nodes(model_proto):
    return sum(1 for n in model_proto.graph.node if n.op_type == OP_TYPE)


def adapt(model_proto):
    """Make ``model_proto``'s SegHead nodes (in place) the extensions' op, each behind a Cast to
    float32; returns the number of nodes."""
    from onnx import TensorProto, helper

    out = []
    count = 0
    for node in model_proto.graph.node:
        if node.op_type != OP_TYPE or node.domain == _EXT_DOMAIN:
            out.append(node)
            continue
        count += 1
        if any(a.name == "uint8_labels" and a.i for a in node.attribute):
            raise EngineError(
                "node {} writes uint8 labels; the host op runs int32-label SegHead nodes "
                "only".format(node.name or OP_TYPE)
            )
        cast = node.input[0] + "_seghead_f32"
        out.append(helper.make_node("Cast", [node.input[0]], [cast], to=TensorProto.FLOAT))
        node.input[0] = cast
        node.domain = _EXT_DOMAIN
        keep = [a for a in node.attribute if a.name != "uint8_labels"]
        del node.attribute[:]
        node.attribute.extend(keep)
        out.append(node)
    del model_proto.graph.node[:]
    model_proto.graph.node.extend(out)
    if count and not any(o.domain == _EXT_DOMAIN for o in model_proto.opset_import):
        model_proto.opset_import.extend([helper.make_opsetid(_EXT_DOMAIN, 1)])
    return count


def hint(path, message):
    """The sentence to add when ONNX Runtime fails on a SegHead graph opened without the op."""
    if OP_TYPE not in message:
        return None
    return (
        "{} holds a {} plugin node (a segbuild --seghead-plugin graph made for TensorRT with the "
        "SegHead plugin); open it with custom_ops=['seghead'] to run it on the CPU through the "
        "kernel's host build (a functional check), or open the graph it was made from".format(
            path, OP_TYPE
        )
    )
