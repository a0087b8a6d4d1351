"""The engine fingerprint (the sidecar's ``engine`` section) and the preflight verdict.

A TensorRT plan runs only on the TensorRT version and the GPU model it was built on, unless it
was built version-compatible (8.6+: later runtimes of the same major version) or hardware-
compatible (8.6+, Ampere and newer only). ``compare`` says in one line what differs and what to do,
before TensorRT is asked to deserialize something it would reject with a cryptic assertion.

    {"backend": "tensorrt", "tensorrt": "8.6.1", "api": "named",
     "device": {"key": "t4", "name": "Tesla T4", "compute_capability": [7, 5]},
     "precision": "fp16", "profiles": [{"input": "image", "min": [1, 3, 512, 1024], ...}],
     "plugins": [{"file": "libdblock.so", "sha256": "..."}],
     "build_flags": {"workspace_mib": 1024, "opt_level": 3, "timing_cache": "...",
                     "version_compatible": false, "hardware_compatible": false, ...},
     "plan_bytes": 123456, "plan_sha256": "...", "built_at": "2024-..."}

Pure logic; Python 3.6 compatible.
"""

import hashlib
import os
from collections import namedtuple

from ..manifest import sha256_file  # one file hash for manifests and fingerprints
from . import devices

Verdict = namedtuple("Verdict", ["ok", "problems", "message"])
Verdict.__doc__ = """``ok``: the plan can be loaded here; ``problems``: short phrases, one per
difference; ``message``: the one line to show (empty when ok)."""

REBUILD_HINT = "rebuild on this device with segexport"


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def plugin_file(path):
    """``path`` as a string when it is an existing plugin library file, else EngineError (one
    line). Shared by the builder (which loads the library) and the runtime (which hashes it)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        from .._io import missing_file
        from ..errors import EngineError

        raise EngineError(
            "{}; pass the .so built for this device".format(missing_file(path, "plugin library"))
        )
    return path


def plugin_records(paths):
    """[{'file': basename, 'path': path, 'sha256': hash}] for each plugin library."""
    return [
        {"file": os.path.basename(p), "path": os.fspath(p), "sha256": sha256_file(p)} for p in paths
    ]


def device_section(name, compute_capability, key=None):
    if key is None:
        key = devices.identify(name, compute_capability)
    return {
        "key": key,
        "name": name,
        "compute_capability": list(compute_capability) if compute_capability else None,
    }


def _version_tuple(text):
    parts = []
    for piece in str(text).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _display_name(section):
    record = devices.TABLE.get(section.get("key") or "")
    # Jetsons report SoC names ("NVIDIA Tegra X2"); users know the module name.
    if record is not None and record.jetson:
        return record.name
    return section.get("name") or "an unknown GPU"


def compare(built, here, plugin_hashes=None):
    """Verdict for loading a plan whose fingerprint is ``built`` where ``here`` describes this
    machine ({'tensorrt': version, 'device': device_section(...)}).

    ``plugin_hashes`` maps plugin file name -> sha256 of the library that will be loaded now.
    """
    problems = []
    flags = built.get("build_flags") or {}
    built_trt, here_trt = str(built.get("tensorrt", "?")), str(here.get("tensorrt", "?"))
    bv, hv = _version_tuple(built_trt), _version_tuple(here_trt)
    trt_differs = bv != hv
    if trt_differs and flags.get("version_compatible"):
        # Version-compatible plans (built with 8.6+) load on later runtimes of the same major.
        trt_differs = not (bv >= (8, 6) and hv[:1] == bv[:1] and hv >= bv)
    if trt_differs:
        problems.append("TensorRT {} vs {}".format(built_trt, here_trt))

    bdev, hdev = built.get("device") or {}, here.get("device") or {}
    bcc, hcc = _cc(bdev), _cc(hdev)
    gpu_differs = bdev.get("name") != hdev.get("name") or bcc != hcc
    if gpu_differs and flags.get("hardware_compatible"):
        # Ampere+ hardware compatibility: any sm_80+ GPU runs it.
        gpu_differs = not (bcc and hcc and bcc >= (8, 0) and hcc >= (8, 0))
    if gpu_differs:
        problems.append("GPU {} vs {}".format(_display_name(bdev), _display_name(hdev)))

    plugin_hashes = plugin_hashes or {}
    for plugin in built.get("plugins") or []:
        now = plugin_hashes.get(plugin.get("file"))
        if now is None:
            problems.append("plugin {} not loaded".format(plugin.get("file")))
        elif now != plugin.get("sha256"):
            problems.append("plugin {} changed".format(plugin.get("file")))

    if not problems:
        return Verdict(True, [], "")
    if trt_differs or gpu_differs:
        message = "built on {} with TensorRT {}; this is {} with {}: {}".format(
            _display_name(bdev), built_trt, _display_name(hdev), here_trt, REBUILD_HINT
        )
        rest = [p for p in problems if p.startswith("plugin")]
        if rest:
            message += " (also: {})".format(", ".join(rest))
    else:
        message = (
            "the engine's plugin libraries differ from the build ({}): pass the plugin "
            "files it was built with, or {}".format(", ".join(problems), REBUILD_HINT)
        )
    return Verdict(False, problems, message)


def _cc(section):
    cc = section.get("compute_capability")
    return tuple(cc) if cc else None


def check_plan_size(built, actual_bytes):
    """None if the plan file has the size recorded at build time, else a one-line problem."""
    expected = built.get("plan_bytes")
    if expected is None or expected == actual_bytes:
        return None
    if actual_bytes < expected:
        return "is truncated ({} of {} bytes); copy it again or {}".format(
            actual_bytes, expected, REBUILD_HINT
        )
    return "has {} bytes but was built with {}; it is not the plan this card describes: {}".format(
        actual_bytes, expected, REBUILD_HINT
    )
