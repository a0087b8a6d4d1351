"""Which form of the DBlockConv plugin the installed TensorRT takes: IPluginV3 from 10 on, the
IPluginV2DynamicExt form before (8.2 on a TX2, 8.6 on a GTX 1080 Ti).

TensorRT 10 deprecated ``IPluginV2DynamicExt`` for ``IPluginV3`` (``IPluginV3OneCore/Build/
Runtime`` + ``IPluginCreatorV3One``), which 8.x does not have. Both forms implement one contract
(README.md) from one source each; ``choose`` reads ``NV_TENSORRT_MAJOR`` from the headers the
build will use and says which, and ``build`` passes it to CMake (``DBLOCK_PLUGIN_API``), whose
own reading of NvInferVersion.h serves a plain ``cmake`` run. Python 3.6 compatible.
"""

import os
import re

from ...errors import SegDeployError

V2, V3 = "V2", "V3"
SOURCES = {V2: "dblock_plugin.cpp", V3: "dblock_plugin_v3.cpp"}
INTERFACES = {V2: "IPluginV2DynamicExt", V3: "IPluginV3"}
FIRST_V3_MAJOR = 10
# Where JetPack and NVIDIA's Debian packages put NvInfer.h (CMakeLists.txt searches the same).
SYSTEM_INCLUDES = (
    "/usr/include/aarch64-linux-gnu",
    "/usr/include/x86_64-linux-gnu",
    "/usr/include",
)
_SUFFIXES = ("include", "include/aarch64-linux-gnu", "include/x86_64-linux-gnu")


def api_for_version(version):
    """'10.16.0' -> 'V3'; '8.2.1' -> 'V2'. SegDeployError for an unreadable version."""
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise SegDeployError(
            "cannot tell TensorRT's major version from {!r}; NvInferVersion.h should define "
            "NV_TENSORRT_MAJOR".format(version)
        ) from None
    return V3 if major >= FIRST_V3_MAJOR else V2


def tensorrt_version(include_dir):
    """'MAJOR.MINOR.PATCH' from NvInferVersion.h in ``include_dir`` (one level of macro aliases:
    10.x+ defines NV_TENSORRT_MAJOR as TRT_MAJOR_ENTERPRISE)."""
    path = os.path.join(include_dir, "NvInferVersion.h")
    try:
        with open(path, "r") as f:
            text = f.read()
    except OSError:
        raise SegDeployError(
            "{} has no NvInferVersion.h; pass TensorRT's include directory".format(include_dir)
        ) from None
    macros = dict(re.findall(r"#define\s+(\w+)\s+(\w+)", text))

    def value(name):
        v = macros.get(name, "?")
        return macros.get(v, v)

    return ".".join(value("NV_TENSORRT_" + k) for k in ("MAJOR", "MINOR", "PATCH"))


def find_include(tensorrt_root=None):
    """The directory with NvInferVersion.h: under ``tensorrt_root`` (include/, include/<triplet>/)
    when given, else the system locations; None when there is none."""
    if tensorrt_root:
        candidates = [os.path.join(tensorrt_root, s) for s in _SUFFIXES]
    else:
        candidates = list(SYSTEM_INCLUDES)
    for directory in candidates:
        if os.path.isfile(os.path.join(directory, "NvInferVersion.h")):
            return directory
    return None


def choose(tensorrt_root=None, include=None):
    """(api or None, one line saying why), from ``include`` (the headers folder the build is told
    to use) or the one found under ``tensorrt_root`` / the system. None: no headers found here;
    CMake decides from the headers it finds (and fails with its own message when there are none)."""
    include = include or find_include(tensorrt_root)
    if include is None:
        return (
            None,
            "no NvInferVersion.h under {}; CMake picks the form from the headers it finds".format(
                tensorrt_root or "the system include directories"
            ),
        )
    version = tensorrt_version(include)
    api = api_for_version(version)
    return api, "TensorRT {} ({}): {} ({})".format(version, include, INTERFACES[api], SOURCES[api])
