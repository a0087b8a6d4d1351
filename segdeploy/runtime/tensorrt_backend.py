"""TensorRT backend: ``.plan`` / ``.engine`` files built by segexport (8.2 on a TX2 to 11.x).

Opening an engine runs a preflight before TensorRT sees the plan: the sidecar card must exist,
the plan must have the size recorded at build time (a truncated copy is caught here), and the
fingerprint must match this GPU, this TensorRT and the plugin libraries; any difference is one line
saying what differs and what to do. Then the plan is deserialized, and for each input and output
a page-locked host buffer and a device buffer are allocated once, sized for the profile's maximum.
``infer`` copies in, executes and copies out asynchronously on one CUDA stream, then synchronizes.
It may be called from any thread: the engine's device is made current in the calling thread
first (``cuda_memory.on_device``; CUDA contexts are per thread).

Options (keyword arguments of ``TensorRTEngine``): ``device`` (CUDA index, default 0), ``check``
(default True; False loads despite a fingerprint mismatch, for experts), ``plugins`` (the plugin
library paths to load: the sidecar only names the libraries a plan was built with, with their
SHA-256, and nothing is loaded from it), ``verbose``.

Output dtypes are the engine's (read from the engine, never assumed): labels are int32 from
TensorRT 8.x's TopK and int64 from 10.x; uint8 and float outputs pass through. Outputs live in
buffers owned by the engine and are overwritten by the next call; copy them to keep them. On a
Jetson without I/O coherency (TX2) pinned memory is uncached for the CPU, so there ``infer``
returns one copy in pageable memory instead (``copy_outputs``, from the device table).
Python 3.6 compatible.
"""

import os

import numpy as np

from .. import card as card_mod
from .._deps import require
from ..engines import cuda_memory, devices, fingerprint, trt_compat
from ..errors import EngineError, EngineMismatchError
from .backend import Engine, TensorSpec


def check_plan_file(path, sidecar):
    """EngineError unless ``sidecar`` describes a TensorRT plan of exactly this file's size.

    Needs no TensorRT, so a truncated copy is reported as such even where TensorRT is missing.
    """
    built = sidecar.get("engine") or {}
    if built.get("backend") != "tensorrt":
        raise EngineError(
            "{}'s card does not describe a TensorRT engine (backend {!r}); "
            "rebuild with segexport --backend tensorrt".format(path, built.get("backend"))
        )
    problem = fingerprint.check_plan_size(built, os.path.getsize(os.fspath(path)))
    if problem:
        raise EngineError("{} {}".format(path, problem))


def check_plugins(path, sidecar, plugins):
    """The {file name: sha256} of the plugin libraries the caller passed, hashed, not loaded.

    Plugin libraries run code when loaded (their constructors), so they are loaded only from
    paths the caller passes, never from the sidecar, which only *names* them with their hashes.
    EngineMismatchError (one line) when a library the plan was built with is not among them or
    differs; checked before TensorRT is imported, so it holds where TensorRT is missing too.
    """
    hashes = {}
    for plugin in plugins or ():
        plugin = fingerprint.plugin_file(plugin)
        hashes[os.path.basename(plugin)] = fingerprint.sha256_file(plugin)
    for named in (sidecar.get("engine") or {}).get("plugins") or []:
        name, want = named.get("file"), named.get("sha256")
        have = hashes.get(name)
        if have is None:
            raise EngineMismatchError(
                "{} was built with the plugin library {} (sha256 {}), which is not loaded: "
                "segdeploy loads plugins only from paths you pass (plugins=[...] / --plugin "
                "{}), never from the sidecar".format(path, name, str(want)[:16], name)
            )
        if have != want:
            raise EngineMismatchError(
                "the plugin library {} you passed differs from the one {} was built with "
                "(sha256 {} vs {}); pass the library it was built with, or rebuild the "
                "engine with this one".format(name, path, have[:16], str(want)[:16])
            )
    return hashes


def preflight(path, sidecar, here, plugin_hashes=None):
    """Raise EngineError / EngineMismatchError if the plan at ``path`` cannot run here.

    ``here`` is {'tensorrt': version, 'device': fingerprint.device_section(...)}.
    """
    check_plan_file(path, sidecar)
    verdict = fingerprint.compare(sidecar["engine"], here, plugin_hashes)
    if not verdict.ok:
        raise EngineMismatchError("{}: {}".format(path, verdict.message))
    return verdict


class _Binding(object):
    """One engine tensor with its host and device buffers."""

    def __init__(self, tensor, max_shape, device):
        self.tensor = tensor
        self.max_shape = tuple(max_shape)
        nbytes = int(np.prod(self.max_shape)) * tensor.dtype.itemsize
        self.host = cuda_memory.HostBuffer(nbytes, device)
        self.device = cuda_memory.DeviceBuffer(nbytes, device)
        self.range = None  # (min, max) shapes for a dynamic input

    def close(self):
        self.host.close()
        self.device.close()


