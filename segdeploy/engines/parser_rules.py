"""Would TensorRT's ONNX parser of a given release take this graph, and read it right?

A static check of an exported ONNX file against the rules of onnx-tensorrt, the parser that
ships inside each TensorRT release, so that a graph a Jetson TX2 (TensorRT 8.2) cannot parse, or
parses into silent garbage, is caught on the host before anybody copies it to the device. It
works on ``onnx_reader.read_model`` output: no onnx, no TensorRT, Python 3.6 (segbuild runs it on
the device before building).

Each rule below cites the onnx-tensorrt branch and file it was read from (github.com/onnx/
onnx-tensorrt; the parser of TensorRT X.Y is its X.Y-GA branch):

    8.2-GA  f42daeee  builtin_op_importers.cpp, onnx2trt_utils.cpp, README.md
    8.4-GA  63d626b6  builtin_op_importers.cpp (ops; Resize, Clip: unchanged from 8.2)
    8.5-GA  fdeeaca8  builtin_op_importers.cpp (ops; Resize: cubic; Clip: FP16 bounds)
    8.6-GA  ee0b139b  builtin_op_importers.cpp, onnx2trt_utils.cpp, README.md
    10.1-GA 96e78110  onnxOpImporters.cpp, importerUtils.cpp, README.md (10.x; also used for
                      11.x, whose parser is not in the mirror read here: 11.x dropped no op)

What the rules cannot know (plugins present on the device, tactics) the build itself finds out.
``check_model`` returns findings; ``check_graph`` (what segbuild and segexport call) raises
``ParserRuleError`` for errors and returns the notes.
"""

from ..errors import SegDeployError
from . import onnx_reader

# --- which ops each release's parser imports ----------------------------------------------------
# DEFINE_BUILTIN_OP_IMPORTER names (the TRT_* private ops and FallbackPluginImporter left out).
_OPS_82 = (
    "Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization "
    "Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum "
    "DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten "
    "Floor GRU Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool "
    "Greater GreaterOrEqual HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN LRN "
    "LSTM LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul Max "
    "MaxPool Mean Min Mul Neg NonMaxSuppression Not Or PRelu Pad ParametricSoftplus Pow "
    "QuantizeLinear RNN RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 "
    "ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum "
    "ReduceSumSquare Relu Reshape Resize ReverseSequence Round ScaledTanh Scan Scatter "
    "ScatterElements ScatterND Selu Shape Sigmoid Sign Sin Sinh Size Slice Softmax Softplus "
    "Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK "
    "Transpose Unsqueeze Upsample Where"
).split()
_OPS_84_ADDED = "HardSwish Shrink Xor".split()  # 8.4-GA builtin_op_importers.cpp
_OPS_85_ADDED = (  # 8.5-GA builtin_op_importers.cpp
    "GridSample MeanVarianceNormalization Mod NonZero OneHot RandomNormal RandomNormalLike "
    "RoiAlign Trilu"
).split()
_OPS_86_ADDED = "GroupNormalization IsInf LayerNormalization".split()  # 8.6-GA
_OPS_10_ADDED = "CastLike DeformConv Gelu Hardmax Mish".split()  # 10.1-GA onnxOpImporters.cpp

SUPPORTED_OPS = {
    (8, 2): frozenset(_OPS_82),
    (8, 4): frozenset(_OPS_82 + _OPS_84_ADDED),
    (8, 5): frozenset(_OPS_82 + _OPS_84_ADDED + _OPS_85_ADDED),
    (8, 6): frozenset(_OPS_82 + _OPS_84_ADDED + _OPS_85_ADDED + _OPS_86_ADDED),
    (10, 0): frozenset(_OPS_82 + _OPS_84_ADDED + _OPS_85_ADDED + _OPS_86_ADDED + _OPS_10_ADDED),
}

# Highest default-domain opset per parser (README.md of each branch: "supports operators up to
# Opset 13" (8.2), "up to Opset 17" (8.4-8.6), "opset 9 to opset 20" (10.0)).
MAX_OPSET = ((8, 4), 13), ((10, 0), 17), ((99, 0), None)
MIN_OPSET_10 = 9

