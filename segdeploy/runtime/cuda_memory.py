"""CUDA memory and streams through one thin wrapper over pycuda or cuda-python.

Jetson TX2 (JetPack 4.6, CUDA 10.2, Python 3.6) has no cuda-python wheels, so it uses pycuda;
current x86 installs get cuda-python from the ``[tensorrt]`` / ``[gpu]`` extras. Which one is
chosen when this module is imported (cheaply: ``find_spec``, nothing is loaded); the binding
itself is imported on first use. ``SEGDEPLOY_CUDA=pycuda|cuda-python`` overrides the choice.

    stream = cuda_memory.Stream()
    host = cuda_memory.HostBuffer(nbytes)        # page-locked; host.view(shape, dtype)
    dev = cuda_memory.DeviceBuffer(nbytes)       # dev.ptr is what TensorRT wants
    cuda_memory.copy_to_device(dev, host, nbytes, stream); ...; stream.synchronize()

Python 3.6 compatible.
"""

import ctypes
import importlib
import importlib.util
import os

import numpy as np

from .._deps import require
from ..errors import EngineError, MissingDependencyError

PYCUDA = "pycuda"
CUDA_PYTHON = "cuda-python"

INSTALL_HINT = (
    "install cuda-python (pip install 'segdeploy[tensorrt]'), or on Jetson pycuda "
    "(pip3 install pycuda)"
)


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # parent package missing or broken
        return False


def choose_binding(available, override=None):
    """The binding to use given the set of ``available`` ones; None if there is none.

    cuda-python first (maintained by NVIDIA, what TensorRT 10+ samples use); pycuda where it is
    the only one, which is the Jetson case.
    """
    if override:
        if override not in (PYCUDA, CUDA_PYTHON):
            raise EngineError(
                "SEGDEPLOY_CUDA must be {} or {}, got {!r}".format(PYCUDA, CUDA_PYTHON, override)
            )
        return override if override in available else None
    for name in (CUDA_PYTHON, PYCUDA):
        if name in available:
            return name
    return None


def _available():
    found = set()
    if _installed("cuda.bindings") or _installed("cuda.cudart"):
        found.add(CUDA_PYTHON)
    if _installed("pycuda"):
        found.add(PYCUDA)
    return found


BINDING = choose_binding(_available(), os.environ.get("SEGDEPLOY_CUDA") or None)

_API = []  # the one binding adapter, created on first use


def api():
    """The adapter for the chosen binding; MissingDependencyError when neither is installed."""
    if not _API:
        if BINDING is None:
            raise MissingDependencyError("no CUDA Python binding is installed; " + INSTALL_HINT)
        _API.append(_PyCuda() if BINDING == PYCUDA else _CudaPython())
    return _API[0]


class _CudaPython(object):
    """cuda-python's runtime API: every call returns (error, results...)."""

    def __init__(self):
        try:  # cuda-python 12.6+ / 13 spelling; 12.x before that had cuda.cudart
            self.rt = importlib.import_module("cuda.bindings.runtime")
        except ImportError:
            self.rt = require("cuda.cudart", "CUDA memory")

    def _check(self, result, what):
        err = result[0] if isinstance(result, tuple) else result
        if err != self.rt.cudaError_t.cudaSuccess:
            name = getattr(err, "name", str(err))
            raise EngineError("CUDA {} failed: {}".format(what, name))
        values = result[1:] if isinstance(result, tuple) else ()
        return values[0] if len(values) == 1 else values

    def device_count(self):
        try:
            return self._check(self.rt.cudaGetDeviceCount(), "device count")
        except EngineError:  # no driver / no device reads as an error here
            return 0

    def properties(self, index):
        prop = self._check(self.rt.cudaGetDeviceProperties(index), "device query")
        name = prop.name
        if isinstance(name, bytes):
            name = name.split(b"\0", 1)[0].decode("utf-8", "replace")
        return {
            "name": name,
            "compute_capability": (prop.major, prop.minor),
            "total_memory": int(prop.totalGlobalMem),
        }

    def set_device(self, index):
        self._check(self.rt.cudaSetDevice(index), "set device")

    def malloc(self, nbytes):
        return int(self._check(self.rt.cudaMalloc(nbytes), "malloc"))

    def free(self, ptr):
        self._check(self.rt.cudaFree(ptr), "free")

    def malloc_host(self, nbytes):
        ptr = int(self._check(self.rt.cudaMallocHost(nbytes), "page-locked malloc"))
        raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
        return ptr, np.frombuffer(raw, dtype=np.uint8)

    def free_host(self, handle):
        self._check(self.rt.cudaFreeHost(handle), "page-locked free")

    def stream_create(self):
        stream = self._check(self.rt.cudaStreamCreate(), "stream create")
        return stream, int(stream)

    def stream_destroy(self, stream):
        self._check(self.rt.cudaStreamDestroy(stream), "stream destroy")

    def stream_synchronize(self, stream):
        self._check(self.rt.cudaStreamSynchronize(stream), "stream synchronize")

    def htod_async(self, dst_ptr, host_array, nbytes, stream):
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self.rt.cudaMemcpyAsync(dst_ptr, host_array.ctypes.data, nbytes, kind, stream),
            "copy to device",
        )

    def dtoh_async(self, host_array, src_ptr, nbytes, stream):
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            self.rt.cudaMemcpyAsync(host_array.ctypes.data, src_ptr, nbytes, kind, stream),
            "copy to host",
        )


