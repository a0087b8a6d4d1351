"""A minimal reader for ONNX files: protobuf wire format, no onnx and no protobuf package.

The device side (``segbuild``, the TensorRT parser check in ``parser_rules``) must read an exported
graph under Python 3.6 with numpy only. It needs the model card (``ModelProto.metadata_props``) and
a structural view of the graph: ops, attributes, initializer types and shapes, input/output types.
This module decodes exactly that; it never builds or writes a model.

Field numbers follow onnx/onnx.proto (ONNX 1.x; stable since IR version 3):

    ModelProto       ir_version=1 producer_name=2 producer_version=3 graph=7 opset_import=8
                     metadata_props=14
    OperatorSetId    domain=1 version=2
    StringString     key=1 value=2
    GraphProto       node=1 name=2 initializer=5 input=11 output=12 value_info=13
    NodeProto        input=1 output=2 name=3 op_type=4 attribute=5 domain=7
    AttributeProto   name=1 f=2 i=3 s=4 t=5 g=6 floats=7 ints=8 strings=9 tensors=10 graphs=11
                     type=20
    TensorProto      dims=1 data_type=2 float_data=4 int32_data=5 int64_data=7 name=8 raw_data=9
                     double_data=10 uint64_data=11 data_location=14
    ValueInfoProto   name=1 type=2;  TypeProto tensor_type=1;  Tensor elem_type=1 shape=2
    TensorShape      dim=1;  Dimension dim_value=1 dim_param=2

Wire format: every field is a varint key ``(number << 3) | wire_type`` followed by a varint (0),
8 bytes (1), a varint length and that many bytes (2), or 4 bytes (5). Repeated scalars may be
packed (one length-delimited field) or not (one field per value); both are accepted.

Everything is bounded: a file larger than protobuf's 2 GiB limit, a length running past its
message, a varint longer than 10 bytes, subgraphs nested deeper than ``MAX_DEPTH`` or more than
``MAX_NODES`` nodes are refused with one ``SegDeployError`` sentence. Python 3.6 compatible.
"""

import os
import struct

import numpy as np

from ..errors import SegDeployError

MAX_FILE_BYTES = 2 * 1024**3  # protobuf cannot serialize a message past 2 GiB
MAX_DEPTH = 16  # subgraphs inside subgraphs (If/Loop bodies); ours have none
MAX_NODES = 1000000
SMALL_TENSOR_ELEMENTS = 4096  # initializers up to this size keep their values

# TensorProto.DataType -> numpy dtype name (None: no numpy equivalent; values are not decoded)
DATA_TYPES = {
    0: "undefined",
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
    17: "float8e4m3fn",
    18: "float8e4m3fnuz",
    19: "float8e5m2",
    20: "float8e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4e2m1",
}
_NUMPY_TYPES = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
}

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class OnnxReadError(SegDeployError):
    """A file that is not a readable ONNX model."""


class OnnxTensor(object):
    """An initializer or tensor attribute: type, shape, and the values of small ones."""

    __slots__ = ("name", "data_type", "dims", "values", "external")

    def __init__(self, name, data_type, dims, values, external):
        self.name = name
        self.data_type = data_type  # TensorProto.DataType number
        self.dims = dims  # tuple of ints
        self.values = values  # numpy array of shape dims, or None (large, external, exotic)
        self.external = external  # data stored outside the .onnx file

    @property
    def dtype(self):
        """numpy-style name of ``data_type`` ("float32", "float16", "int64", ...)."""
        return DATA_TYPES.get(self.data_type, "type{}".format(self.data_type))

    @property
    def size(self):
        n = 1
        for d in self.dims:
            n *= d
        return n

    def __repr__(self):
        return "OnnxTensor({!r}, {}, {})".format(self.name, self.dtype, list(self.dims))


