"""An FP16-typed copy of an exported graph, with FP32 input/output and FP32 islands.

TensorRT 11 accepts only strongly typed networks (its FP16 builder flag is gone), and ONNX
Runtime's CUDA provider runs FP16 when the graph is typed so: the precision lives in the graph.

    image (fp32) ─► Cast(fp16) ─► Conv … Relu … Conv (fp16 weights) ─► Cast(fp32) ─►
        Resize (final upsample, fp32) ─► ArgMax (fp32) ─► labels

Kept in FP32: the last Resize before the output (it interpolates logits whose small differences
decide the labels), ArgMax, and reductions (GlobalAveragePool, Reduce*, Softmax). Only *data*
inputs change type: Resize's scales/roi, Split sizes, Reshape shapes and the like keep their types.
onnxconverter-common's converter was tried first; it fails on these graphs (its cast clean-up
raises on a Resize feeding the output), and an explicit pass is easier to reason about.
"""

from onnx import TensorProto, helper, numpy_helper, shape_inference

FP32_OPS = frozenset(
    [
        "ArgMax",
        "ArgMin",
        "GlobalAveragePool",
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "ReduceL2",
        "Softmax",
        "LogSoftmax",
        "TopK",
    ]
)
# ops whose float inputs are not all data: index list of the data inputs
DATA_INPUTS = {
    "Resize": (0,),
    "Upsample": (0,),
    "Slice": (0,),
    "Reshape": (0,),
    "Split": (0,),
    "Expand": (0,),
    "Tile": (0,),
    "Pad": (0, 2),
    "Gather": (0,),
}
# ops without float data (shape arithmetic): never converted
SHAPE_OPS = frozenset(["Shape", "Size", "NonZero", "Range", "ConstantOfShape"])


def _final_resizes(graph):
    """Names of Resize nodes whose output reaches a graph output through no other compute."""
    producer = {o: n for n in graph.node for o in n.output}
    passthrough = {"ArgMax", "Identity", "Cast", "TopK"}
    found = set()
    for out in graph.output:
        node = producer.get(out.name)
        while node is not None and node.op_type in passthrough:
            node = producer.get(node.input[0])
        if node is not None and node.op_type in ("Resize", "Upsample"):
            found.add(node.name)
    return found


def convert_to_fp16(model_proto):
    """Return an FP16-typed copy of ``model_proto`` (FP32 graph inputs and outputs)."""
    import copy

    model = copy.deepcopy(model_proto)
    graph = model.graph
    keep_fp32 = _final_resizes(graph)
    init = {t.name: t for t in graph.initializer}
    float_tensors = set(t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT)
    float_tensors |= set(
        i.name for i in graph.input if i.type.tensor_type.elem_type == TensorProto.FLOAT
    )
    # Constant nodes producing floats are data like initializers.
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None and value.data_type == TensorProto.FLOAT:
                float_tensors.add(node.output[0])

    half = set()  # tensors that now hold fp16
    new_nodes = []
    casts = {}  # (tensor, to) -> cast output name

    def cast(name, to):
        key = (name, to)
        if key not in casts:
            out = "{}_as_{}".format(name, "fp16" if to == TensorProto.FLOAT16 else "fp32")
            new_nodes.append(helper.make_node("Cast", [name], [out], name=out, to=to))
            casts[key] = out
        return casts[key]

    fp16_inits = {}

    def as_half_initializer(name):
        if name not in fp16_inits:
            array = numpy_helper.to_array(init[name]).astype("float16")
            fp16_inits[name] = numpy_helper.from_array(array, name + "_fp16")
        return fp16_inits[name].name

    for node in graph.node:
        if node.op_type == "Constant" or node.op_type in SHAPE_OPS:
            new_nodes.append(node)
            continue
        run_fp32 = node.op_type in FP32_OPS or node.name in keep_fp32
        data = DATA_INPUTS.get(node.op_type, range(len(node.input)))
        float_data = [i for i in data if i < len(node.input) and node.input[i] in float_tensors]
        if not float_data and not any(o in float_tensors for o in node.input):
            # integer-only node; outputs keep their types
            new_nodes.append(node)
            continue
        for i in float_data:
            name = node.input[i]
            if run_fp32:
                if name in half:
                    node.input[i] = cast(name, TensorProto.FLOAT)
            elif name in init:
                node.input[i] = as_half_initializer(name)
            elif name not in half:
                node.input[i] = cast(name, TensorProto.FLOAT16)
        new_nodes.append(node)
        for out in node.output:
            if node.op_type in ("ArgMax", "ArgMin", "Shape"):
                continue
            if node.op_type == "TopK" and out != node.output[0]:
                continue
            float_tensors.add(out)
            if not run_fp32:
                half.add(out)
        if node.op_type == "Cast":
            to = next(a.i for a in node.attribute if a.name == "to")
            for out in node.output:
                half.discard(out)
                if to == TensorProto.FLOAT16:
                    half.add(out)

    # Graph outputs stay FP32: rename the fp16 producer's tensor and cast back.
    for out in graph.output:
        if out.name in half:
            inner = out.name + "_fp16"
            for node in new_nodes:
                node.output[:] = [inner if o == out.name else o for o in node.output]
                node.input[:] = [inner if i == out.name else i for i in node.input]
            new_nodes.append(
                helper.make_node("Cast", [inner], [out.name], name=out.name + "_to_fp32", to=1)
            )

    del graph.node[:]
    graph.node.extend(new_nodes)
    used = set(i for n in graph.node for i in n.input)
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + [t for t in fp16_inits.values() if t.name in used])
    del graph.value_info[:]
    return shape_inference.infer_shapes(model, strict_mode=True)
