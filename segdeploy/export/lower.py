"""Graph rewrites at export so that every TensorRT release parses the graph and reads it right.

``segdeploy.engines.parser_rules`` says what each release's ONNX parser rejects or misreads;
this module (host side: it uses onnx) rewrites what the target release cannot take into an
equivalent graph it can, before the export is verified against PyTorch (so every rewrite is
covered by the same parity check as the rest of the graph):

    for every TensorRT target
      BatchNormalization (no conv before it)  ->  Mul(scale) -> Add(shift), per channel
    for TensorRT < 8.5 (Jetson TX2: 8.2)
      Resize(cubic, scales 1/k, half_pixel)   ->  Pad(edge) -> Conv(depthwise k-strided 4x4)
      FP16 Clip(x, lo, hi)                    ->  Max(x, lo) -> Min(., hi)  (Relu when lo == 0)
      IR version                              ->  7 (onnx 1.8, which 8.2's parser is built on)

The cubic lowering is exact: with ``scales`` = 1/k (k integer) and half_pixel coordinates every
output sample sits at the same fraction between input samples, so ONNX's 4-tap cubic filter is
the same 4x4 kernel at every output position, applied with stride k; ONNX clamps taps that fall
outside the image to the edge sample, which is what the edge padding does.

    x (N,C,H,W) ─ Resize(cubic, 1/k) ─►                  (N,C,H/k,W/k)
    x (N,C,H,W) ─ Pad(edge, p) ─ Conv(groups=C, 4x4, stride k, no bias) ─► (N,C,H/k,W/k)
"""

import numpy as np
from onnx import TensorProto, helper, numpy_helper, shape_inference

from ..engines.parser_rules import CUBIC_RESIZE_SINCE, HALF_CLIP_BOUNDS_SINCE, parse_version

IR_VERSION_FOR_82 = 7  # onnx 1.8's IR_VERSION: onnx-tensorrt 8.2-GA's third_party/onnx


def _fresh(graph, stem):
    taken = {o for n in graph.node for o in n.output} | {t.name for t in graph.initializer}
    taken |= {n.name for n in graph.node}
    i, name = 0, stem
    while name in taken:
        i += 1
        name = "{}_{}".format(stem, i)
    return name


def _initializer(graph, stem, array):
    name = _fresh(graph, stem)
    graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    return name


def _initializers(graph):
    return {t.name: t for t in graph.initializer}


def _replace(graph, node, new_nodes):
    """Put ``new_nodes`` where ``node`` was (graph nodes must stay topologically sorted)."""
    index = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, new in enumerate(new_nodes):
        graph.node.insert(index + offset, new)


def _drop_unused_initializers(graph):
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


# --- BatchNormalization -> Mul + Add -----------------------------------------------------------


def batchnorm_to_mul_add(model):
    """Rewrite every inference BatchNormalization left in ``model`` (in place) as a per-channel
    Mul and Add. Returns how many were rewritten.

    segexport folds every BN that follows a convolution; those left (SwiftNet's BN -> ReLU ->
    Conv decoder) have no conv to fold into. TensorRT < 8.6 imports one with FP16 weights through
    a slow elementwise fallback; a Mul/Add pair with constants is what every release fuses.
    """
    graph = model.graph
    init = _initializers(graph)
    count = 0
    for node in [n for n in graph.node if n.op_type == "BatchNormalization"]:
        if len([o for o in node.output if o]) != 1 or _attr(node, "training_mode", 0):
            continue
        names = list(node.input[1:5])
        if len(names) != 4 or not all(n in init for n in names):
            continue
        gamma, beta, mean, var = (numpy_helper.to_array(init[n]).astype(np.float64) for n in names)
        eps = float(_attr(node, "epsilon", 1e-5))
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        dtype = numpy_helper.to_array(init[names[0]]).dtype
        shape = (-1, 1, 1)  # (C, 1, 1) broadcasts over N, H, W of an NCHW tensor
        stem = (node.name or node.output[0]).strip("/").replace("/", "_")
        scale_name = _initializer(graph, stem + "_scale", scale.reshape(shape).astype(dtype))
        shift_name = _initializer(graph, stem + "_shift", shift.reshape(shape).astype(dtype))
        scaled = _fresh(graph, node.output[0] + "_scaled")
        _replace(
            graph,
            node,
            [
                helper.make_node(
                    "Mul",
                    [node.input[0], scale_name],
                    [scaled],
                    name=_fresh(graph, node.name + "_mul"),
                ),
                helper.make_node(
                    "Add",
                    [scaled, shift_name],
                    [node.output[0]],
                    name=_fresh(graph, node.name + "_add"),
                ),
            ],
        )
        count += 1
    _drop_unused_initializers(graph)
    return count