class OnnxValueInfo(object):
    """A graph input or output: element type and dims (int, or str for a symbolic dim, or None)."""

    __slots__ = ("name", "elem_type", "dims")

    def __init__(self, name, elem_type, dims):
        self.name = name
        self.elem_type = elem_type  # TensorProto.DataType number; 0 when not a tensor
        self.dims = dims  # tuple, or None when the shape is unknown

    @property
    def dtype(self):
        return DATA_TYPES.get(self.elem_type, "type{}".format(self.elem_type))

    def __repr__(self):
        return "OnnxValueInfo({!r}, {}, {})".format(self.name, self.dtype, self.dims)


class OnnxNode(object):
    """One node; ``attributes`` maps names to Python values (int, float, str, lists, tensors)."""

    __slots__ = ("op_type", "domain", "name", "inputs", "outputs", "attributes")

    def __init__(self, op_type, domain, name, inputs, outputs, attributes):
        self.op_type = op_type
        self.domain = domain  # "" is the default ONNX domain
        self.name = name
        self.inputs = inputs  # list of value names ("" = optional input left out)
        self.outputs = outputs
        self.attributes = attributes

    def __repr__(self):
        return "OnnxNode({} {!r})".format(self.op_type, self.name)


class OnnxGraph(object):
    __slots__ = ("name", "nodes", "initializers", "inputs", "outputs", "value_info")

    def __init__(self, name, nodes, initializers, inputs, outputs, value_info):
        self.name = name
        self.nodes = nodes  # list of OnnxNode in file order
        self.initializers = initializers  # dict name -> OnnxTensor
        self.inputs = inputs  # list of OnnxValueInfo (may include initializers, IR < 4)
        self.outputs = outputs
        self.value_info = value_info  # intermediate values' types, when shape inference ran


class OnnxModel(object):
    __slots__ = (
        "ir_version",
        "opset_import",
        "producer_name",
        "producer_version",
        "metadata",
        "graph",
    )

    def __init__(self, ir_version, opset_import, producer_name, producer_version, metadata, graph):
        self.ir_version = ir_version
        self.opset_import = opset_import  # dict domain -> version ("" = ai.onnx)
        self.producer_name = producer_name
        self.producer_version = producer_version
        self.metadata = metadata  # dict str -> str
        self.graph = graph

    @property
    def opset(self):
        """The default-domain (ai.onnx) opset version, or None."""
        for domain in ("", "ai.onnx"):
            if domain in self.opset_import:
                return self.opset_import[domain]
        return None


# ---------------------------------------------------------------------------------------------
# wire format


class _Bad(Exception):
    """Internal: the bytes are not valid protobuf; turned into OnnxReadError with the path."""