# ONNX TensorProto types the parser converts (convertDtype in onnx2trt_utils.cpp /
# importerUtils.cpp): 8.2 has no UINT8; INT64 becomes INT32 before 10.0; BF16/FP8/INT4 in 10.x.
_TYPES_82 = frozenset([1, 3, 6, 7, 9, 10, 11])  # float int8 int32 int64 bool float16 double
_TYPES_86 = _TYPES_82 | {2}  # + uint8
_TYPES_10 = _TYPES_86 | {16, 17, 22}  # + bfloat16, float8e4m3fn, int4

# ONNX Resize/Clip/BatchNormalization fixes arrived with 8.5 (8.4-GA still asserts
# mode != "cubic" and reads Clip bounds as float*; 8.5-GA adds kCUBIC and half bounds).
CUBIC_RESIZE_SINCE = (8, 5)
HALF_CLIP_BOUNDS_SINCE = (8, 5)
INT64_TENSORS_SINCE = (10, 0)  # TensorRT 10.0 DataType.INT64; 8.x casts int64 to int32

_FLOAT, _INT32, _INT64, _FLOAT16 = 1, 6, 7, 10


# The oldest release whose parser rules are here. TensorRT 8.0 (JetPack 4.6 GA) is refused in
# one line rather than checked with 8.2's rules: its parser (onnx-tensorrt 8.0-GA) differs.
OLDEST = (8, 2)


class ParserRuleError(SegDeployError):
    """A graph that the target TensorRT release's ONNX parser rejects or misreads."""


class Finding(object):
    """One rule's verdict on one node: ``error`` (rejected or misread) or ``note``."""

    __slots__ = ("level", "node", "op_type", "message")

    def __init__(self, level, node, op_type, message):
        self.level = level
        self.node = node
        self.op_type = op_type
        self.message = message

    def __str__(self):
        where = "node {} ({})".format(self.node, self.op_type) if self.node else "graph"
        return "{}: {}".format(where, self.message)

    def __repr__(self):
        return "Finding({!r}, {!r})".format(self.level, str(self))


def parse_version(text):
    """'8.2' / '8.2.1.8' / (8, 2) / '10' -> (major, minor)."""
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = str(text).strip().split(".")
    try:
        numbers = [int(p) for p in parts[:2]]
    except ValueError:
        raise SegDeployError(
            "TensorRT version {!r} is not MAJOR.MINOR (e.g. 8.2, 8.6, 10.8)".format(text)
        ) from None
    version = tuple(numbers + [0])[:2]
    if not numbers or version < OLDEST:
        raise SegDeployError(
            "TensorRT {} is older than segdeploy supports: 8.2 is the oldest, which JetPack "
            "4.6.1 and newer ship (JetPack 4.6 GA has 8.0; upgrade to JetPack 4.6.1+, L4T "
            "r32.7, as docs/gpu-runbook.md shows)".format(".".join(str(n) for n in numbers) or text)
        )
    return version


def version_text(version):
    return "{}.{}".format(*version)


def _ops_for(version):
    """The op list of the newest release in SUPPORTED_OPS that is not newer than ``version``
    (9.x uses 8.6's, 11.x 10.x's: the nearest parser read)."""
    key = max(k for k in SUPPORTED_OPS if k <= version)
    return SUPPORTED_OPS[key]


def _types_for(version):
    return _TYPES_10 if version >= (10, 0) else _TYPES_86 if version >= (8, 6) else _TYPES_82


def _max_opset(version):
    for below, limit in MAX_OPSET:
        if version < below:
            return limit
    return None


def engine_output_dtype(onnx_dtype, trt_version):
    """The numpy dtype name a TensorRT engine of ``trt_version`` returns for an ONNX output of
    ``onnx_dtype``: 8.x has no INT64 tensors, so its parser makes an int64 ArgMax int32."""
    version = parse_version(trt_version)
    if onnx_dtype == "int64" and version < INT64_TENSORS_SINCE:
        return "int32"
    return onnx_dtype


# --- value types ---------------------------------------------------------------------------------

_SAME_AS_INPUT = None
_INT64_OUT = frozenset(["ArgMax", "ArgMin", "Shape", "Size", "NonZero"])


