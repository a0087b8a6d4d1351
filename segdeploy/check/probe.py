"""What this machine has: GPU, driver, CUDA, TensorRT, Python, numpy, Jetson power mode.

Each probe answers (ok, what or why not) and never raises; nothing heavy is imported except where
a probe's question is about that library (torch's CUDA, asked only when torch is installed).
Python 3.6 compatible.
"""

import ctypes
import importlib
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys

import numpy as np

from .._version import __version__


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def module_version(module):
    """The version of an importable module without importing it where Python can say (3.8+);
    else by importing it (the light ones only); None when missing."""
    if not installed(module):
        return None
    names = {"cv2": "opencv-python", "tensorrt": "tensorrt", "onnxruntime": "onnxruntime"}
    try:
        metadata = importlib.import_module("importlib.metadata")  # Python 3.8+

        for dist in (names.get(module, module), module, module + "-headless"):
            try:
                return metadata.version(dist)
            except Exception:
                continue
    except ImportError:
        pass
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception as exc:
        return "broken ({})".format(_first_line(exc))


def run_text(cmd, timeout=20):
    """stdout of ``cmd`` (a list), or None when it is missing or fails."""
    if not shutil.which(cmd[0]) and not os.path.isfile(cmd[0]):
        return None
    try:
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.decode("utf-8", "replace") if proc.returncode == 0 else None


