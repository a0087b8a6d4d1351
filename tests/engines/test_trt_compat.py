"""The API bridge's dispatch, checked against small stand-ins with each TensorRT generation's
attribute set (8.2 bindings, 8.6 both, 10.x named only, 11.x strongly typed). These test which
calls *our* code makes, not TensorRT; the tensorrt-marked tests run the real thing."""

import enum
from types import SimpleNamespace

import numpy as np
import pytest

from segdeploy.engines import trt_compat
from segdeploy.errors import EngineError


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 6
    FP8 = 7


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


# name, shape, dtype, is_input: a dynamic-size segmentation graph
IO = [
    ("image", (1, 3, -1, -1), DataType.FLOAT, True),
    ("labels", (1, -1, -1), DataType.INT32, False),
]
PROFILE = [(1, 3, 32, 64), (1, 3, 64, 128), (1, 3, 128, 256)]


class BindingEngine(object):
    """8.2: binding indices only."""

    num_bindings = len(IO)

    def get_binding_name(self, i):
        return IO[i][0]

    def binding_is_input(self, i):
        return IO[i][3]

    def get_binding_shape(self, i):
        return IO[i][1]

    def get_binding_dtype(self, i):
        return IO[i][2]

    def get_binding_index(self, name):
        return [n for n, *_ in IO].index(name)

    def get_profile_shape(self, profile, index):
        assert profile == 0 and index == 0
        return PROFILE


class NamedEngine(object):
    """10.x: named tensors only."""

    num_io_tensors = len(IO)

    def _row(self, name):
        return [r for r in IO if r[0] == name][0]

    def get_tensor_name(self, i):
        return IO[i][0]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if self._row(name)[3] else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name):
        return self._row(name)[1]

    def get_tensor_dtype(self, name):
        return DataType.INT64 if name == "labels" else self._row(name)[2]

    def get_tensor_profile_shape(self, name, profile):
        assert name == "image" and profile == 0
        return PROFILE


class BothEngine(NamedEngine, BindingEngine):
    """8.5-8.6: named tensors plus the deprecated binding API."""


def module(engine_cls, fp16=True, explicit_batch=True, strongly_typed=False):
    flags = {"INT8": 1, "VERSION_COMPATIBLE": 2}
    if fp16:
        flags["FP16"] = 0
    members = {}
    if explicit_batch:
        members["EXPLICIT_BATCH"] = 0
    if strongly_typed:
        members["STRONGLY_TYPED"] = 1
    return SimpleNamespace(
        ICudaEngine=engine_cls,
        BuilderFlag=enum.IntEnum("BuilderFlag", flags),
        NetworkDefinitionCreationFlag=enum.IntEnum("NetworkDefinitionCreationFlag", members)
        if members
        else SimpleNamespace(__members__={}),
        DataType=DataType,
        TensorIOMode=TensorIOMode,
        MemoryPoolType=MemoryPoolType,
    )


TRT82 = module(BindingEngine)
TRT86 = module(BothEngine, strongly_typed=True)
TRT10 = module(NamedEngine, strongly_typed=True)
TRT11 = module(NamedEngine, fp16=False, explicit_batch=False, strongly_typed=True)


@pytest.mark.parametrize(
    "trt,generation",
    [(TRT82, "bindings"), (TRT86, "named"), (TRT10, "named-only"), (TRT11, "strongly-typed")],
)
def test_api_generation(trt, generation):
    assert trt_compat.api_generation(trt) == generation


def test_numpy_dtypes_by_name():
    assert trt_compat.numpy_dtype(DataType.INT32) == np.int32
    assert trt_compat.numpy_dtype(DataType.INT64) == np.int64
    assert trt_compat.numpy_dtype(DataType.HALF) == np.float16
    assert trt_compat.numpy_dtype(DataType.UINT8) == np.uint8
    with pytest.raises(EngineError, match="FP8 has no numpy equivalent"):
        trt_compat.numpy_dtype(DataType.FP8)


