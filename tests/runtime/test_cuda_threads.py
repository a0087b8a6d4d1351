"""CUDA contexts are per thread: every cuda_memory entry point makes its device current in the
calling thread (issue 22, item 8).

The CPU tests drive ``cuda_memory``'s per-thread bookkeeping through stand-ins of the two
bindings' API surface that keep, as the CUDA driver does, one context stack (pycuda) or one
current device (cuda-python's runtime API) per thread, and record which context or device was
current in the calling thread when each allocation or copy was made. Nothing runs on a GPU there;
the ``gpu`` test does the same calls on a real one, from a second thread.
"""

import threading
import types

import numpy as np
import pytest

from segdeploy.engines import cuda_memory


class _PerThread(threading.local):
    def __init__(self):
        self.stack = []  # pycuda: the thread's context stack
        self.device = 0  # cuda-python: the thread's current device (runtime API default 0)


def _stand_in_pycuda(calls):
    """pycuda.driver's context calls with per-thread stacks; allocations record the context."""
    local = _PerThread()
    cuda = types.SimpleNamespace()

    class Context(object):
        def __init__(self, device):
            self.device, self.detached = device, False

        def push(self):
            local.stack.append(self)
            calls.append(("push", threading.current_thread().name, self.device))

        def detach(self):
            self.detached = True

        @staticmethod
        def pop():
            context = local.stack.pop()
            calls.append(("pop", threading.current_thread().name, context.device))

        @staticmethod
        def get_current():
            return local.stack[-1] if local.stack else None

    class Device(object):
        def __init__(self, index):
            self.index = index

        @staticmethod
        def count():
            return 2

        def retain_primary_context(self):
            calls.append(("retain", threading.current_thread().name, self.index))
            return Context(self.index)

        def name(self):
            return "stand-in"

        def compute_capability(self):
            return (8, 7)

        def total_memory(self):
            return 1 << 30

    def current_device(what):
        if not local.stack:
            raise RuntimeError("{}: no current context in this thread".format(what))
        calls.append((what, threading.current_thread().name, local.stack[-1].device))

    class Allocation(object):
        def __init__(self, nbytes):
            current_device("mem_alloc")
            self.nbytes = nbytes

        def __int__(self):
            return 4096

        def free(self):
            pass

    class Stream(object):
        handle = 1

        def __init__(self):
            current_device("stream")

        def synchronize(self):
            current_device("synchronize")

    def pagelocked_empty(nbytes, dtype):
        current_device("pagelocked_empty")
        return np.empty(nbytes, dtype)

    cuda.Context, cuda.Device, cuda.Stream = Context, Device, Stream
    cuda.init = lambda: None
    cuda.mem_alloc = Allocation
    cuda.pagelocked_empty = pagelocked_empty
    cuda.memcpy_htod_async = lambda dst, src, stream: current_device("htod")
    cuda.memcpy_dtoh_async = lambda dst, src, stream: current_device("dtoh")
    cuda.local = local
    return cuda


@pytest.fixture
def pycuda_adapter(monkeypatch):
    calls = []
    adapter = cuda_memory._PyCuda.__new__(cuda_memory._PyCuda)
    adapter.cuda = _stand_in_pycuda(calls)
    adapter._context, adapter._index, adapter._registered, adapter._primary = None, None, True, {}
    monkeypatch.setattr(cuda_memory, "_API", [adapter])
    monkeypatch.setattr(cuda_memory, "_DEFAULT_DEVICE", [0])
    yield adapter, calls
    adapter.close()


def _in_thread(fn, name="worker"):
    errors = []

    def body():
        try:
            fn()
        except Exception as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=body, name=name)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _use(host_nbytes=16):
    host = cuda_memory.HostBuffer(host_nbytes)
    dev = cuda_memory.DeviceBuffer(host_nbytes)
    stream = cuda_memory.Stream()
    view = host.view((host_nbytes,), np.uint8)
    cuda_memory.copy_to_device(dev, view, host_nbytes, stream)
    cuda_memory.copy_to_host(view, dev, host_nbytes, stream)
    stream.synchronize()
    return host, dev, stream


def test_pycuda_second_thread_gets_the_device_context_around_each_call(pycuda_adapter):
    adapter, calls = pycuda_adapter
    cuda_memory.use_device(1)  # the main thread keeps device 1's context pushed (TensorRT's)
    assert [c for c in calls if c[0] == "push"] == [("push", "MainThread", 1)]
    del calls[:]
    _in_thread(_use)
    work = [c for c in calls if c[0] not in ("push", "pop", "retain")]
    # Before the fix the worker had no current context: every call below raised.
    assert [c[0] for c in work] == [
        "pagelocked_empty",
        "mem_alloc",
        "stream",
        "htod",
        "dtoh",
        "synchronize",
    ]
    assert all(c[1] == "worker" and c[2] == 1 for c in work), work
    pushes = [c for c in calls if c[0] == "push"]
    pops = [c for c in calls if c[0] == "pop"]
    # pushed and popped once per call, never left on the worker's stack
    assert len(pushes) == len(pops) == len(work) and all(c[2] == 1 for c in pushes)
    # the primary context is retained once per process, not once per call or thread
    assert [c for c in calls if c[0] == "retain"] == []
    assert [c.device for c in adapter.cuda.local.stack] == [1]  # the main thread's, untouched


