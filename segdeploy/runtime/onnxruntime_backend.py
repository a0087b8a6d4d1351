"""ONNX Runtime backend: ``.onnx`` and ``.ort`` files on the CPU, CUDA or TensorRT providers.

Options worth knowing (all keyword arguments of ``OnnxRuntimeEngine``):

- ``device``: ``"cpu"``, ``"cuda"`` / ``"cuda:N"``, ``"tensorrt"``; ``None`` picks CUDA when the
  installed onnxruntime has it, else the CPU. TensorRT is never picked implicitly: its first run
  builds an engine, which takes minutes.
- ``threads``: intra-op threads (``None``: ONNX Runtime's default, one per physical core).
- ``graph_optimization``: ``"disable"``, ``"basic"``, ``"extended"``, ``"all"`` (default). On
  this 2-core host ``all`` was the fastest level for RegSeg at 512x1024 (see
  docs/benchmarks-runtime.md); the levels differ by what they fuse, never in results beyond
  float rounding.
- ``custom_ops``: opt-in custom op sets, e.g. ``["dblock"]`` to run the DBlockConv plugin nodes
  of a ``segexport --dblock-plugin`` graph through the kernel's host build
  (``segdeploy.runtime.dblock_op``; a functional check, not a speed proxy); ``["seghead"]`` for
  the SegHead node of a ``segbuild --seghead-plugin`` graph (``runtime/seghead_op.py``).
- ``io_binding`` (default True): inputs and outputs are bound once to the caller's input buffer
  and to output buffers this engine owns, so a run allocates nothing and, on CUDA, the input is
  copied into one device buffer kept for the engine's life.

Outputs returned by ``infer`` live in buffers owned by the engine and are overwritten by the next
call; copy them to keep them. ``infer`` is serialized by a lock (an IOBinding is not safe to share
between concurrent runs); for parallel runs open one engine per thread. Python 3.6 compatible.
"""

import threading

import numpy as np

from .. import card as card_mod
from .._deps import require
from ..errors import EngineError, SegDeployError
from .backend import Engine, TensorSpec

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")

_ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


def bind_dtype(dtype):
    """The element type to give ``IOBinding.bind_output`` for a numpy ``dtype``.

    onnxruntime <= 1.10 (the last release for Python 3.6) maps int64 only from numpy's
    ``longlong`` type number, not from ``int64``'s on Linux ("No corresponding Numpy type for
    Tensor Type"); ``longlong`` is the same 64-bit type and every later release accepts it.
    """
    dtype = np.dtype(dtype)
    if dtype == np.int64:
        return np.dtype(np.longlong)
    return dtype


def providers_for(device, available):
    """The provider list for ``device`` given the ``available`` provider names."""
    device = (device or "").lower()
    if not device:
        device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    kind, _, index = device.partition(":")
    device_id = int(index) if index.isdigit() else 0
    wanted = {
        "cpu": [],
        "cuda": [("CUDAExecutionProvider", {"device_id": device_id})],
        "tensorrt": [
            ("TensorrtExecutionProvider", {"device_id": device_id}),
            ("CUDAExecutionProvider", {"device_id": device_id}),
        ],
    }
    if kind not in wanted:
        raise EngineError(
            "device must be cpu, cuda[:N] or tensorrt for ONNX Runtime, got {!r}".format(device)
        )
    for name, _ in wanted[kind][:1]:
        if name not in available:
            raise EngineError(
                "the installed onnxruntime has no {} (it has {}); install "
                "onnxruntime-gpu for CUDA/TensorRT, or pass device='cpu'".format(
                    name, ", ".join(available)
                )
            )
    return wanted[kind] + ["CPUExecutionProvider"], ("cpu" if kind == "cpu" else "cuda"), device_id