def value_types(graph):
    """{value name: TensorProto type} for graph inputs, initializers and every node output
    (following Cast's ``to`` and the int64 outputs of ArgMax/Shape; otherwise the type of the
    first typed input). Enough for the parser's type rules; not full ONNX type inference."""
    types = {}
    for info in graph.inputs + graph.value_info:
        if info.elem_type:
            types[info.name] = info.elem_type
    for name, tensor in graph.initializers.items():
        types[name] = tensor.data_type
    for node in graph.nodes:
        if node.op_type == "Cast":
            out = node.attributes.get("to")
        elif node.op_type in _INT64_OUT:
            out = _INT64
        elif node.op_type == "Constant":
            value = node.attributes.get("value")
            out = value.data_type if isinstance(value, onnx_reader.OnnxTensor) else None
        else:
            out = next((types[i] for i in node.inputs if i in types), None)
        for name in node.outputs:
            if out is not None and name not in types:
                types[name] = out
    for info in graph.outputs:
        if info.elem_type:
            types.setdefault(info.name, info.elem_type)
    return types


# --- the rules -----------------------------------------------------------------------------------


def _input(node, index):
    return node.inputs[index] if len(node.inputs) > index and node.inputs[index] else None


def _rule_resize(node, graph, types, version, out):
    mode = node.attributes.get("mode", "nearest")
    if mode == "cubic" and version < CUBIC_RESIZE_SINCE:
        # 8.2-GA/8.4-GA builtin_op_importers.cpp, Resize: ASSERT(mode != "cubic" && "This
        # version of TensorRT does not support cubic interpolation!")
        out.append(
            (
                "error",
                "bicubic Resize is not supported before TensorRT 8.5 (the parser asserts "
                "mode != cubic); export with segexport --trt-version {} so that it is lowered "
                "to a convolution".format(version_text(version)),
            )
        )
    scales = _input(node, 2)
    if scales and scales not in graph.initializers and version < (8, 6):
        # 8.2-GA Resize: ASSERT(scales.is_weights() && "Resize scales must be an initializer!")
        out.append(("error", "Resize scales must be an initializer for TensorRT < 8.6"))


def _rule_clip(node, graph, types, version, out):
    if version >= HALF_CLIP_BOUNDS_SINCE:
        return
    bounds = [b for b in (_input(node, 1), _input(node, 2)) if b]
    data_type = types.get(node.inputs[0]) if node.inputs else None
    if any(b not in graph.initializers for b in bounds) or data_type == _INT32:
        # 8.2-GA Clip: tensor bounds take the elementwise path, which takes FLOAT or INT32 only.
        if data_type not in (_FLOAT, _INT32):
            out.append(
                (
                    "error",
                    "Clip with computed bounds takes FLOAT or INT32 input before TensorRT "
                    "8.5, this one is {}".format(onnx_reader.DATA_TYPES.get(data_type, "?")),
                )
            )
        return
    for bound in bounds:
        tensor = graph.initializers[bound]
        if tensor.data_type != _FLOAT:
            # 8.2-GA/8.4-GA Clip: alpha = static_cast<float*>(min.values)[0] whatever the type
            out.append(
                (
                    "error",
                    "Clip bound {!r} is {}, which TensorRT < 8.5 reads as float32 bytes "
                    "(a wrong bound, silently); export with segexport --trt-version {} "
                    "(it lowers FP16 Clip to Max/Min)".format(
                        bound, tensor.dtype, version_text(version)
                    ),
                )
            )


def _rule_batchnorm(node, graph, types, version, out):
    weights = [_input(node, i) for i in range(1, 5)]
    constant = all(w in graph.initializers for w in weights if w)
    floats = constant and all(graph.initializers[w].data_type == _FLOAT for w in weights if w)
    if version < (8, 6) and not floats:
        # 8.2-GA BatchNormalization: non-initializer or non-FLOAT weights -> batchnormFallback
        out.append(
            (
                "note",
                "BatchNormalization with {} weights takes the parser's slower elementwise "
                "fallback before 8.6 (segexport exports it as Mul+Add)".format(
                    "FP16" if constant else "computed"
                ),
            )
        )


def _rule_argmax(node, graph, types, version, out):
    if types.get(node.inputs[0]) == _INT32:
        # 8.2-GA argMinMaxHelper: ASSERT(tensor.getType() != kINT32)
        out.append(("error", "{} of INT32 data is not supported".format(node.op_type)))
    if version < INT64_TENSORS_SINCE:
        out.append(("note", "int64 indices come out as int32 (TensorRT 8.x has no INT64)"))


