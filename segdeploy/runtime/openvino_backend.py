"""OpenVINO backend: ``.onnx`` graphs (FP32 or the INT8 Q/DQ graph) and OpenVINO IR ``.xml/.bin``.

Options (keyword arguments of ``OpenVinoEngine``):

- ``device``: OpenVINO device name, ``"CPU"`` by default (``"cpu"`` is accepted).
- ``precision``: ``"f32"`` / ``"fp32"``, ``"bf16"`` (only where the CPU has native bf16:
  AVX512_BF16 or AMX; refused elsewhere, since emulated bf16 is slower than f32), or ``None``:
  what the file's card asks for (an IR built as bf16 keeps bf16), else f32. OpenVINO's CPU plugin
  otherwise picks bf16 by itself on such CPUs; segdeploy always sets the precision explicitly, so
  an "f32" engine computes in f32. The INT8 Q/DQ graph runs its quantized layers in INT8 whatever
  this says (OpenVINO folds the Q/DQ pairs into INT8 kernels); the rest follows ``precision``.
- ``threads``: inference threads (``None``: OpenVINO's default, one per physical core).
- ``hint``: ``"latency"`` (default: one stream, all threads on one request) or ``"throughput"``.

The model card comes from the ONNX metadata (OpenVINO exposes it as rt_info), from the IR's
rt_info (``segdeploy_card``, written by ``engines.openvino_builder``), or from the sidecar.
Python 3.6 compatible; openvino is imported when an engine opens.
"""

import threading

import numpy as np

from .. import card as card_mod
from .._deps import require
from ..engines.openvino_builder import CARD_RT_KEY, PRECISIONS, cpu_has_bf16, inference_precision  # noqa: F401
from ..errors import EngineError, SegDeployError
from .backend import Engine, TensorSpec

HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}


def _numpy_type(element_type):
    name = (
        element_type.get_type_name()
        if hasattr(element_type, "get_type_name")
        else str(element_type)
    )
    table = {
        "f32": np.float32,
        "f16": np.float16,
        "i64": np.int64,
        "i32": np.int32,
        "u8": np.uint8,
        "i8": np.int8,
        "boolean": np.bool_,
    }
    if name not in table:
        raise EngineError("tensor type {} is not handled by segdeploy".format(name))
    return np.dtype(table[name])


def read_card(model, path):
    """The model card of an OpenVINO model read from ``path``, or None."""
    for keys in ([CARD_RT_KEY], ["framework", card_mod.METADATA_KEY]):
        try:
            if model.has_rt_info(keys):
                return card_mod.from_json(
                    model.get_rt_info(keys).astype(str), "{} card".format(path)
                )
        except (AttributeError, RuntimeError):
            continue
    try:
        return card_mod.read_sidecar(path)
    except SegDeployError:
        return None


class OpenVinoEngine(Engine):
    """An OpenVINO compiled model behind the Engine interface (see the module docstring)."""

    backend = "openvino"

    def __init__(self, path, device=None, precision=None, threads=None, hint="latency"):
        super(OpenVinoEngine, self).__init__()
        ov = require("openvino", "the OpenVINO backend")
        self._ov = ov
        self.path = str(path)
        device = (device or "CPU").upper()
        if hint not in HINTS:
            raise EngineError(
                "hint must be latency or throughput for OpenVINO, got {!r}".format(hint)
            )
        core = ov.Core()
        try:
            model = core.read_model(self.path)
        except Exception as exc:
            raise EngineError(
                "OpenVINO cannot read {}: {}".format(
                    self.path, str(exc).strip().splitlines()[0][:400]
                )
            ) from None
        self.card = read_card(model, self.path)
        if precision is None:
            engine = (self.card or {}).get("engine") or {}
            precision = (
                engine.get("inference_precision") if engine.get("backend") == "openvino" else None
            )
            precision = precision or "f32"
        if precision not in PRECISIONS:
            raise EngineError(
                "precision must be f32 or bf16 for OpenVINO, got {!r} (INT8 comes from the "
                "file: open the .int8.onnx graph)".format(precision)
            )
        precision = PRECISIONS[precision]
        if precision == "bf16" and device == "CPU" and not cpu_has_bf16(core):
            raise EngineError(
                "this CPU has no native bf16 (AVX512_BF16 or AMX); OpenVINO would emulate it, "
                "slower than f32: use precision='f32'"
            )
        config = {"PERFORMANCE_HINT": HINTS[hint], "INFERENCE_PRECISION_HINT": precision}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self._compiled = core.compile_model(model, device, config)
        except Exception as exc:
            raise EngineError(
                "OpenVINO cannot compile {} for {}: {}".format(
                    self.path, device, str(exc).strip().splitlines()[0][:400]
                )
            ) from None
        self._request = self._compiled.create_infer_request()
        self.precision = precision
        self.device_kind = "cpu" if device == "CPU" else device.lower()
        self.options = {"device": device, "precision": precision, "threads": threads, "hint": hint}
        self._inputs = [self._spec(p) for p in self._compiled.inputs]
        self._outputs = [self._spec(p) for p in self._compiled.outputs]
        self._lock = threading.Lock()

    @staticmethod
    def _spec(port):
        shape = port.get_partial_shape()
        dims = tuple(d.get_length() if d.is_static else -1 for d in shape)
        return TensorSpec(port.get_any_name(), dims, _numpy_type(port.get_element_type()))

    def _infer_impl(self, feeds):
        with self._lock:
            for i, spec in enumerate(self._inputs):
                # share_inputs: the request reads the caller's buffer, no copy
                self._request.set_input_tensor(
                    i, self._ov.Tensor(np.ascontiguousarray(feeds[spec.name]), shared_memory=True)
                )
            self._request.infer()
            return {
                spec.name: self._request.get_output_tensor(i).data
                for i, spec in enumerate(self._outputs)
            }

    def versions(self):
        return {"openvino": self._ov.__version__}

    def synchronize(self):
        """Runs are synchronous."""

    def _close_impl(self):
        self._request = None
        self._compiled = None