def explicit_providers(providers, available):
    """``providers=[...]`` as ONNX Runtime takes them (names or (name, options) pairs), checked
    against the installed ones -> (providers, device kind, device id)."""
    names = []
    for entry in providers:
        name = entry[0] if isinstance(entry, (tuple, list)) else entry
        if not isinstance(name, str) or name not in available:
            raise EngineError(
                "provider {!r} is not in this onnxruntime; it has {}".format(
                    name, ", ".join(available)
                )
            )
        names.append(name)
    if not names:
        raise EngineError("providers is empty; name at least one, e.g. ['CPUExecutionProvider']")
    gpu = [n for n in names if n in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
    device_id = 0
    for entry in providers:
        if isinstance(entry, (tuple, list)) and len(entry) > 1 and isinstance(entry[1], dict):
            device_id = int(entry[1].get("device_id", device_id))
    return list(providers), ("cuda" if gpu else "cpu"), device_id


class OnnxRuntimeEngine(Engine):
    """An ONNX Runtime session behind the Engine interface (see the module docstring)."""

    backend = "onnxruntime"

    def __init__(
        self,
        path,
        device=None,
        threads=None,
        inter_op_threads=None,
        graph_optimization="all",
        io_binding=True,
        session_config=None,
        providers=None,
        custom_ops=None,
    ):
        super(OnnxRuntimeEngine, self).__init__()
        ort = require("onnxruntime", "the ONNX Runtime backend")
        self._ort = ort
        self.path = str(path)
        if graph_optimization not in OPTIMIZATION_LEVELS:
            raise EngineError(
                "graph_optimization must be one of {}, got {!r}".format(
                    ", ".join(OPTIMIZATION_LEVELS), graph_optimization
                )
            )
        if providers is not None:  # as in onnxruntime.InferenceSession(providers=[...])
            if device is not None:
                raise EngineError("give device or providers, not both")
            providers, self.device_kind, self.device_id = explicit_providers(
                providers, ort.get_available_providers()
            )
        else:
            providers, self.device_kind, self.device_id = providers_for(
                device, ort.get_available_providers()
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel,
            {
                "disable": "ORT_DISABLE_ALL",
                "basic": "ORT_ENABLE_BASIC",
                "extended": "ORT_ENABLE_EXTENDED",
                "all": "ORT_ENABLE_ALL",
            }[graph_optimization],
        )
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        if inter_op_threads is not None:
            options.inter_op_num_threads = int(inter_op_threads)
        for key, value in (session_config or {}).items():
            options.add_session_config_entry(key, str(value))
        source = self.path
        if custom_ops:
            from .dblock_op import prepare

            source = prepare(self.path, custom_ops, options)
        try:
            self._session = ort.InferenceSession(source, sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            from .dblock_op import hint

            text = str(exc).strip().splitlines()[0][:400]
            raise EngineError(
                (not custom_ops and hint(self.path, text))
                or "ONNX Runtime cannot open {}: {}".format(self.path, text)
            ) from None
        self.options = {
            "device": device,
            "threads": threads,
            "graph_optimization": graph_optimization,
            "io_binding": io_binding,
            "custom_ops": list(custom_ops or []),
            "providers": self._session.get_providers(),
        }
        self._inputs = [self._spec(t) for t in self._session.get_inputs()]
        self._outputs = [self._spec(t) for t in self._session.get_outputs()]
        self.card = self._read_card()
        self._lock = threading.Lock()
        self._use_binding = bool(io_binding)
        self._binding = self._session.io_binding() if io_binding else None
        self._bound = {}  # input name -> (ptr, shape) currently bound
        self._device_inputs = {}  # input name -> OrtValue on the device (CUDA)
        self._out_buffers = {}  # input shapes -> {output name: numpy buffer}

    @staticmethod
    def _spec(node):
        dtype = _ONNX_TYPES.get(node.type)
        if dtype is None:
            raise EngineError(
                "tensor {!r} has type {}, which segdeploy does not handle".format(
                    node.name, node.type
                )
            )
        shape = tuple(d if isinstance(d, int) else (d or -1) for d in node.shape)
        return TensorSpec(node.name, shape, np.dtype(dtype))

    def _read_card(self):
        meta = self._session.get_modelmeta().custom_metadata_map
        if card_mod.METADATA_KEY in meta:
            return card_mod.from_json(meta[card_mod.METADATA_KEY], self.path + " metadata")
        try:
            return card_mod.read_sidecar(self.path)
        except SegDeployError:
            return None  # a bare ONNX file: usable through infer(feeds), not through Runtime

    def _output_shapes(self, feeds):
        # Static outputs, or a batch axis that follows the input's: known before the run.
        batch = next(iter(feeds.values())).shape[0] if feeds else 1
        shapes = {}
        for spec in self._outputs:
            dims = list(spec.shape)
            if dims and not (isinstance(dims[0], int) and dims[0] >= 0):
                dims[0] = batch
            if not all(isinstance(d, int) and d >= 0 for d in dims):
                return None
            shapes[spec.name] = tuple(dims)
        return shapes

    def _infer_impl(self, feeds):
        with self._lock:
            if not self._use_binding:
                names = [o.name for o in self._outputs]
                return dict(zip(names, self._session.run(names, feeds)))
            return self._run_bound(feeds)

    def _run_bound(self, feeds):
        binding = self._binding
        for name, array in feeds.items():
            array = np.ascontiguousarray(array)
            if self.device_kind == "cuda":
                # One device buffer per input for the engine's life; update_inplace copies into it.
                value = self._device_inputs.get(name)
                if value is None or tuple(value.shape()) != array.shape:
                    value = self._ort.OrtValue.ortvalue_from_numpy(array, "cuda", self.device_id)
                    self._device_inputs[name] = value
                    binding.bind_ortvalue_input(name, value)
                else:
                    value.update_inplace(array)
            else:
                key = (array.ctypes.data, array.shape)
                if self._bound.get(name) != key:  # the CPU binding wraps the array, no copy
                    binding.bind_cpu_input(name, array)
                    self._bound[name] = key
        shapes_key = tuple(sorted((k, v.shape) for k, v in feeds.items()))
        buffers = self._out_buffers.get(shapes_key)
        if buffers is None:
            shapes = self._output_shapes(feeds)
            if shapes is None:  # dynamic output shape: let ORT allocate, copy out
                for spec in self._outputs:
                    binding.bind_output(spec.name, "cpu")
                self._session.run_with_iobinding(binding)
                arrays = binding.copy_outputs_to_cpu()
                return dict(zip([o.name for o in self._outputs], arrays))
            buffers = {spec.name: np.empty(shapes[spec.name], spec.dtype) for spec in self._outputs}
            self._out_buffers = {shapes_key: buffers}  # keep one shape set: bounded memory
            for spec in self._outputs:
                buf = buffers[spec.name]
                binding.bind_output(
                    spec.name, "cpu", 0, bind_dtype(spec.dtype), list(buf.shape), buf.ctypes.data
                )
        self._session.run_with_iobinding(binding)
        return dict(buffers)

    def versions(self):
        return {"onnxruntime": self._ort.__version__}

    def synchronize(self):
        """Runs are synchronous from Python's side (outputs land in host buffers)."""

    def _close_impl(self):
        self._binding = None
        self._device_inputs = {}
        self._out_buffers = {}
        self._session = None