class Builder82(object):
    max_batch_size = 1
    platform_has_fast_fp16 = False


class Builder10(object):
    platform_has_fast_fp16 = True


class Builder11(object):
    pass


def test_network_flags_per_generation():
    assert trt_compat.network_flags(TRT82, Builder82()) == 1  # EXPLICIT_BATCH needed
    assert trt_compat.network_flags(TRT10, Builder10()) == 0  # explicit batch is implied
    assert trt_compat.network_flags(TRT10, Builder10(), strongly_typed=True) == 1 << 1
    assert trt_compat.network_flags(TRT11, Builder11(), strongly_typed=True) == 1 << 1


def test_fp16_flag_and_platform_query():
    assert trt_compat.has_fp16_flag(TRT82) and trt_compat.has_fp16_flag(TRT10)
    assert not trt_compat.has_fp16_flag(TRT11)
    assert trt_compat.platform_fast_fp16(Builder82()) is False
    assert trt_compat.platform_fast_fp16(Builder11()) is None


class Config82(object):
    def __init__(self):
        self.max_workspace_size = 0
        self.flags = []
        self.cache = None

    def set_flag(self, flag):
        self.flags.append(flag.name)

    def create_timing_cache(self, blob):
        return ("cache", blob)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = (cache, ignore_mismatch)


class Config10(Config82):
    builder_optimization_level = 3

    def __init__(self):
        super(Config10, self).__init__()
        self.pools = {}

    def set_memory_pool_limit(self, pool, nbytes):
        self.pools[pool] = nbytes


def test_workspace_goes_where_each_generation_wants_it():
    old, new = Config82(), Config10()
    assert trt_compat.set_workspace(TRT82, old, 256 << 20) == "max_workspace_size"
    assert old.max_workspace_size == 256 << 20
    assert trt_compat.set_workspace(TRT10, new, 256 << 20) == "memory_pool_limit"
    assert new.pools == {MemoryPoolType.WORKSPACE: 256 << 20} and new.max_workspace_size == 0


def test_optimization_level_only_where_it_exists():
    old, new = Config82(), Config10()
    assert trt_compat.set_optimization_level(old, 5) is False
    assert not hasattr(old, "builder_optimization_level")
    assert trt_compat.set_optimization_level(new, 5) is True
    assert new.builder_optimization_level == 5


def test_optional_flags_and_timing_cache():
    config = Config10()
    assert trt_compat.set_flag_if_present(TRT10, config, "VERSION_COMPATIBLE")
    assert not trt_compat.set_flag_if_present(TRT10, config, "NO_SUCH_FLAG")
    assert config.flags == ["VERSION_COMPATIBLE"]
    assert not trt_compat.set_hardware_compatibility(TRT10, config)  # no enum in the stand-in
    cache = trt_compat.attach_timing_cache(config, b"old")
    assert cache == ("cache", b"old") and config.cache == (("cache", b"old"), False)
    assert trt_compat.attach_timing_cache(object(), b"") is None


@pytest.mark.parametrize(
    "engine_cls,labels_dtype,indexed",
    [(BindingEngine, np.int32, True), (BothEngine, np.int64, True), (NamedEngine, np.int64, False)],
)
def test_io_tensors_and_profiles(engine_cls, labels_dtype, indexed):
    engine = engine_cls()
    image, labels = trt_compat.io_tensors(TRT86, engine)
    assert (image.name, image.is_input, image.shape) == ("image", True, (1, 3, -1, -1))
    assert image.dtype == np.float32 and labels.dtype == labels_dtype and not labels.is_input
    assert (image.index == 0) if indexed else (image.index is None)
    assert trt_compat.profile_shapes(engine, image) == tuple(PROFILE)


class Context82(object):
    def __init__(self):
        self.calls = []

    def set_binding_shape(self, index, shape):
        self.calls.append(("set_binding_shape", index, shape))
        return shape[2] <= 128

    def get_binding_shape(self, index):
        return (1, 64, 128)

    def execute_async_v2(self, bindings, stream):
        self.calls.append(("execute_async_v2", list(bindings), stream))
        return True


