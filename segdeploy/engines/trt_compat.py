"""The one place that knows how TensorRT's Python API differs between 8.2 and 11.x.

Every difference is bridged by *feature detection* on the objects at hand, never by comparing
version strings, so an unexpected point release still takes the right path:

    generation        what identifies it                        (TensorRT docs)
    bindings  8.2-8.4 engine.get_binding_shape, no num_io_tensors   8.x API
    named     8.5-9.x engine.num_io_tensors + binding API still     8.5 release notes
    named-only   10.x binding API gone, BuilderFlag.FP16 present    8.x -> 10.x migration guide
    strongly-typed 11.x BuilderFlag.FP16 gone: precision comes from  10.x -> 11.x migration guide
                      the ONNX types (FP16 = an FP16-typed ONNX)

The functions take the ``tensorrt`` module or TensorRT objects as arguments and import nothing,
so they are tested on CPU against small stand-in objects with each generation's attribute set.
Python 3.6 compatible.
"""

from collections import namedtuple

import numpy as np

from ..errors import EngineError

IOTensor = namedtuple("IOTensor", ["name", "index", "is_input", "shape", "dtype"])
IOTensor.__doc__ = """An engine input or output: name, binding index (None where bindings are
gone), direction, engine shape (-1 on dynamic axes) and numpy dtype."""

# TensorRT DataType member name -> numpy dtype. Looked up by *name* because the enum's members
# differ by release (INT64 arrived with 10.0, BF16/FP8 later) and trt.nptype raises on some.
_NUMPY_BY_TRT_NAME = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


def api_generation(trt):
    """'bindings', 'named', 'named-only' or 'strongly-typed' for the ``tensorrt`` module given."""
    engine_cls = trt.ICudaEngine
    if not hasattr(trt.BuilderFlag, "FP16"):
        return "strongly-typed"
    if not hasattr(engine_cls, "num_io_tensors"):
        return "bindings"
    if hasattr(engine_cls, "get_binding_shape"):
        return "named"
    return "named-only"


def numpy_dtype(trt_dtype):
    """numpy dtype for a TensorRT DataType member; EngineError for types we cannot move."""
    name = getattr(trt_dtype, "name", str(trt_dtype).split(".")[-1])
    try:
        return np.dtype(_NUMPY_BY_TRT_NAME[name])
    except KeyError:
        raise EngineError(
            "engine tensor type {} has no numpy equivalent; export the model with "
            "float32 input and int32/int64/uint8/float output".format(name)
        ) from None


# --- builder side -------------------------------------------------------------------------------


def network_flags(trt, builder, strongly_typed=False):
    """Flags for ``builder.create_network``.

    8.x needs EXPLICIT_BATCH for ONNX (implicit batch still existed, detectable by
    ``builder.max_batch_size``, removed in 10.0); 10.x ignores it. STRONGLY_TYPED exists from 9.x
    and is the only mode in 11.x, where asking for it is harmless.
    """
    flags = 0
    members = getattr(trt.NetworkDefinitionCreationFlag, "__members__", {})
    if hasattr(builder, "max_batch_size") and "EXPLICIT_BATCH" in members:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strongly_typed and "STRONGLY_TYPED" in members:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def has_fp16_flag(trt):
    """True where FP16 is a builder flag (8.x-10.x); 11.x takes FP16 from the ONNX types."""
    return hasattr(trt.BuilderFlag, "FP16")


def platform_fast_fp16(builder):
    """builder.platform_has_fast_fp16 where it exists (removed in 11.x), else None."""
    return getattr(builder, "platform_has_fast_fp16", None)


def set_workspace(trt, config, nbytes):
    """Cap the builder's scratch memory: memory pools (8.4+) or max_workspace_size (8.2)."""
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(nbytes))
        return "memory_pool_limit"
    config.max_workspace_size = int(nbytes)
    return "max_workspace_size"


def set_optimization_level(config, level):
    """builder_optimization_level (8.6+); False where this TensorRT has none."""
    if not hasattr(config, "builder_optimization_level"):
        return False
    config.builder_optimization_level = int(level)
    return True


def set_flag_if_present(trt, config, flag_name):
    """config.set_flag(BuilderFlag.<flag_name>) when the flag exists; True if it was set."""
    flag = getattr(trt.BuilderFlag, flag_name, None)
    if flag is None:
        return False
    config.set_flag(flag)
    return True


def clear_flag_if_present(trt, config, flag_name):
    """config.clear_flag(BuilderFlag.<flag_name>) when the flag exists; True if it was cleared."""
    flag = getattr(trt.BuilderFlag, flag_name, None)
    if flag is None:
        return False
    config.clear_flag(flag)
    return True


def set_hardware_compatibility(trt, config):
    """Ampere+ hardware compatibility (8.6+); False where this TensorRT has none."""
    level = getattr(trt, "HardwareCompatibilityLevel", None)
    if level is None or not hasattr(config, "hardware_compatibility_level"):
        return False
    config.hardware_compatibility_level = level.AMPERE_PLUS
    return True


