"""CUDA memory and streams through one thin wrapper over pycuda or cuda-python.

Jetson TX2 (JetPack 4.6, CUDA 10.2, Python 3.6) has no cuda-python wheels, so it uses pycuda;
current x86 installs get cuda-python from the ``[tensorrt]`` / ``[gpu]`` extras. Which one is
chosen when this module is imported (cheaply: ``find_spec``, nothing is loaded); the binding
itself is imported on first use. ``SEGDEPLOY_CUDA=pycuda|cuda-python`` overrides the choice.

    stream = cuda_memory.Stream()
    host = cuda_memory.HostBuffer(nbytes)        # page-locked; host.view(shape, dtype)
    dev = cuda_memory.DeviceBuffer(nbytes)       # dev.ptr is what TensorRT wants
    cuda_memory.copy_to_device(dev, host, nbytes, stream); ...; stream.synchronize()

CUDA contexts are per thread: a context made current in one thread is not current in another (a
web server's worker, a user's thread pool). Every entry point here (allocating, copying,
synchronizing, and ``TensorRTEngine.infer`` through ``on_device``) makes its object's device
current in the calling thread first: pycuda pushes the device's retained primary context around
the call (and pops it after) unless it is current already; cuda-python calls ``cudaSetDevice``
once per thread and device (the runtime API keeps the choice per thread). Which device each thread
has is kept in thread-local bookkeeping (``on_device``), so a call on the thread that is already
on the device costs one attribute lookup.

Python 3.6 compatible.
"""

import atexit
import contextlib
import ctypes
import importlib
import importlib.util
import os
import threading

import numpy as np

from .._deps import require
from ..errors import EngineError, MissingDependencyError, SegDeployError

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
    """The adapter for the chosen binding; MissingDependencyError when neither is installed,
    EngineError when the binding cannot talk to a driver."""
    if not _API:
        if BINDING is None:
            raise MissingDependencyError("no CUDA Python binding is installed; " + INSTALL_HINT)
        try:
            adapter = _PyCuda() if BINDING == PYCUDA else _CudaPython()
        except (RuntimeError, OSError) as exc:
            # cuda-python 12.0-12.2 raises RuntimeError when it cannot load libcuda (no driver).
            raise EngineError(
                "CUDA is not usable here ({}: {}); {}".format(
                    BINDING, _first_line(exc), DRIVER_HINT
                )
            ) from None
        _API.append(adapter)
    return _API[0]


DRIVER_HINT = "check the NVIDIA driver with nvidia-smi (x86) or tegrastats (Jetson)"