def _rule_cast(node, graph, types, version, out):
    to = node.attributes.get("to")
    if to not in _types_for(version):
        # convertDtype: ASSERT(... "Unsupported data type for the Cast operator!")
        out.append(
            (
                "error",
                "Cast to {} is not supported by TensorRT {}".format(
                    onnx_reader.DATA_TYPES.get(to, to), version_text(version)
                ),
            )
        )


def _rule_maxpool(node, graph, types, version, out):
    if len([o for o in node.outputs if o]) > 1:
        # builtin_op_importers.cpp MaxPool: ASSERT(node.output().size() == 1 && "TensorRT
        # does not support the indices output in MaxPool!")
        out.append(("error", "MaxPool's indices output is not supported"))
    _rule_pool(node, graph, types, version, out)


def _rule_pool(node, graph, types, version, out):
    if any(d != 1 for d in node.attributes.get("dilations") or ()):
        # poolingHelper (8.2-GA/8.6-GA onnx2trt_utils.cpp) and 10.1-GA onnxOpCheckers.cpp:
        # "This version of TensorRT does not support dilations other than 1."
        out.append(("error", "pooling with dilations other than 1 is not supported"))


def _rule_pad(node, graph, types, version, out):
    mode = node.attributes.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        # 8.2-GA Pad: MAKE_ERROR("Unsupported pad mode") for anything else
        out.append(("error", "Pad mode {!r} is not supported".format(mode)))


def _rule_slice(node, graph, types, version, out):
    axes = _input(node, 3)
    if axes and axes not in graph.initializers and version < (8, 6):
        # 8.2-GA Slice: ASSERT(axes.allValuesKnown() && "... does not support dynamic axes.")
        out.append(("error", "Slice axes must be constant for TensorRT < 8.6"))


def _rule_matmul(node, graph, types, version, out):
    if any(types.get(i) == _INT32 for i in node.inputs) and version < (10, 0):
        # 8.2-GA MatMul: ASSERT(inputA->getType() != kINT32 && inputB->getType() != kINT32)
        out.append(("error", "MatMul of INT32 tensors is not supported before 10.0"))


def _rule_qdq(node, graph, types, version, out):
    """Explicit quantization: symmetric INT8 only (the QuantDequantLinearHelper of 8.2-GA/8.6-GA
    builtin_op_importers.cpp and 10.1-GA onnxOpImporters.cpp)."""
    scale = graph.initializers.get(_input(node, 1))
    if scale is not None and scale.values is not None and (scale.values <= 0).any():
        # 8.2-GA: ASSERT(scaleAllPositive && "Scale coefficients must all be positive")
        out.append(("error", "{} scales must all be positive".format(node.op_type)))
    zero = graph.initializers.get(_input(node, 2))
    if zero is None:
        return
    if zero.data_type == 2:
        # 8.2 imports no UINT8; 8.6 turns any zero point into a float shift on an INT8 layer;
        # 10.1-GA: "TensorRT doesn't support QuantizeLinear/DequantizeLinear with UINT8
        # zero_point. TensorRT will use INT8 instead." An activation quantized to 0..255 is then
        # clamped to 127: labels change without an error.
        out.append(
            (
                "error",
                "UINT8 zero point {!r}: TensorRT quantizes to INT8 only (it reads UINT8 Q/DQ as "
                "INT8, so values above 127 saturate); quantize activations as symmetric INT8, "
                "as segexport --int8 does".format(zero.name),
            )
        )
    elif zero.values is not None and zero.values.any():
        # 8.2-GA: ASSERT(shiftIsAllZeros(zeroPoint) && "TRT only supports symmetric quantization")
        out.append(
            (
                "error",
                "zero point {!r} is not all zeros: TensorRT only takes symmetric "
                "quantization".format(zero.name),
            )
        )


RULES = {
    "Resize": _rule_resize,
    "Clip": _rule_clip,
    "BatchNormalization": _rule_batchnorm,
    "ArgMax": _rule_argmax,
    "ArgMin": _rule_argmax,
    "Cast": _rule_cast,
    "MaxPool": _rule_maxpool,
    "AveragePool": _rule_pool,
    "Pad": _rule_pad,
    "Slice": _rule_slice,
    "MatMul": _rule_matmul,
    "QuantizeLinear": _rule_qdq,
    "DequantizeLinear": _rule_qdq,
}