class _PyCuda(object):
    """pycuda's driver API, on the device's primary context (the one TensorRT's runtime uses)."""

    def __init__(self):
        self.cuda = require("pycuda.driver", "CUDA memory")
        try:
            self.cuda.init()
        except Exception as exc:  # pycuda raises its own RuntimeError/LogicError types
            raise EngineError(
                "CUDA is not usable here ({}); check the NVIDIA driver".format(exc)
            ) from None
        self._context = None

    def device_count(self):
        return self.cuda.Device.count()

    def properties(self, index):
        dev = self.cuda.Device(index)
        return {
            "name": dev.name(),
            "compute_capability": tuple(dev.compute_capability()),
            "total_memory": int(dev.total_memory()),
        }

    def set_device(self, index):
        if self._context is None:
            self._context = self.cuda.Device(index).retain_primary_context()
            self._context.push()

    def malloc(self, nbytes):
        allocation = self.cuda.mem_alloc(nbytes)
        return int(allocation), allocation

    def free(self, handle):
        handle[1].free()

    def malloc_host(self, nbytes):
        array = self.cuda.pagelocked_empty(nbytes, np.uint8)
        return array, array

    def free_host(self, handle):
        allocation = getattr(handle, "base", None)  # pycuda's HostAllocation behind the array
        if allocation is not None and hasattr(allocation, "free"):
            allocation.free()

    def stream_create(self):
        stream = self.cuda.Stream()
        return stream, int(stream.handle)

    def stream_destroy(self, stream):
        pass  # pycuda releases the stream with the object

    def stream_synchronize(self, stream):
        stream.synchronize()

    def htod_async(self, dst_ptr, host_array, nbytes, stream):
        self.cuda.memcpy_htod_async(dst_ptr, host_array[:nbytes], stream)

    def dtoh_async(self, host_array, src_ptr, nbytes, stream):
        self.cuda.memcpy_dtoh_async(host_array[:nbytes], src_ptr, stream)


def device_count():
    """Number of CUDA devices; 0 when there is a binding but no usable device."""
    try:
        return api().device_count()
    except EngineError:
        return 0


def device_properties(index=0):
    """{'name', 'compute_capability': (major, minor), 'total_memory'} of device ``index``."""
    if device_count() <= index:
        raise EngineError(
            "no CUDA device {} on this machine; TensorRT engines need an NVIDIA GPU "
            "(use the onnxruntime backend on this host)".format(index)
        )
    return api().properties(index)


def use_device(index=0):
    """Make ``index`` current for this thread (before any allocation or TensorRT call)."""
    device_properties(index)
    api().set_device(index)


class Stream(object):
    def __init__(self):
        self._stream, self.handle = api().stream_create()

    def synchronize(self):
        api().stream_synchronize(self._stream)

    def close(self):
        if self._stream is not None:
            api().stream_destroy(self._stream)
            self._stream = None


class HostBuffer(object):
    """``nbytes`` of page-locked host memory, viewed as numpy arrays of any dtype/shape."""

    def __init__(self, nbytes):
        self.nbytes = int(nbytes)
        self._handle, self._bytes = api().malloc_host(max(self.nbytes, 1))

    def view(self, shape, dtype):
        dtype = np.dtype(dtype)
        count = int(np.prod(shape)) if len(shape) else 1
        return self._bytes[: count * dtype.itemsize].view(dtype).reshape(shape)

    def close(self):
        if self._handle is not None:
            self._bytes = None
            api().free_host(self._handle)
            self._handle = None


class DeviceBuffer(object):
    def __init__(self, nbytes):
        self.nbytes = int(nbytes)
        self._handle = api().malloc(max(self.nbytes, 1))
        self.ptr = self._handle[0] if isinstance(self._handle, tuple) else self._handle

    def close(self):
        if self._handle is not None:
            api().free(self._handle)
            self._handle = None


def copy_to_device(device_buffer, host_array, nbytes, stream):
    api().htod_async(device_buffer.ptr, _flat_bytes(host_array), nbytes, stream._stream)


def copy_to_host(host_array, device_buffer, nbytes, stream):
    api().dtoh_async(_flat_bytes(host_array), device_buffer.ptr, nbytes, stream._stream)


def _flat_bytes(array):
    # Both bindings copy from/to a contiguous byte range; a view keeps the page-locked memory.
    return array.reshape(-1).view(np.uint8)
