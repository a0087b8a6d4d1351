"""The CUDA bindings segbuild and the TensorRT runtime use (pycuda, cuda-python): what they say
where no driver or device is, and how their contexts are released. Split from test_segbuild.py."""

import importlib.util
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import trt_stand_ins as stand_ins

from segdeploy.engines import cuda_memory, devices
from segdeploy.engines.tensorrt_builder import tensorrt_status
from segdeploy.errors import EngineError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASES = sorted(stand_ins.RELEASES, key=lambda r: tuple(int(p) for p in r.split(".")))


class _Err(int):
    """cuda-python's cudaError_t member: an int with a name."""

    def __new__(cls, value, name):
        obj = int.__new__(cls, value)
        obj.name = name
        obj.value = value
        return obj


class _Runtime(object):
    """The few cudart calls cuda_memory makes, answering as cuda-python does on a machine whose
    driver is missing, too old, or present without a GPU."""

    cudaError_t = SimpleNamespace(cudaSuccess=_Err(0, "cudaSuccess"))

    def __init__(self, count_error, driver=0, runtime=12020, raise_on_count=None):
        self.count_error, self.driver, self.runtime = count_error, driver, runtime
        self.raise_on_count = raise_on_count

    def cudaGetDeviceCount(self):
        if self.raise_on_count:
            raise self.raise_on_count
        return (self.count_error, 0)

    def cudaRuntimeGetVersion(self):
        return (self.cudaError_t.cudaSuccess, self.runtime)

    def cudaDriverGetVersion(self):
        return (self.cudaError_t.cudaSuccess, self.driver)


def _cuda_python(rt):
    adapter = cuda_memory._CudaPython.__new__(cuda_memory._CudaPython)
    adapter.rt = rt
    return adapter


def test_insufficient_driver_is_named_not_no_device(monkeypatch):
    old = _cuda_python(_Runtime(_Err(35, "cudaErrorInsufficientDriver"), driver=11040))
    with pytest.raises(EngineError) as info:
        old.device_count()
    assert "supports CUDA 11.4" in str(info.value) and "need CUDA 12.2" in str(info.value)
    assert "tensorrt-cu12" in str(info.value)
    missing = _cuda_python(_Runtime(_Err(35, "cudaErrorInsufficientDriver"), driver=0))
    with pytest.raises(EngineError, match="no NVIDIA driver is installed"):
        missing.device_count()
    assert _cuda_python(_Runtime(_Err(100, "cudaErrorNoDevice"))).device_count() == 0
    monkeypatch.setattr(cuda_memory, "_API", [old])
    with pytest.raises(EngineError, match="supports CUDA 11.4"):
        cuda_memory.device_properties(0)
    ok, reason = cuda_memory.cuda_available()
    assert not ok and "supports CUDA 11.4" in reason


def test_cuda_python_runtime_error_never_escapes(monkeypatch):
    """cuda-python 12.0-12.2 raise RuntimeError without libcuda; the promises hold."""
    broken = _cuda_python(
        _Runtime(None, raise_on_count=RuntimeError("Failed to dlopen libcuda.so"))
    )
    monkeypatch.setattr(cuda_memory, "_API", [broken])
    assert cuda_memory.device_count() == 0
    ok, reason = cuda_memory.cuda_available()
    assert not ok and "libcuda" in reason
    assert devices.detect(tegra_release_path=None).key == "cpu"
    # and when the import itself raises
    monkeypatch.setattr(cuda_memory, "_API", [])
    monkeypatch.setattr(cuda_memory, "BINDING", cuda_memory.CUDA_PYTHON)

    def boom(self):
        raise RuntimeError("Failed to dlopen libcuda.so.1")

    monkeypatch.setattr(cuda_memory._CudaPython, "__init__", boom)
    with pytest.raises(EngineError, match="CUDA is not usable here"):
        cuda_memory.api()
    assert devices.detect(tegra_release_path=None).key == "cpu"
    if importlib.util.find_spec("tensorrt") is not None:
        ok, reason = tensorrt_status()
        assert not ok and "libcuda" in reason


@pytest.mark.skipif(
    importlib.util.find_spec("cuda") is None or os.path.exists("/dev/nvidiactl"),
    reason="needs the real cuda-python on a machine without an NVIDIA driver",
)
def test_real_cuda_python_without_a_driver_says_so():
    adapter = cuda_memory._CudaPython()
    with pytest.raises(EngineError, match="driver"):
        adapter.device_count()


# --- pycuda: the primary context is pushed once and popped before pycuda's clean-up -------------

