"""Where TensorRT's headers and libnvinfer are for the plugin build, including pip's wheels.

pip's TensorRT wheels ship libraries and no headers: ``tensorrt_libs/libnvinfer.so.10`` (the
``tensorrt-cu12-libs`` / ``tensorrt-cu13-libs`` wheels of 10.x and 11.x; 8.6.1's ``tensorrt-libs``
has ``libnvinfer.so.8`` there) or ``tensorrt/libnvinfer.so.8`` (the single wheels of 8.4 and
8.5), names that CMake's ``find_library(nvinfer)`` does not match. This module finds those files
by name only (nothing is loaded) and says in one line where headers come from. Python 3.6
compatible.
"""

import importlib.util
import os
import re

# libnvinfer.so, libnvinfer.so.10, libnvinfer.so.10.3.0 -- not libnvinfer_plugin, _lean, ...
_NVINFER = re.compile(r"^libnvinfer\.so(?:\.(\d+(?:\.\d+)*))?$")
# Packages whose folder holds libnvinfer in pip installs: the libs wheels (8.6+), then 8.4/8.5's.
WHEEL_PACKAGES = ("tensorrt_libs", "tensorrt")

HEADERS_HINT = (
    "pip's TensorRT wheels ship no headers: pass --trt-include with the include/ folder of the "
    "TensorRT GitHub repository's release branch for your version (git clone --depth 1 -b "
    "release/10.3 https://github.com/NVIDIA/TensorRT) or of the tar/deb dev package "
    "(apt-get install libnvinfer-dev; JetPack has it in /usr/include/aarch64-linux-gnu)"
)


def _version_key(name):
    match = _NVINFER.match(name)
    if not match:
        return None
    if match.group(1) is None:
        return (1,)  # the unversioned link name wins: it is what a -dev package installs
    return (0,) + tuple(int(p) for p in match.group(1).split("."))


def pick_nvinfer(names):
    """The libnvinfer file among ``names`` (basenames) to link, or None: ``libnvinfer.so`` when
    present, else the shortest version suffix of the highest major (``libnvinfer.so.10``
    before ``libnvinfer.so.10.3.0``: the soname TensorRT loads)."""
    found = [(n, _version_key(n)) for n in names]
    found = [(n, k) for n, k in found if k is not None]
    if not found:
        return None
    unversioned = [n for n, k in found if k == (1,)]
    if unversioned:
        return unversioned[0]
    top = max(k[1] for _, k in found)
    same = [(len(k), n) for n, k in found if k[1] == top]
    return min(same)[1]


def nvinfer_in(folder):
    """Full path of the libnvinfer to link in ``folder``, or None."""
    if not folder or not os.path.isdir(folder):
        return None
    name = pick_nvinfer(os.listdir(folder))
    return os.path.join(folder, name) if name else None


def wheel_folders(search_paths=None):
    """Folders of pip's TensorRT packages: from ``search_paths`` (site-packages folders, for
    tests) or from the running interpreter's import system (find_spec: nothing is imported)."""
    folders = []
    for package in WHEEL_PACKAGES:
        if search_paths is not None:
            candidates = [os.path.join(p, package) for p in search_paths]
        else:
            try:
                spec = importlib.util.find_spec(package)
            except (ImportError, ValueError):
                spec = None
            candidates = list(spec.submodule_search_locations or []) if spec else []
        folders.extend(c for c in candidates if os.path.isdir(c))
    return folders


def find_wheel_nvinfer(search_paths=None):
    """libnvinfer from a pip install of TensorRT, or None."""
    for folder in wheel_folders(search_paths):
        path = nvinfer_in(folder)
        if path:
            return path
    return None


def has_headers(folder):
    return bool(folder) and os.path.isfile(os.path.join(folder, "NvInfer.h"))


def header_version(folder):
    """'10.3.0' from NvInferVersion.h in ``folder``, or None."""
    path = os.path.join(folder, "NvInferVersion.h")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        text = f.read()
    parts = []
    for what in ("MAJOR", "MINOR", "PATCH"):
        match = re.search(r"#define\s+NV_TENSORRT_{}\s+(\d+)".format(what), text)
        if not match:
            return None
        parts.append(match.group(1))
    return ".".join(parts)


def lib_major(path):
    """10 for .../libnvinfer.so.10.3.0, None for an unversioned name."""
    key = _version_key(os.path.basename(path))
    return key[1] if key and key[0] == 0 else None
