"""ONNX Runtime custom op for ``DBlockConv`` nodes, computed by the kernel's host build.

A ``segexport --dblock-plugin`` graph is made for TensorRT with the DBlockConv plugin. To check
what it computes on a machine without a GPU, ONNX Runtime can run it with this op, which calls
``segdeploy.plugins.dblock.host.dblock_conv`` (the CUDA kernel's arithmetic compiled as C++ for
the CPU). It is a functional check, not a speed proxy: every call crosses into Python and copies
its output through a list (onnxruntime-extensions' Python-op protocol).

Opt-in only: ``Runtime(path, custom_ops=["dblock"])`` or ``OnnxRuntimeEngine(..., custom_ops=...)``
registers the op; nothing named in a file decides what code is loaded.

onnxruntime-extensions' Python ops live in its own domain (``ai.onnx.contrib``) and take scalar
int, float and string attributes only, so the session gets an in-memory copy of the graph whose
DBlockConv nodes are moved to that domain and carry their dilations also as a string; the file is
not changed. Python 3.6 compatible; onnx and onnxruntime_extensions are imported when used.
"""

from .._deps import require
from ..errors import EngineError

NAMES = ("dblock", "seghead")  # seghead: runtime/seghead_op.py
OP_TYPE = "DBlockConv"
_EXT_DOMAIN = "ai.onnx.contrib"
_DILATIONS_TEXT = "segdeploy_dilations"

_registered = []


def check_names(names):
    """The list of custom op sets asked for; EngineError for unknown names."""
    if isinstance(names, str):
        names = [names]
    names = list(names or [])
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise EngineError(
            "custom_ops knows {}; got {}".format(", ".join(repr(n) for n in NAMES), unknown)
        )
    return names


def _register():
    """Declare the Python op once per process; return the extensions library path."""
    ext = require("onnxruntime_extensions", "running DBlockConv graphs in ONNX Runtime")
    if not _registered:
        from ..plugins.dblock.host import dblock_conv

        f32 = ext.PyCustomOpDef.dt_float
        i64 = ext.PyCustomOpDef.dt_int64
        text = ext.PyCustomOpDef.dt_string

        def dblock_conv_op(x, weight, bias, **attrs):
            dilations = [int(v) for v in attrs[_DILATIONS_TEXT].split(",")]
            return dblock_conv(
                x,
                weight,
                bias,
                dilations,
                group_width=int(attrs["group_width"]),
                relu=bool(attrs["relu"]),
            )

        ext.onnx_op(
            op_type=OP_TYPE,
            inputs=[f32, f32, f32],
            outputs=[f32],
            attrs={_DILATIONS_TEXT: text, "group_width": i64, "relu": i64},
        )(dblock_conv_op)
        _registered.append(dblock_conv_op)
    return ext.get_library_path()


def count_nodes(model_proto):
    return sum(1 for n in model_proto.graph.node if n.op_type == OP_TYPE)


def _cast_fp16_nodes(graph):
    """The op computes in float32: a DBlockConv of an FP16-typed graph (NAME.dblock.fp16.onnx,
    its weight initializer FLOAT16) gets Casts to float32 around it, in place."""
    from onnx import TensorProto, helper

    fp16 = set(t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT16)
    nodes = list(graph.node)
    out = []
    for node in nodes:
        if node.op_type != OP_TYPE or len(node.input) < 2 or node.input[1] not in fp16:
            out.append(node)
            continue
        inputs = []
        for name in node.input:
            cast = name + "_dblock_f32"
            out.append(helper.make_node("Cast", [name], [cast], to=TensorProto.FLOAT))
            inputs.append(cast)
        del node.input[:]
        node.input.extend(inputs)
        result = node.output[0]
        node.output[0] = result + "_dblock_f32"
        out.append(node)
        out.append(helper.make_node("Cast", [node.output[0]], [result], to=TensorProto.FLOAT16))
    del graph.node[:]
    graph.node.extend(out)


def adapt(model_proto):
    """Move ``model_proto``'s DBlockConv nodes (in place) to the extensions' domain, with their
    dilations also as text (and float32 Casts around those of an FP16-typed graph); returns the
    number of nodes."""
    from onnx import helper

    _cast_fp16_nodes(model_proto.graph)
    count = 0
    for node in model_proto.graph.node:
        if node.op_type != OP_TYPE:
            continue
        count += 1
        node.domain = _EXT_DOMAIN
        dilations = next((list(a.ints) for a in node.attribute if a.name == "dilations"), None)
        if not dilations or len(dilations) != 2:
            raise EngineError("node {} lacks dilations [d1, d2]".format(node.name or OP_TYPE))
        node.attribute.extend(
            [helper.make_attribute(_DILATIONS_TEXT, ",".join(str(int(d)) for d in dilations))]
        )
    if not any(o.domain == _EXT_DOMAIN for o in model_proto.opset_import):
        model_proto.opset_import.extend([helper.make_opsetid(_EXT_DOMAIN, 1)])
    return count


def session_options(names, options):
    """Register the op sets in ``names`` with ONNX Runtime ``options``; returns ``options``.

    One extensions library serves every Python op: each set is declared, then the library is
    registered once."""
    names = check_names(names)
    library = None
    if "dblock" in names:
        library = _register()
    if "seghead" in names:
        from .seghead_op import register

        library = register()
    if library is not None:
        options.register_custom_ops_library(library)
    return options


def prepare(path, names, options):
    """Register the ops in ``names`` with ``options``; return what the session opens instead of
    ``path``: the adapted graph, serialized."""
    onnx = require("onnx", "running plugin graphs in ONNX Runtime")
    names = check_names(names)
    if not names:
        return path
    session_options(names, options)
    try:
        proto = onnx.load(path)
    except Exception as exc:
        raise EngineError("cannot read {} as ONNX: {}".format(path, exc)) from None
    if "dblock" in names:
        adapt(proto)
    if "seghead" in names:
        from .seghead_op import adapt as adapt_seghead

        adapt_seghead(proto)
    return proto.SerializeToString()


def hint(path, message):
    """The sentence to add when ONNX Runtime fails on a DBlockConv graph opened without the op."""
    if OP_TYPE not in message:
        from .seghead_op import hint as seghead_hint

        return seghead_hint(path, message)
    return (
        "{} holds {} plugin nodes (a segexport --dblock-plugin graph made for TensorRT with the "
        "DBlockConv plugin); open it with custom_ops=['dblock'] to run them on the CPU through the "
        "kernel's host build (a functional check, slow), or open the standard graph "
        "next to it".format(path, OP_TYPE)
    )