def _varint(buf, pos, end):
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _Bad("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Bad("varint longer than 10 bytes")


def _signed64(value):
    return value - (1 << 64) if value >= (1 << 63) else value


def _fields(buf, pos, end):
    """Yield (field number, wire type, value); value is an int, or (start, stop) for wire type 2."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Bad("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
        elif wire == _LENGTH:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise _Bad("a field of {} bytes runs past its message".format(length))
            value = (pos, pos + length)
            pos += length
        elif wire == _FIXED32:
            if pos + 4 > end:
                raise _Bad("truncated fixed32")
            value = (pos, pos + 4)
            pos += 4
        elif wire == _FIXED64:
            if pos + 8 > end:
                raise _Bad("truncated fixed64")
            value = (pos, pos + 8)
            pos += 8
        else:  # 3/4: groups, which ONNX never uses
            raise _Bad("wire type {}".format(wire))
        yield number, wire, value


def _text(buf, span):
    try:
        return bytes(buf[span[0] : span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad("a string that is not UTF-8") from None


def _ints(buf, wire, value, out):
    """Append one repeated-int field (packed or not) to ``out`` as signed 64-bit ints."""
    if wire == _VARINT:
        out.append(_signed64(value))
    elif wire == _LENGTH:
        pos, end = value
        while pos < end:
            v, pos = _varint(buf, pos, end)
            out.append(_signed64(v))
    else:
        raise _Bad("an integer list with wire type {}".format(wire))


def _floats(buf, wire, value, out):
    if wire not in (_FIXED32, _LENGTH) or (value[1] - value[0]) % 4:
        raise _Bad("a float list with wire type {}".format(wire))
    n = (value[1] - value[0]) // 4
    out.extend(struct.unpack("<{}f".format(n), bytes(buf[value[0] : value[1]])))


def _doubles(buf, wire, value, out):
    if wire not in (_FIXED64, _LENGTH) or (value[1] - value[0]) % 8:
        raise _Bad("a double list with wire type {}".format(wire))
    n = (value[1] - value[0]) // 8
    out.extend(struct.unpack("<{}d".format(n), bytes(buf[value[0] : value[1]])))


# ---------------------------------------------------------------------------------------------
# messages


def _string_pair(buf, span):
    key = value = ""
    for number, wire, v in _fields(buf, span[0], span[1]):
        if wire != _LENGTH:
            continue
        if number == 1:
            key = _text(buf, v)
        elif number == 2:
            value = _text(buf, v)
    return key, value


def _tensor(buf, span, small):
    name = ""
    data_type = 0
    dims = []
    raw = None
    external = False
    typed = {"f": [], "i32": [], "i64": [], "d": [], "u64": []}
    for number, wire, v in _fields(buf, span[0], span[1]):
        if number == 1:
            _ints(buf, wire, v, dims)
        elif number == 2 and wire == _VARINT:
            data_type = _signed64(v)
        elif number == 8 and wire == _LENGTH:
            name = _text(buf, v)
        elif number == 9 and wire == _LENGTH:
            raw = v
        elif number == 14 and wire == _VARINT:
            external = v == 1
        elif number == 4:
            _floats(buf, wire, v, typed["f"])
        elif number == 5:
            _ints(buf, wire, v, typed["i32"])
        elif number == 7:
            _ints(buf, wire, v, typed["i64"])
        elif number == 10:
            _doubles(buf, wire, v, typed["d"])
        elif number == 11:
            _ints(buf, wire, v, typed["u64"])
    dims = tuple(dims)
    if any(d < 0 for d in dims):
        raise _Bad("tensor {!r} has a negative dimension".format(name))
    tensor = OnnxTensor(name, data_type, dims, None, external)
    numpy_type = _NUMPY_TYPES.get(data_type)
    if external or numpy_type is None or tensor.size > small:
        return tensor
    count = tensor.size
    if raw is not None:
        nbytes = raw[1] - raw[0]
        if nbytes != count * np.dtype(numpy_type).itemsize:
            raise _Bad("tensor {!r} holds {} bytes for shape {}".format(name, nbytes, list(dims)))
        values = np.frombuffer(
            bytes(buf[raw[0] : raw[1]]), dtype=np.dtype(numpy_type).newbyteorder("<")
        )
        values = values.astype(numpy_type)
    elif data_type == 1:
        values = np.array(typed["f"], dtype=np.float32)
    elif data_type == 11:
        values = np.array(typed["d"], dtype=np.float64)
    elif data_type == 7:
        values = np.array(typed["i64"], dtype=np.int64)
    elif data_type in (12, 13):
        values = np.array([v & 0xFFFFFFFFFFFFFFFF for v in typed["u64"]], dtype=numpy_type)
    elif data_type == 10:  # float16 bit patterns travel in int32_data
        values = np.array([v & 0xFFFF for v in typed["i32"]], dtype=np.uint16).view(np.float16)
    else:  # int32, int16, int8, uint16, uint8, bool
        values = np.array(typed["i32"], dtype=np.int64).astype(numpy_type)
    if values.size != count:
        raise _Bad("tensor {!r} holds {} values for shape {}".format(name, values.size, list(dims)))
    tensor.values = values.reshape(dims)
    return tensor


def _value_info(buf, span):
    name = ""
    elem_type = 0
    dims = None
    for number, wire, v in _fields(buf, span[0], span[1]):
        if number == 1 and wire == _LENGTH:
            name = _text(buf, v)
        elif number == 2 and wire == _LENGTH:  # TypeProto
            for n2, w2, v2 in _fields(buf, v[0], v[1]):
                if n2 != 1 or w2 != _LENGTH:  # only tensor_type
                    continue
                for n3, w3, v3 in _fields(buf, v2[0], v2[1]):
                    if n3 == 1 and w3 == _VARINT:
                        elem_type = _signed64(v3)
                    elif n3 == 2 and w3 == _LENGTH:
                        dims = tuple(
                            _dimension(buf, v4)
                            for n4, w4, v4 in _fields(buf, v3[0], v3[1])
                            if n4 == 1 and w4 == _LENGTH
                        )
    return OnnxValueInfo(name, elem_type, dims)


def _dimension(buf, span):
    for number, wire, v in _fields(buf, span[0], span[1]):
        if number == 1 and wire == _VARINT:
            return _signed64(v)
        if number == 2 and wire == _LENGTH:
            return _text(buf, v)
    return None


def _attribute(buf, span, depth, budget):
    name = ""
    kind = 0
    scalars = {}
    lists = {"floats": [], "ints": [], "strings": [], "tensors": [], "graphs": []}
    for number, wire, v in _fields(buf, span[0], span[1]):
        if number == 1 and wire == _LENGTH:
            name = _text(buf, v)
        elif number == 20 and wire == _VARINT:
            kind = v
        elif number == 2 and wire == _FIXED32:
            scalars["f"] = struct.unpack("<f", bytes(buf[v[0] : v[1]]))[0]
        elif number == 3 and wire == _VARINT:
            scalars["i"] = _signed64(v)
        elif number == 4 and wire == _LENGTH:
            scalars["s"] = _text(buf, v)
        elif number == 5 and wire == _LENGTH:
            scalars["t"] = _tensor(buf, v, SMALL_TENSOR_ELEMENTS)
        elif number == 6 and wire == _LENGTH:
            scalars["g"] = _graph(buf, v, depth + 1, budget)
        elif number == 7:
            _floats(buf, wire, v, lists["floats"])
        elif number == 8:
            _ints(buf, wire, v, lists["ints"])
        elif number == 9 and wire == _LENGTH:
            lists["strings"].append(_text(buf, v))
        elif number == 10 and wire == _LENGTH:
            lists["tensors"].append(_tensor(buf, v, SMALL_TENSOR_ELEMENTS))
        elif number == 11 and wire == _LENGTH:
            lists["graphs"].append(_graph(buf, v, depth + 1, budget))
    # AttributeType: FLOAT=1 INT=2 STRING=3 TENSOR=4 GRAPH=5 FLOATS=6 INTS=7 STRINGS=8 TENSORS=9
    # GRAPHS=10. Files older than IR 3 may lack ``type``: then the one field present decides.
    by_kind = {1: "f", 2: "i", 3: "s", 4: "t", 5: "g"}
    list_kind = {6: "floats", 7: "ints", 8: "strings", 9: "tensors", 10: "graphs"}
    if kind in by_kind:
        value = scalars.get(by_kind[kind])
        if value is None:  # proto3-style default: a zero scalar is not written
            value = {"f": 0.0, "i": 0, "s": ""}.get(by_kind[kind])
    elif kind in list_kind:
        value = lists[list_kind[kind]]
    elif kind == 0 and len(scalars) == 1:
        value = list(scalars.values())[0]
    elif kind == 0:
        present = [v for v in lists.values() if v]
        value = present[0] if len(present) == 1 else None
    else:  # sparse tensors, type protos: nothing our graphs or the parser rules look at
        value = None
    return name, value


def _node(buf, span, depth, budget):
    op_type = domain = name = ""
    inputs, outputs, attributes = [], [], {}
    for number, wire, v in _fields(buf, span[0], span[1]):
        if wire != _LENGTH:
            continue
        if number == 1:
            inputs.append(_text(buf, v))
        elif number == 2:
            outputs.append(_text(buf, v))
        elif number == 3:
            name = _text(buf, v)
        elif number == 4:
            op_type = _text(buf, v)
        elif number == 7:
            domain = _text(buf, v)
        elif number == 5:
            key, value = _attribute(buf, v, depth, budget)
            attributes[key] = value
    return OnnxNode(op_type, domain, name, inputs, outputs, attributes)


def _graph(buf, span, depth, budget):
    if depth > MAX_DEPTH:
        raise _Bad("subgraphs nested more than {} deep".format(MAX_DEPTH))
    name = ""
    nodes, initializers, inputs, outputs, value_info = [], {}, [], [], []
    for number, wire, v in _fields(buf, span[0], span[1]):
        if wire != _LENGTH:
            continue
        if number == 1:
            budget[0] -= 1
            if budget[0] < 0:
                raise _Bad("more than {} nodes".format(MAX_NODES))
            nodes.append(_node(buf, v, depth, budget))
        elif number == 2:
            name = _text(buf, v)
        elif number == 5:
            tensor = _tensor(buf, v, SMALL_TENSOR_ELEMENTS)
            initializers[tensor.name] = tensor
        elif number == 11:
            inputs.append(_value_info(buf, v))
        elif number == 12:
            outputs.append(_value_info(buf, v))
        elif number == 13:
            value_info.append(_value_info(buf, v))
    return OnnxGraph(name, nodes, initializers, inputs, outputs, value_info)


# ---------------------------------------------------------------------------------------------
# public API


def _load(path):
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise OnnxReadError("cannot read {}: {}".format(path, exc.strerror or exc)) from None
    if size > MAX_FILE_BYTES:
        raise OnnxReadError(
            "{} is {} bytes, more than an ONNX protobuf can hold (2 GiB); "
            "export with external data instead".format(path, size)
        )
    try:
        with open(path, "rb") as f:
            return path, f.read()
    except OSError as exc:
        raise OnnxReadError("cannot read {}: {}".format(path, exc.strerror or exc)) from None


def _model(path, data, with_graph):
    ir_version = None
    opsets = {}
    producer = ["", ""]
    metadata = {}
    graph = None
    budget = [MAX_NODES]
    try:
        for number, wire, v in _fields(data, 0, len(data)):
            if number == 1 and wire == _VARINT:
                ir_version = _signed64(v)
            elif number == 2 and wire == _LENGTH:
                producer[0] = _text(data, v)
            elif number == 3 and wire == _LENGTH:
                producer[1] = _text(data, v)
            elif number == 8 and wire == _LENGTH:
                domain, version = "", None
                for n2, w2, v2 in _fields(data, v[0], v[1]):
                    if n2 == 1 and w2 == _LENGTH:
                        domain = _text(data, v2)
                    elif n2 == 2 and w2 == _VARINT:
                        version = _signed64(v2)
                opsets[domain] = version
            elif number == 14 and wire == _LENGTH:
                key, value = _string_pair(data, v)
                metadata[key] = value
            elif number == 7 and wire == _LENGTH:
                graph = _graph(data, v, 0, budget) if with_graph else v
    except _Bad as exc:
        raise OnnxReadError(
            "{} is not a readable ONNX model ({}); re-export it with segexport".format(path, exc)
        ) from None
    if ir_version is None or graph is None:
        raise OnnxReadError(
            "{} is not an ONNX model (no IR version or no graph); pass the .onnx file "
            "that segexport wrote".format(path)
        )
    return OnnxModel(ir_version, opsets, producer[0], producer[1], metadata, graph)


def read_metadata(path):
    """``metadata_props`` of the ONNX file at ``path`` as a dict (e.g. the ``segdeploy.card``).

    Raises OnnxReadError (a SegDeployError) for a file that is missing or not ONNX.
    """
    path, data = _load(path)
    return _model(path, memoryview(data), with_graph=False).metadata


def parse_model(data, where="the ONNX bytes"):
    """``read_model`` for a serialized model held in memory (e.g. before segexport writes it)."""
    if len(data) > MAX_FILE_BYTES:
        raise OnnxReadError("{} is larger than an ONNX protobuf can hold (2 GiB)".format(where))
    return _model(where, memoryview(data), with_graph=True)


def read_model(path):
    """The whole model as an ``OnnxModel``: opsets, metadata, nodes, initializers, I/O types."""
    path, data = _load(path)
    return _model(path, memoryview(data), with_graph=True)