FAKE_PYCUDA = '''
"""Stand-in for pycuda.driver's context stack: the calls segdeploy makes, and pycuda's check at
interpreter exit (pycuda aborts when a context is still pushed then)."""
import atexit, os, sys

STACK = []

def init():
    pass

class Context(object):
    def __init__(self, device):
        self.device, self.detached = device, False
    def push(self):
        STACK.append(self)
    def detach(self):
        self.detached = True
    @staticmethod
    def pop():
        STACK.pop()
    @staticmethod
    def get_current():
        return STACK[-1] if STACK else None

class Device(object):
    def __init__(self, index):
        self.index = index
    @staticmethod
    def count():
        return 1
    def retain_primary_context(self):
        return Context(self.index)
    def name(self):
        return "stand-in"
    def compute_capability(self):
        return (6, 2)
    def total_memory(self):
        return 1 << 30

def _module_cleanup():
    if STACK:
        sys.stderr.write("The context stack was not empty upon module cleanup\\n")
        sys.stderr.flush()
        os._exit(134)

atexit.register(_module_cleanup)
'''


@pytest.fixture
def fake_pycuda(tmp_path):
    root = tmp_path / "site"
    (root / "pycuda").mkdir(parents=True)
    (root / "pycuda" / "__init__.py").write_text("")
    (root / "pycuda" / "driver.py").write_text(textwrap.dedent(FAKE_PYCUDA))
    return root


def _run_with(fake_root, code):
    env = dict(os.environ, SEGDEPLOY_CUDA="pycuda")
    env["PYTHONPATH"] = os.pathsep.join([str(fake_root), REPO, env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_pycuda_context_is_popped_before_pycudas_cleanup(fake_pycuda):
    # The stand-in's exit check is armed: a context left pushed aborts the process.
    armed = _run_with(
        fake_pycuda, "import pycuda.driver as d; d.Device(0).retain_primary_context().push()"
    )
    assert armed.returncode == 134 and "not empty" in armed.stderr
    code = (
        "from segdeploy.engines import cuda_memory\n"
        "import pycuda.driver as d\n"
        "cuda_memory.use_device(0); cuda_memory.use_device(0)\n"
        "assert len(d.STACK) == 1, d.STACK\n"
        "print('pushed once')\n"
    )
    proc = _run_with(fake_pycuda, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "pushed once" and "not empty" not in proc.stderr


def test_pycuda_close_pops_and_detaches(fake_pycuda, monkeypatch):
    monkeypatch.syspath_prepend(str(fake_pycuda))
    for name in [m for m in sys.modules if m == "pycuda" or m.startswith("pycuda.")]:
        monkeypatch.delitem(sys.modules, name)
    registered = []
    monkeypatch.setattr(cuda_memory.atexit, "register", registered.append)
    adapter = cuda_memory._PyCuda()
    driver = adapter.cuda
    try:
        del registered[:]  # the stand-in's own exit check, registered when it was imported
        adapter.set_device(0)
        first = driver.STACK[-1]
        adapter.set_device(0)
        assert len(driver.STACK) == 1 and registered == [adapter.close]
        adapter.set_device(1)  # another device: the first context is popped, not stacked
        assert len(driver.STACK) == 1 and first.detached and driver.STACK[-1].device == 1
        adapter.close()
        adapter.close()
        assert driver.STACK == [] and registered == [adapter.close]
    finally:
        del driver.STACK[:]
        sys.modules.pop("pycuda.driver", None)
        sys.modules.pop("pycuda", None)


# --- tests detect CUDA without torch --------------------------------------------------------------


def _conftest():
    spec = importlib.util.spec_from_file_location(
        "segdeploy_tests_conftest", os.path.join(REPO, "tests", "conftest.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conftest_asks_the_cuda_binding_not_torch(monkeypatch):
    conftest = _conftest()
    monkeypatch.setitem(sys.modules, "torch", None)  # a runbook install has no torch
    monkeypatch.setattr(cuda_memory, "BINDING", cuda_memory.PYCUDA)
    monkeypatch.setattr(cuda_memory, "cuda_available", lambda: (True, "NVIDIA Tegra X2"))
    assert conftest.cuda_status() == (True, "NVIDIA Tegra X2")
    monkeypatch.setattr(cuda_memory, "cuda_available", lambda: (False, "no CUDA device 0"))
    status = conftest.cuda_status()
    assert status == (False, "no CUDA device 0")
    assert conftest._tensorrt_missing_reason(status) in (
        "no CUDA device 0",
        "TensorRT is not installed (pip install 'segdeploy[tensorrt]')",
    )


# --- a Python without torch or onnx runs the device side ------------------------------------------