def cuda_text(value):
    """12020 -> '12.2'."""
    return "{}.{}".format(int(value) // 1000, (int(value) % 1000) // 10) if value else None


def driver_cuda_version():
    """(cuDriverGetVersion value, None) or (None, why): through libcuda with ctypes, so it answers
    without any CUDA Python package."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None, "no NVIDIA driver (libcuda.so.1) on this machine"
    version = ctypes.c_int()
    code = lib.cuDriverGetVersion(ctypes.byref(version))
    if code != 0:
        return None, "cuDriverGetVersion failed with CUDA error {}".format(code)
    return version.value, None


def toolkit_version():
    """'13.0' from ``nvcc --version`` (PATH, then $CUDA_HOME/bin), or None."""
    home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    for nvcc in ("nvcc", os.path.join(home, "bin", "nvcc")):
        text = run_text([nvcc, "--version"])
        found = re.search(r"release (\d+\.\d+)", text or "")
        if found:
            return found.group(1)
    return None


def nvidia_smi():
    """{'name', 'driver', 'compute_cap', 'memory_mib'} of GPU 0 from nvidia-smi, or None."""
    text = run_text(
        [
            "nvidia-smi",
            "--query-gpu=name,driver_version,compute_cap,memory.total",
            "--format=csv,noheader,nounits",
        ]
    )
    if not text or not text.strip():
        return None
    parts = [p.strip() for p in text.strip().splitlines()[0].split(",")]
    if len(parts) < 4:
        return None
    return {"name": parts[0], "driver": parts[1], "compute_cap": parts[2], "memory_mib": parts[3]}


def gpu():
    """(True, '<name>') or (False, why): the CUDA binding segdeploy uses (pycuda / cuda-python),
    else the driver itself (ctypes), so a machine without either binding still answers."""
    from ..engines import cuda_memory

    if cuda_memory.BINDING is not None:
        return cuda_memory.cuda_available()
    version, why = driver_cuda_version()
    if version is None:
        return False, why
    try:
        from ..plugins.dblock.gpu_check import Driver

        return True, Driver().name()
    except Exception as exc:  # SegDeployError or a driver error: say it, never raise
        return False, "CUDA driver {} but no usable GPU ({})".format(
            cuda_text(version), _first_line(exc)
        )


def tensorrt():
    """(True, 'TensorRT x on GPU') or (False, why)."""
    from ..engines.tensorrt_builder import tensorrt_status

    return tensorrt_status()


def torch_cuda():
    """(True, 'torch x, CUDA y, <GPU>') or (False, why); imports torch only when installed."""
    if not installed("torch"):
        return False, "PyTorch is not installed (a host-side library: a device needs none)"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "torch {} sees no CUDA device".format(torch.__version__)
        return True, "torch {}, CUDA {}, {}".format(
            torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0)
        )
    except Exception as exc:
        return False, "PyTorch is not usable here ({})".format(_first_line(exc))


def nvrtc():
    """(True, path) or (False, why)."""
    from ..errors import MissingDependencyError
    from ..plugins.dblock import compile_check

    try:
        return True, compile_check.find_nvrtc()
    except MissingDependencyError as exc:
        return False, str(exc)


# --- Jetson power mode ---------------------------------------------------------------------------

NVPMODEL_CONF = "/etc/nvpmodel.conf"
NVPMODEL_STATUS = "/var/lib/nvpmodel/status"


def parse_nvpmodel_query(text):
    """``nvpmodel -q`` -> {'name': 'MAXN', 'id': 0}: its output reads 'NV Power Mode: MAXN' then
    the mode number on the next line."""
    info = {}
    name = re.search(r"NV Power Mode:\s*(\S+)", text)
    if name:
        info["name"] = name.group(1)
        rest = text[name.end() :].strip().splitlines()
        if rest and rest[0].strip().isdigit():
            info["id"] = int(rest[0].strip())
    return info


def parse_nvpmodel_conf(text):
    """/etc/nvpmodel.conf -> ({mode id: name}, default id or None)."""
    modes = dict(
        (int(i), n) for i, n in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([\w-]+)", text)
    )
    default = re.search(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)", text)
    return modes, int(default.group(1)) if default else None


def power_mode(conf_path=NVPMODEL_CONF, status_path=NVPMODEL_STATUS):
    """The Jetson power mode {'name', 'id', 'source'}, or None off a Jetson."""
    text = run_text(["nvpmodel", "-q"])
    if text:
        info = parse_nvpmodel_query(text)
        if info:
            info["source"] = "nvpmodel -q"
            return info
    if not os.path.isfile(conf_path):
        return None
    with open(conf_path, "r") as f:
        modes, default = parse_nvpmodel_conf(f.read())
    current, source = default, conf_path + " (default mode)"
    if os.path.isfile(status_path):
        with open(status_path, "r") as f:
            found = re.search(r"pmode:(\d+)", f.read())
        if found:
            current, source = int(found.group(1)), status_path
    if current is None:
        return None
    return {"name": modes.get(current, "?"), "id": current, "source": source}


# --- the whole report -----------------------------------------------------------------------------


def environment(probes):
    """The environment section: ``probes`` is {'gpu': (ok, text), 'tensorrt': ..., ...}."""
    from ..engines import devices

    info = {
        "segdeploy": __version__,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    for key, (ok, text) in sorted(probes.items()):
        info[key] = text if ok else "no: " + text
    smi = nvidia_smi()
    if smi:
        info["nvidia_smi"] = "{name}, driver {driver}, sm {compute_cap}, {memory_mib} MiB".format(
            **smi
        )
    version, why = driver_cuda_version()
    info["driver_cuda"] = cuda_text(version) if version else "no: " + why
    info["cuda_toolkit"] = toolkit_version() or "no nvcc on PATH or in $CUDA_HOME/bin"
    from ..engines import cuda_memory

    info["cuda_binding"] = cuda_memory.BINDING or "none (pycuda or cuda-python)"
    for module in ("tensorrt", "onnxruntime", "cv2", "torch", "pycuda", "cuda"):
        found = module_version(module)
        info["version_" + module] = found if found else "not installed"
    detected = devices.detect(tegra_release_path=devices.TEGRA_RELEASE)
    info["device_table"] = detected.key or "not in the table"
    if detected.l4t:
        info["l4t"] = detected.l4t
    mode = power_mode()
    if mode:
        info["power_mode"] = "{} (mode {}, from {})".format(
            mode.get("name", "?"), mode.get("id", "?"), mode["source"]
        )
    elif detected.record is not None and detected.record.jetson:
        info["power_mode"] = "unknown (no nvpmodel and no {})".format(NVPMODEL_CONF)
    return info, detected