# --- cubic downsampling Resize -> Pad(edge) + depthwise Conv -------------------------------------


def cubic_weights(a, fraction):
    """ONNX Resize's 4 cubic taps (offsets -1, 0, 1, 2) for a sample ``fraction`` past a pixel."""
    weights = []
    for d in (1 + fraction, fraction, 1 - fraction, 2 - fraction):
        d = abs(d)
        if d <= 1:
            weights.append((a + 2) * d**3 - (a + 3) * d**2 + 1)
        elif d < 2:
            weights.append(a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a)
        else:
            weights.append(0.0)
    return np.array(weights, dtype=np.float64)


def _downsample_factor(node, init):
    """k when ``node`` is a cubic Resize by exactly 1/k (integer k >= 2) on H and W, else None."""
    if _attr(node, "mode", b"nearest") not in (b"cubic", "cubic"):
        return None
    if _attr(node, "exclude_outside", 0) or _attr(node, "antialias", 0):
        return None
    transform = _attr(node, "coordinate_transformation_mode", b"half_pixel")
    if transform not in (b"half_pixel", "half_pixel", b"pytorch_half_pixel", "pytorch_half_pixel"):
        return None
    if len(node.input) < 3 or node.input[2] not in init or (len(node.input) > 3 and node.input[3]):
        return None
    scales = numpy_helper.to_array(init[node.input[2]]).astype(np.float64)
    if scales.shape != (4,) or scales[0] != 1 or scales[1] != 1 or scales[2] != scales[3]:
        return None
    k = 1.0 / scales[2]
    if k < 2 or abs(k - round(k)) > 1e-9:
        return None
    return int(round(k))


def _channels(model, value):
    inferred = shape_inference.infer_shapes(model)
    infos = list(inferred.graph.value_info) + list(inferred.graph.input)
    for info in infos:
        if info.name == value:
            dims = info.type.tensor_type.shape.dim
            if len(dims) == 4 and dims[1].HasField("dim_value"):
                return dims[1].dim_value
    return None