def test_pycuda_calls_on_the_current_thread_push_nothing(pycuda_adapter):
    adapter, calls = pycuda_adapter
    cuda_memory.use_device(0)
    del calls[:]
    _use()
    assert [c for c in calls if c[0] in ("push", "pop")] == []
    with cuda_memory.on_device(0):
        with cuda_memory.on_device(0):
            assert cuda_memory.thread_devices() == [0]
    assert cuda_memory.thread_devices() == []


def test_pycuda_nested_blocks_on_one_device_push_once(pycuda_adapter):
    adapter, calls = pycuda_adapter

    def nested():
        with cuda_memory.on_device(1):
            with cuda_memory.on_device(1):
                cuda_memory.DeviceBuffer(8, device=1)
            assert adapter.cuda.local.stack[-1].device == 1
        assert adapter.cuda.local.stack == []

    _in_thread(nested)
    assert [c[0] for c in calls if c[0] in ("push", "pop")] == ["push", "pop"]


def test_pycuda_objects_keep_the_device_they_were_made_on(pycuda_adapter):
    adapter, calls = pycuda_adapter
    cuda_memory.use_device(1)
    stream = cuda_memory.Stream()
    cuda_memory.use_device(0)  # later objects go to device 0; the stream stays on 1
    del calls[:]
    _in_thread(stream.synchronize)
    assert ("synchronize", "worker", 1) in calls


class _StandInRuntime(object):
    """cuda-python's runtime calls: one current device per thread, as the runtime API keeps."""

    class cudaError_t(object):
        cudaSuccess = 0

    class cudaMemcpyKind(object):
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self):
        self.local = _PerThread()
        self.calls = []

    def _record(self, what):
        self.calls.append((what, threading.current_thread().name, self.local.device))
        return 0

    def cudaSetDevice(self, index):
        self.local.device = index
        return self._record("cudaSetDevice")

    def cudaMalloc(self, nbytes):
        return (self._record("cudaMalloc"), 4096)

    def cudaFree(self, ptr):
        return self._record("cudaFree")

    def cudaStreamCreate(self):
        return (self._record("cudaStreamCreate"), 7)

    def cudaStreamSynchronize(self, stream):
        return self._record("cudaStreamSynchronize")

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        return self._record("cudaMemcpyAsync")


def test_cuda_python_sets_the_device_once_per_thread(monkeypatch):
    rt = _StandInRuntime()
    adapter = cuda_memory._CudaPython.__new__(cuda_memory._CudaPython)
    adapter.rt, adapter._local = rt, threading.local()
    monkeypatch.setattr(cuda_memory, "_API", [adapter])
    monkeypatch.setattr(cuda_memory, "_DEFAULT_DEVICE", [1])

    def work():
        dev = cuda_memory.DeviceBuffer(8)
        stream = cuda_memory.Stream()
        cuda_memory.copy_to_device(dev, np.zeros(8, np.uint8), 8, stream)
        stream.synchronize()
        dev.close()

    _in_thread(work, "first")
    _in_thread(work, "second")
    for thread in ("first", "second"):
        mine = [c for c in rt.calls if c[1] == thread]
        # Before the fix device 1 was lost here: the runtime API defaults each thread to 0.
        assert mine[0] == ("cudaSetDevice", thread, 1)
        assert [c[0] for c in mine].count("cudaSetDevice") == 1
        assert all(c[2] == 1 for c in mine), mine


def test_on_device_without_a_binding_says_what_is_missing(monkeypatch):
    from segdeploy.errors import MissingDependencyError

    monkeypatch.setattr(cuda_memory, "_API", [])
    monkeypatch.setattr(cuda_memory, "BINDING", None)
    with pytest.raises(MissingDependencyError, match="CUDA Python binding"):
        with cuda_memory.on_device(0):
            pass
    assert cuda_memory.thread_devices() == []


@pytest.mark.gpu
def test_pinned_round_trip_from_a_second_thread_on_a_real_gpu():
    cuda_memory.use_device(0)
    data = np.arange(1 << 16, dtype=np.float32)
    got = {}

    def work():
        host = cuda_memory.HostBuffer(data.nbytes)
        dev = cuda_memory.DeviceBuffer(data.nbytes)
        stream = cuda_memory.Stream()
        try:
            view = host.view(data.shape, data.dtype)
            view[...] = data
            cuda_memory.copy_to_device(dev, view, data.nbytes, stream)
            view[...] = 0
            cuda_memory.copy_to_host(view, dev, data.nbytes, stream)
            stream.synchronize()
            got["back"] = view.copy()
            assert cuda_memory.thread_devices() == []
        finally:
            stream.close()
            dev.close()
            host.close()

    _in_thread(work)
    np.testing.assert_array_equal(got["back"], data)