# cudaError_t values (CUDA runtime API, driver_types.h; identical in CUDA 10.2 to 13).
_CUDA_ERROR_INSUFFICIENT_DRIVER = 35
_CUDA_ERROR_NO_DEVICE = 100


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _cuda_version_text(value):
    """12020 -> '12.2'."""
    return "{}.{}".format(int(value) // 1000, (int(value) % 1000) // 10) if value else "?"


class _CudaPython(object):
    """cuda-python's runtime API: every call returns (error, results...)."""

    def __init__(self):
        try:  # cuda-python 12.6+ / 13 spelling; 12.x before that had cuda.cudart
            self.rt = importlib.import_module("cuda.bindings.runtime")
        except ImportError:
            self.rt = require("cuda.cudart", "CUDA memory")
        self._local = threading.local()

    def _check(self, result, what):
        err = result[0] if isinstance(result, tuple) else result
        if err != self.rt.cudaError_t.cudaSuccess:
            name = getattr(err, "name", str(err))
            raise EngineError("CUDA {} failed: {}".format(what, name))
        values = result[1:] if isinstance(result, tuple) else ()
        return values[0] if len(values) == 1 else values

    def device_count(self):
        """0 where there is no GPU; EngineError where the driver is missing or too old."""
        try:
            result = self.rt.cudaGetDeviceCount()
        except RuntimeError as exc:  # cuda-python 12.0-12.2 without libcuda
            raise EngineError(
                "CUDA is not usable here ({}); {}".format(_first_line(exc), DRIVER_HINT)
            ) from None
        err = result[0] if isinstance(result, tuple) else result
        code = int(getattr(err, "value", err))
        if code == 0:
            return int(result[1])
        if code == _CUDA_ERROR_NO_DEVICE:
            return 0
        if code == _CUDA_ERROR_INSUFFICIENT_DRIVER:
            raise EngineError(self._insufficient_driver())
        raise EngineError(
            "CUDA device query failed ({}); {}".format(getattr(err, "name", code), DRIVER_HINT)
        )

    def _insufficient_driver(self):
        """The one line for cudaErrorInsufficientDriver: which CUDA the installed runtime needs
        and what the driver provides (0 = no driver at all)."""
        runtime = driver = 0
        try:
            runtime = self._check(self.rt.cudaRuntimeGetVersion(), "runtime version")
            driver = self._check(self.rt.cudaDriverGetVersion(), "driver version")
        except Exception:  # only the versions are missing from the message then
            pass
        if not driver:
            return (
                "no NVIDIA driver is installed (cuda-python's CUDA {} runtime found none); "
                "install the driver, or use the onnxruntime backend on this host".format(
                    _cuda_version_text(runtime)
                )
            )
        return (
            "the NVIDIA driver supports CUDA {} but the installed cuda-python/TensorRT need "
            "CUDA {}; update the driver, or install the extra for your driver's CUDA "
            "(pip install 'segdeploy[tensorrt-cu12]')".format(
                _cuda_version_text(driver), _cuda_version_text(runtime)
            )
        )

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
        self._local.device = index

    def enter(self, index):
        """Make ``index`` current in the calling thread; nothing to undo (see ``leave``).

        The runtime API keeps one current device per thread, so a thread that never called
        ``cudaSetDevice`` runs on device 0: call it once per thread and device."""
        if getattr(self._local, "device", None) != index:
            self.set_device(index)
        return None

    def leave(self, token):
        pass  # the thread keeps its device, as the runtime API does

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
                "CUDA is not usable here ({}); {}".format(_first_line(exc), DRIVER_HINT)
            ) from None
        self._context = None
        self._index = None
        self._registered = False
        self._primary = {}  # device index -> its retained primary context (one per process)

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
        """Push device ``index``'s primary context once; it is popped again by ``close``,
        which runs at interpreter exit before pycuda's own clean-up (pycuda aborts the process
        when a context is still on the stack then)."""
        if self._context is not None and self._index == index:
            return
        self.close()
        context = self.primary_context(index)
        context.push()
        self._context, self._index = context, index
        if not self._registered:
            atexit.register(self.close)
            self._registered = True

    def primary_context(self, index):
        """Device ``index``'s primary context (TensorRT's runtime uses it), retained once."""
        context = self._primary.get(index)
        if context is None:
            context = self._primary[index] = self.cuda.Device(index).retain_primary_context()
        return context

    def enter(self, index):
        """Push device ``index``'s primary context in the calling thread unless it is current
        there already; returns what ``leave`` must pop (None: nothing)."""
        context = self.primary_context(index)
        current = self.cuda.Context.get_current()
        if current is not None and current == context:
            return None
        context.push()
        return context

    def leave(self, token):
        if token is not None:
            self.cuda.Context.pop()

    def close(self):
        """Pop the context ``set_device`` pushed (if it is still the current one) and release
        the retained primary contexts. Safe to call twice."""
        context, self._context = self._context, None
        retained, self._primary = list(self._primary.values()), {}
        try:
            if context is not None:
                current = self.cuda.Context.get_current()
                if current is not None and current == context:
                    self.cuda.Context.pop()
        finally:
            for each in retained:
                each.detach()

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
    """Number of CUDA devices; 0 when there is a binding but no usable device. Never raises
    for a missing binding, driver or device."""
    try:
        return api().device_count()
    except (EngineError, RuntimeError, OSError):
        return 0


def cuda_available():
    """(True, device name) or (False, why not), through pycuda or cuda-python: no torch needed.
    Never raises."""
    try:
        return True, device_properties(0)["name"]
    except SegDeployError as exc:
        return False, str(exc)
    except Exception as exc:  # a binding's own exception type: report it, never raise
        return False, "CUDA is not usable here ({})".format(_first_line(exc))