class Context10(object):
    def __init__(self):
        self.calls = []

    def set_input_shape(self, name, shape):
        self.calls.append(("set_input_shape", name, shape))
        return True

    def get_tensor_shape(self, name):
        return (1, 64, 128)

    def set_tensor_address(self, name, ptr):
        self.calls.append(("set_tensor_address", name, ptr))

    def execute_async_v3(self, stream):
        self.calls.append(("execute_async_v3", stream))
        return True


def test_execution_on_the_binding_api():
    tensors = trt_compat.io_tensors(TRT82, BindingEngine())
    context = Context82()
    trt_compat.set_input_shape(context, tensors[0], (1, 3, 64, 128))
    assert trt_compat.output_shape(context, tensors[1]) == (1, 64, 128)
    trt_compat.execute_async(context, tensors, {"labels": 200, "image": 100}, 7)
    assert context.calls == [
        ("set_binding_shape", 0, (1, 3, 64, 128)),
        ("execute_async_v2", [100, 200], 7),
    ]
    with pytest.raises(EngineError, match="outside the engine's optimization profile"):
        trt_compat.set_input_shape(context, tensors[0], (1, 3, 512, 128))


def test_execution_on_named_tensors():
    tensors = trt_compat.io_tensors(TRT10, NamedEngine())
    context = Context10()
    trt_compat.set_input_shape(context, tensors[0], (1, 3, 64, 128))
    trt_compat.execute_async(context, tensors, {"image": 100, "labels": 200}, 7)
    assert context.calls == [
        ("set_input_shape", "image", (1, 3, 64, 128)),
        ("set_tensor_address", "image", 100),
        ("set_tensor_address", "labels", 200),
        ("execute_async_v3", 7),
    ]


class ParserError82(object):
    def __init__(self, node, desc):
        self._node, self._desc = node, desc

    def node(self):
        return self._node

    def desc(self):
        return self._desc


class ParserError10(ParserError82):
    def node_name(self):
        return "/head/ArgMax"

    def node_operator(self):
        return "ArgMax"


class Parser(object):
    def __init__(self, errors):
        self.errors = errors
        self.num_errors = len(errors)

    def get_error(self, i):
        return self.errors[i]


def test_parser_errors_node_by_node():
    old = Parser([ParserError82(12, "Assertion failed: axis"), ParserError82(-1, "bad graph")])
    assert trt_compat.parser_errors(old) == ["node 12: Assertion failed: axis", "graph: bad graph"]
    new = Parser([ParserError10(40, "unsupported")])
    assert trt_compat.parser_errors(new) == ["node 40 (/head/ArgMax ArgMax): unsupported"]


class Tensor(object):
    def __init__(self, name, shape, dtype):
        self.name, self.shape, self.dtype = name, shape, dtype


class Layer(object):
    def __init__(self, dtype):
        self.num_outputs = 1
        self._out = Tensor("t", (1,), dtype)

    def get_output(self, j):
        return self._out


class Network(object):
    def __init__(self, dtypes):
        self.layers = [Layer(d) for d in dtypes]
        self.num_layers = len(self.layers)
        self.num_inputs = 1

    def get_layer(self, i):
        return self.layers[i]

    def get_input(self, i):
        return Tensor("image", (1, 3, -1, -1), DataType.FLOAT)


def test_network_inspection():
    assert trt_compat.network_has_half(TRT11, Network([DataType.FLOAT, DataType.HALF]))
    assert not trt_compat.network_has_half(TRT11, Network([DataType.FLOAT, DataType.INT64]))
    assert trt_compat.network_inputs(Network([])) == [("image", (1, 3, -1, -1))]


class FailingBuilder(object):
    def build_serialized_network(self, network, config):
        return None


def test_failed_build_is_an_engine_error():
    with pytest.raises(EngineError, match="could not build an engine"):
        trt_compat.build_plan(FailingBuilder(), None, None)