class TensorRTEngine(Engine):
    backend = "tensorrt"

    def __init__(self, path, device=0, check=True, plugins=None, verbose=False):
        super(TensorRTEngine, self).__init__()
        self._bindings = []
        self._stream = None
        self._context = None
        self._engine = None
        self._device = device
        self.path = os.fspath(path)
        self.card = card_mod.read_sidecar(self.path)
        self.fingerprint = self.card.get("engine") or {}
        check_plan_file(self.path, self.card)
        plugins = list(plugins or ())  # never the sidecar's: it names libraries, it does not pick
        hashes = check_plugins(self.path, self.card, plugins) if check else {}
        trt = require("tensorrt", "running TensorRT engines")
        from ..engines import tensorrt_builder

        device_info, found = tensorrt_builder.current_device(device)
        # Jetson TX2: pinned memory is CPU-uncached; post-processing reads a cached copy.
        self.copy_outputs, self.copy_outputs_reason = devices.copy_outputs_from_pinned(found.record)
        here = {"tensorrt": trt.__version__, "device": device_info}
        if check:
            preflight(self.path, self.card, here, hashes)
        tensorrt_builder.load_plugins(plugins)  # only now, and only what the caller passed
        self.logger = tensorrt_builder.make_logger(trt, verbose)
        trt.init_libnvinfer_plugins(self.logger, "")
        with open(self.path, "rb") as f:
            plan = f.read()
        self._runtime = trt.Runtime(self.logger)
        if (self.fingerprint.get("build_flags") or {}).get("version_compatible"):
            # A version-compatible plan carries the lean runtime's host code; TensorRT runs it
            # only when allowed (8.6+). Such plans come from segbuild --version-compatible.
            trt_compat.allow_engine_host_code(self._runtime)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EngineError(
                "TensorRT {} cannot load {}: the file is not a TensorRT plan, is damaged, or was "
                "built by another TensorRT; rebuild it on this device with segexport".format(
                    trt.__version__, self.path
                )
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineError(
                "TensorRT could not create an execution context for {} (out of GPU memory?)".format(
                    self.path
                )
            )
        with cuda_memory.on_device(device):
            self._allocate(trt)

    def _allocate(self, trt):
        tensors = trt_compat.io_tensors(trt, self._engine)
        self._tensors = tensors
        self._stream = cuda_memory.Stream(self._device)
        inputs = [t for t in tensors if t.is_input]
        for tensor in inputs:
            binding = _Binding(tensor, self._max_input_shape(tensor), self._device)
            if any(d < 0 for d in tensor.shape):
                # The largest input fixes the largest outputs, which size their buffers.
                trt_compat.set_input_shape(self._context, tensor, binding.max_shape)
                lo, _, hi = trt_compat.profile_shapes(self._engine, tensor)
                binding.range = (tuple(lo), tuple(hi))
            self._bindings.append(binding)
        for tensor in tensors:
            if not tensor.is_input:
                shape = trt_compat.output_shape(self._context, tensor)
                if any(d < 0 for d in shape):
                    raise EngineError(
                        "output {!r} of {} has no fixed size even at the largest "
                        "input; segdeploy needs outputs sized by the input".format(
                            tensor.name, self.path
                        )
                    )
                self._bindings.append(_Binding(tensor, shape, self._device))
        self._inputs = [TensorSpec(t.name, list(t.shape), t.dtype) for t in inputs]
        self._outputs = [
            TensorSpec(t.name, list(t.shape), t.dtype) for t in tensors if not t.is_input
        ]

    def _max_input_shape(self, tensor):
        if all(d >= 0 for d in tensor.shape):
            return tensor.shape
        return trt_compat.profile_shapes(self._engine, tensor)[2]

    def _infer_impl(self, feeds):
        with cuda_memory.on_device(self._device):  # whichever thread calls: contexts are per thread
            return self._infer_on_device(feeds)

    def _infer_on_device(self, feeds):
        addresses = {}
        for binding in self._bindings:
            tensor = binding.tensor
            addresses[tensor.name] = binding.device.ptr
            if not tensor.is_input:
                continue
            array = feeds[tensor.name]
            if binding.range is not None:
                lo, hi = binding.range
                if any(n < a or n > b for n, a, b in zip(array.shape, lo, hi)):
                    raise EngineError(
                        "input {!r} has shape {}; this engine takes {} to {}: rebuild with a "
                        "--dynamic range that contains it".format(tensor.name, array.shape, lo, hi)
                    )
                trt_compat.set_input_shape(self._context, tensor, array.shape)
            host = binding.host.view(array.shape, tensor.dtype)
            np.copyto(host, array)
            cuda_memory.copy_to_device(binding.device, host, host.nbytes, self._stream)
        results = {}
        pending = []
        for binding in self._bindings:
            if binding.tensor.is_input:
                continue
            shape = trt_compat.output_shape(self._context, binding.tensor)
            results[binding.tensor.name] = binding.host.view(shape, binding.tensor.dtype)
            pending.append(binding)
        trt_compat.execute_async(self._context, self._tensors, addresses, self._stream.handle)
        for binding in pending:
            host = results[binding.tensor.name]
            cuda_memory.copy_to_host(host, binding.device, host.nbytes, self._stream)
        self._stream.synchronize()
        if self.copy_outputs:  # one sequential read of the uncached buffer, not one per pixel
            return dict((name, np.array(view)) for name, view in results.items())
        return results

    def _close_impl(self):
        if self._bindings or self._stream is not None:
            with cuda_memory.on_device(self._device):
                self._release()
        else:
            self._release()

    def _release(self):
        # The context must go before the engine, and both before the memory they point into.
        self._context = None
        self._engine = None
        for binding in self._bindings:
            binding.close()
        self._bindings = []
        if self._stream is not None:
            self._stream.close()
            self._stream = None