def device_properties(index=0):
    """{'name', 'compute_capability': (major, minor), 'total_memory'} of device ``index``.

    EngineError saying why when there is none: no GPU, or a driver missing or too old.
    """
    try:
        count = api().device_count()
    except RuntimeError as exc:  # a binding's own error type: never escapes as a traceback
        raise EngineError(
            "CUDA is not usable here ({}); {}".format(_first_line(exc), DRIVER_HINT)
        ) from None
    if count <= index:
        raise EngineError(
            "no CUDA device {} on this machine; TensorRT engines need an NVIDIA GPU "
            "(use the onnxruntime backend on this host)".format(index)
        )
    return api().properties(index)


_DEFAULT_DEVICE = [0]  # the device ``use_device`` chose last: where new objects live
_THREAD = threading.local()  # .devices: the stack of devices ``on_device`` made current here


def use_device(index=0):
    """Make ``index`` current for this thread (before any allocation or TensorRT call) and the
    device of the objects created after this (in any thread)."""
    device_properties(index)
    api().set_device(index)
    _DEFAULT_DEVICE[0] = index


def default_device():
    return _DEFAULT_DEVICE[0]


def thread_devices():
    """The devices ``on_device`` has made current in the calling thread, innermost last."""
    stack = getattr(_THREAD, "devices", None)
    if stack is None:
        stack = _THREAD.devices = []
    return stack


@contextlib.contextmanager
def on_device(index=None):
    """Run the block with device ``index`` (default: ``default_device()``) current in the calling
    thread, whichever thread that is; nested blocks on the same device cost nothing."""
    index = default_device() if index is None else index
    stack = thread_devices()
    if stack and stack[-1] == index:
        yield
        return
    adapter = api()
    token = adapter.enter(index)
    stack.append(index)
    try:
        yield
    finally:
        stack.pop()
        adapter.leave(token)


class Stream(object):
    def __init__(self, device=None):
        self.device = default_device() if device is None else device
        with on_device(self.device):
            self._stream, self.handle = api().stream_create()

    def synchronize(self):
        with on_device(self.device):
            api().stream_synchronize(self._stream)

    def close(self):
        if self._stream is not None:
            with on_device(self.device):
                api().stream_destroy(self._stream)
            self._stream = None


class HostBuffer(object):
    """``nbytes`` of page-locked host memory, viewed as numpy arrays of any dtype/shape."""

    def __init__(self, nbytes, device=None):
        self.nbytes = int(nbytes)
        self.device = default_device() if device is None else device
        with on_device(self.device):
            self._handle, self._bytes = api().malloc_host(max(self.nbytes, 1))

    def view(self, shape, dtype):
        dtype = np.dtype(dtype)
        count = int(np.prod(shape)) if len(shape) else 1
        return self._bytes[: count * dtype.itemsize].view(dtype).reshape(shape)

    def close(self):
        if self._handle is not None:
            self._bytes = None
            with on_device(self.device):
                api().free_host(self._handle)
            self._handle = None


class DeviceBuffer(object):
    def __init__(self, nbytes, device=None):
        self.nbytes = int(nbytes)
        self.device = default_device() if device is None else device
        with on_device(self.device):
            self._handle = api().malloc(max(self.nbytes, 1))
        self.ptr = self._handle[0] if isinstance(self._handle, tuple) else self._handle

    def close(self):
        if self._handle is not None:
            with on_device(self.device):
                api().free(self._handle)
            self._handle = None


def copy_to_device(device_buffer, host_array, nbytes, stream):
    with on_device(stream.device):
        api().htod_async(device_buffer.ptr, _flat_bytes(host_array), nbytes, stream._stream)


def copy_to_host(host_array, device_buffer, nbytes, stream):
    with on_device(stream.device):
        api().dtoh_async(_flat_bytes(host_array), device_buffer.ptr, nbytes, stream._stream)


def _flat_bytes(array):
    # Both bindings copy from/to a contiguous byte range; a view keeps the page-locked memory.
    return array.reshape(-1).view(np.uint8)