def attach_timing_cache(config, blob):
    """Attach a timing cache made from ``blob`` (b'' for a fresh one): (cache or None, warning).

    ``ignore_mismatch=False``: a cache from another GPU or TensorRT is rejected, not misused.
    ``set_timing_cache`` says so by returning False (and ``create_timing_cache`` may return None
    or raise on a damaged file): then the build goes on with a fresh cache and the one-line
    warning says why. (None, None) where this TensorRT has no timing cache API.
    """
    if not hasattr(config, "create_timing_cache"):
        return None, None
    warning = None
    if blob:
        try:
            cache = config.create_timing_cache(blob)
        except Exception:  # pybind11 raises TypeError/RuntimeError for a damaged buffer
            cache = None
        if cache is not None and config.set_timing_cache(cache, False) is not False:
            return cache, None
        warning = (
            "it was made on another GPU or TensorRT, or is damaged; building without it and "
            "writing a fresh one"
        )
    cache = config.create_timing_cache(b"")
    if cache is None or config.set_timing_cache(cache, False) is False:
        return None, "TensorRT could not create a timing cache; building without one"
    return cache, warning


def serialized_timing_cache(config):
    """The builder's timing cache as bytes after a build, or None when TensorRT returns none."""
    cache = config.get_timing_cache() if hasattr(config, "get_timing_cache") else None
    if cache is None:
        return None
    data = cache.serialize()
    if data is None:
        return None
    data = bytes(data)
    return data or None


def allow_engine_host_code(runtime):
    """Let ``runtime`` load version-compatible plans, which embed the lean runtime's host code
    (``IRuntime.engine_host_code_allowed``, 8.6+). False where the property does not exist."""
    if not hasattr(runtime, "engine_host_code_allowed"):
        return False
    runtime.engine_host_code_allowed = True
    return True


def network_has_half(trt, network):
    """True if any layer of the parsed network produces FP16: the ONNX was FP16-typed."""
    half = trt.DataType.HALF
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype == half:
                return True
    return False


def network_inputs(network):
    """[(name, shape tuple)] of the parsed network's inputs."""
    out = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        out.append((tensor.name, tuple(tensor.shape)))
    return out


def parser_errors(parser):
    """One line per ONNX parser error: node index, name and operator (10.x+), description."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = err.node()
        where = "node {}".format(node) if node >= 0 else "graph"
        # node_name / node_operator arrived with TensorRT 10.0's parser.
        name, op = _member(err, "node_name"), _member(err, "node_operator")
        if name or op:
            where += " ({}{})".format(name, " " + op if op and name else op)
        lines.append("{}: {}".format(where, err.desc()))
    return lines


def _member(obj, name):
    """A bound method's result or a property's value; '' when the member is absent."""
    value = getattr(obj, name, "")
    return (value() if callable(value) else value) or ""


def build_plan(builder, network, config):
    """Serialized plan bytes; EngineError when the builder returns nothing."""
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(
            "TensorRT could not build an engine (its log above says why); common "
            "causes: a layer unsupported on this GPU or too small a workspace "
            "(raise --workspace)"
        )
    return bytes(serialized)


# --- runtime side -------------------------------------------------------------------------------


def has_named_tensors(engine):
    return hasattr(engine, "num_io_tensors")


def io_tensors(trt, engine):
    """The engine's inputs and outputs as IOTensor, in engine order."""
    tensors = []
    if has_named_tensors(engine):
        binding_api = hasattr(engine, "get_binding_index")
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            index = engine.get_binding_index(name) if binding_api else None
            tensors.append(
                IOTensor(
                    name,
                    index,
                    is_input,
                    tuple(engine.get_tensor_shape(name)),
                    numpy_dtype(engine.get_tensor_dtype(name)),
                )
            )
        return tensors
    for index in range(engine.num_bindings):
        tensors.append(
            IOTensor(
                engine.get_binding_name(index),
                index,
                bool(engine.binding_is_input(index)),
                tuple(engine.get_binding_shape(index)),
                numpy_dtype(engine.get_binding_dtype(index)),
            )
        )
    return tensors


def profile_shapes(engine, tensor, profile=0):
    """(min, opt, max) input shapes of optimization ``profile`` for ``tensor`` (an IOTensor)."""
    if hasattr(engine, "get_tensor_profile_shape"):
        shapes = engine.get_tensor_profile_shape(tensor.name, profile)
    else:
        shapes = engine.get_profile_shape(profile, tensor.index)
    return tuple(tuple(s) for s in shapes)


def set_input_shape(context, tensor, shape):
    """Fix a dynamic input's shape before execution; EngineError outside the profile."""
    if hasattr(context, "set_input_shape"):
        ok = context.set_input_shape(tensor.name, tuple(shape))
    else:
        ok = context.set_binding_shape(tensor.index, tuple(shape))
    if ok is False:
        raise EngineError(
            "input {!r} shape {} is outside the engine's optimization profile; "
            "rebuild with a --dynamic range that contains it".format(tensor.name, tuple(shape))
        )


def output_shape(context, tensor):
    """An output's concrete shape once the input shapes are set."""
    if hasattr(context, "get_tensor_shape"):
        return tuple(context.get_tensor_shape(tensor.name))
    return tuple(context.get_binding_shape(tensor.index))


def execute_async(context, tensors, addresses, stream_handle):
    """Enqueue one inference. ``addresses`` maps tensor name -> device pointer (int).

    Named tensors + execute_async_v3 where the context has them (8.5+); otherwise the 8.2
    bindings list ordered by binding index and execute_async_v2.
    """
    if hasattr(context, "execute_async_v3"):
        for tensor in tensors:
            context.set_tensor_address(tensor.name, int(addresses[tensor.name]))
        ok = context.execute_async_v3(stream_handle)
    else:
        bindings = [0] * len(tensors)
        for tensor in tensors:
            bindings[tensor.index] = int(addresses[tensor.name])
        ok = context.execute_async_v2(bindings, stream_handle)
    if ok is False:
        raise EngineError("TensorRT failed to enqueue the inference (its log says why)")