def cubic_downsample_to_conv(model):
    """Rewrite (in place) each cubic Resize by 1/k as edge padding + a depthwise convolution.

    Returns the names of the rewritten nodes. The input height and width must be multiples of k
    (true for every model whose stride is a multiple of k, e.g. the pyramid model's 128).
    """
    graph = model.graph
    init = _initializers(graph)
    done = []
    for node in [n for n in graph.node if n.op_type == "Resize"]:
        k = _downsample_factor(node, init)
        if k is None:
            continue
        channels = _channels(model, node.input[0])
        if channels is None:
            continue
        a = float(_attr(node, "cubic_coeff_a", -0.75))
        # output i samples x = k*i + (k-1)/2: taps floor(x)-1 .. floor(x)+2, fraction 0 or 0.5
        fraction = 0.5 if k % 2 == 0 else 0.0
        taps = cubic_weights(a, fraction)
        first = (k - 1) // 2 - 1  # first tap of output 0, relative to input 0
        pad_begin = max(0, -first)
        pad_end = max(0, (k - 1) // 2 + 2 - k + 1)  # last tap of the last output past H-1
        kernel = np.outer(taps, taps)  # (4, 4): separable, the same filter on rows and columns
        weight = np.broadcast_to(kernel, (channels, 1, 4, 4)).astype(np.float32)
        stem = (node.name or node.output[0]).strip("/").replace("/", "_") + "_cubic"
        weight_name = _initializer(graph, stem + "_weight", weight)
        source = node.input[0]
        new_nodes = []
        if pad_begin or pad_end:
            pads = [0, 0, pad_begin, pad_begin, 0, 0, pad_end, pad_end]
            pads_name = _initializer(graph, stem + "_pads", np.array(pads, dtype=np.int64))
            padded = _fresh(graph, stem + "_padded")
            new_nodes.append(
                helper.make_node(
                    "Pad",
                    [source, pads_name],
                    [padded],
                    name=_fresh(graph, stem + "_pad"),
                    mode="edge",
                )
            )
            source = padded
        # after padding, output i's first tap sits at k*i + start (start > 0 only for k >= 5,
        # whose windows begin inside the image: those rows and columns are cropped first)
        start = first + pad_begin
        new_nodes.append(
            helper.make_node(
                "Conv",
                [source, weight_name]
                if start == 0
                else [_crop(graph, new_nodes, source, start, stem), weight_name],
                [node.output[0]],
                name=_fresh(graph, stem + "_conv"),
                group=channels,
                kernel_shape=[4, 4],
                strides=[k, k],
                pads=[0, 0, 0, 0],
            )
        )
        _replace(graph, node, new_nodes)
        done.append(node.name)
    _drop_unused_initializers(graph)
    return done


def _crop(graph, new_nodes, source, start, stem):
    """Drop the first ``start`` rows and columns (k > 4 only: taps begin inside the image)."""
    starts = _initializer(graph, stem + "_starts", np.array([start, start], dtype=np.int64))
    ends = _initializer(graph, stem + "_ends", np.array([2**62, 2**62], dtype=np.int64))
    axes = _initializer(graph, stem + "_axes", np.array([2, 3], dtype=np.int64))
    cropped = _fresh(graph, stem + "_cropped")
    new_nodes.append(
        helper.make_node(
            "Slice", [source, starts, ends, axes], [cropped], name=_fresh(graph, stem + "_crop")
        )
    )
    return cropped


# --- FP16 Clip -> Max/Min ------------------------------------------------------------------------


def clip_to_min_max(model):
    """Rewrite (in place) every Clip whose bounds are non-FP32 initializers as Max/Min (Relu
    for a zero lower bound). Returns the count. TensorRT < 8.5 reads Clip bounds as float32
    bytes whatever their type; elementwise Max/Min take FP16 constants correctly."""
    graph = model.graph
    init = _initializers(graph)
    count = 0
    for node in [n for n in graph.node if n.op_type == "Clip"]:
        bounds = [b for b in node.input[1:3]]
        present = [b for b in bounds if b]
        if not present or not all(b in init for b in present):
            continue
        if all(init[b].data_type == TensorProto.FLOAT for b in present):
            continue
        lo = bounds[0] if len(bounds) > 0 and bounds[0] else None
        hi = bounds[1] if len(bounds) > 1 and bounds[1] else None
        current = node.input[0]
        new_nodes = []
        steps = []
        if lo is not None:
            steps.append(("Relu" if float(numpy_helper.to_array(init[lo])) == 0.0 else "Max", lo))
        if hi is not None:
            steps.append(("Min", hi))
        for i, (op, bound) in enumerate(steps):
            last = i == len(steps) - 1
            out = node.output[0] if last else _fresh(graph, node.output[0] + "_" + op.lower())
            inputs = [current] if op == "Relu" else [current, bound]
            new_nodes.append(
                helper.make_node(
                    op, inputs, [out], name=_fresh(graph, node.name + "_" + op.lower())
                )
            )
            current = out
        _replace(graph, node, new_nodes)
        count += 1
    _drop_unused_initializers(graph)
    return count


# --- the export's entry points -------------------------------------------------------------------


def _lower_ir(model, version, notes):
    if version < CUBIC_RESIZE_SINCE and model.ir_version > IR_VERSION_FOR_82:
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset <= 13:  # IR 7 covers opsets up to 13 (onnx 1.8)
            notes.append(
                "IR version {} -> {} for TensorRT {}.{}".format(
                    model.ir_version, IR_VERSION_FOR_82, *version
                )
            )
            model.ir_version = IR_VERSION_FOR_82


def lower_for_target(model, trt_version):
    """Rewrite (in place) the FP32 export for TensorRT ``trt_version``; returns one-line notes."""
    version = parse_version(trt_version)
    notes = []
    count = batchnorm_to_mul_add(model)
    if count:
        notes.append(
            "{} BatchNormalization without a convolution before them -> Mul+Add".format(count)
        )
    if version < CUBIC_RESIZE_SINCE:
        lowered = cubic_downsample_to_conv(model)
        if lowered:
            notes.append(
                "{} bicubic downsampling Resize -> edge-padded depthwise convolution (TensorRT "
                "{}.{} has no cubic Resize)".format(len(lowered), *version)
            )
    _lower_ir(model, version, notes)
    return notes


def lower_fp16_for_target(model, trt_version):
    """Rewrite (in place) the FP16-typed graph for TensorRT ``trt_version``; returns notes."""
    version = parse_version(trt_version)
    notes = []
    if version < HALF_CLIP_BOUNDS_SINCE:
        count = clip_to_min_max(model)
        if count:
            notes.append(
                "{} FP16 Clip -> Relu/Max + Min (TensorRT {}.{} reads FP16 Clip bounds as "
                "float32)".format(count, *version)
            )
    _lower_ir(model, version, notes)
    return notes