def check_model(model, trt_version):
    """[Finding] for ``model`` (an ``onnx_reader.OnnxModel``) on TensorRT ``trt_version``."""
    version = parse_version(trt_version)
    graph = model.graph
    findings = []
    opset = model.opset
    limit = _max_opset(version)
    if opset is not None and limit is not None and opset > limit:
        findings.append(
            Finding(
                "error",
                None,
                None,
                "opset {} is newer than TensorRT {}'s parser takes (<= {}); re-export with "
                "--opset {}".format(opset, version_text(version), limit, limit),
            )
        )
    if opset is not None and version >= (10, 0) and opset < MIN_OPSET_10:
        findings.append(Finding("error", None, None, "TensorRT 10+ parses opset 9 and newer only"))
    supported_types = _types_for(version)
    for name, tensor in sorted(graph.initializers.items()):
        if tensor.data_type not in supported_types:
            findings.append(
                Finding(
                    "error",
                    None,
                    None,
                    "initializer {!r} is {}, which TensorRT {} cannot import".format(
                        name, tensor.dtype, version_text(version)
                    ),
                )
            )
        elif tensor.data_type == _INT64 and version < INT64_TENSORS_SINCE:
            values = tensor.values
            if (
                values is not None
                and values.size
                and (values.max() > 2**31 - 1 or values.min() < -(2**31))
            ):
                findings.append(
                    Finding(
                        "error",
                        None,
                        None,
                        "int64 initializer {!r} holds values beyond int32, to which "
                        "TensorRT 8.x casts it".format(name),
                    )
                )
    types = value_types(graph)
    ops = _ops_for(version)
    for node in graph.nodes:
        results = []
        if node.domain not in ("", "ai.onnx"):
            results.append(
                (
                    "note",
                    "op {}::{} needs a plugin registered on the device".format(
                        node.domain, node.op_type
                    ),
                )
            )
        elif node.op_type not in ops:
            results.append(
                (
                    "error",
                    "op {} has no importer in TensorRT {}'s ONNX parser; it needs a plugin "
                    "or a newer TensorRT".format(node.op_type, version_text(version)),
                )
            )
        else:
            rule = RULES.get(node.op_type)
            if rule is not None:
                rule(node, graph, types, version, results)
        for level, message in results:
            findings.append(Finding(level, node.name or node.outputs[0], node.op_type, message))
    for info in graph.outputs:
        elem = info.elem_type or types.get(info.name)
        if elem and elem not in supported_types:
            findings.append(
                Finding(
                    "error",
                    None,
                    None,
                    "output {!r} is {}, which TensorRT {} cannot return".format(
                        info.name, info.dtype, version_text(version)
                    ),
                )
            )
    return findings


def check_graph(onnx_path, trt_version, precision="fp32"):
    """The check segexport and segbuild run before building for ``trt_version``.

    Raises ParserRuleError (one line: the first problem and how many more) when the release's
    parser would reject or misread ``onnx_path``; returns the notes as one-line strings.
    ``precision`` only words the message (an FP16 build on 8.x-10.x starts from the FP32 graph).
    """
    return verdict(onnx_reader.read_model(onnx_path), trt_version, precision, onnx_path)


def check_serialized(data, trt_version, precision="fp32", where="the exported graph"):
    """``check_graph`` for a serialized ONNX model in memory (segexport, before it writes)."""
    return verdict(onnx_reader.parse_model(data, where), trt_version, precision, where)


def verdict(model, trt_version, precision, where):
    version = parse_version(trt_version)
    findings = check_model(model, version)
    errors = [f for f in findings if f.level == "error"]
    if errors:
        more = " (and {} more)".format(len(errors) - 1) if len(errors) > 1 else ""
        raise ParserRuleError(
            "TensorRT {}'s ONNX parser cannot take {} for a {} build: {}{}".format(
                version_text(version), where, precision.upper(), errors[0], more
            )
        )
    notes = []
    for finding in findings:
        line = str(finding)
        if line not in notes:
            notes.append(line)
    return notes
