"""Where the ``tritonserver`` that segserve starts comes from, and what it needs to run.

Two kinds of install are understood:

- **nvidia-pytriton** (``make serve-env`` puts it into ``.venv-triton``; ``pip install
  nvidia-pytriton onnxruntime`` anywhere): the real ``tritonserver`` binary inside the
  ``pytriton`` package, with the Python backend only. That backend embeds the environment's
  interpreter, so the server needs the interpreter's ``lib/`` (libpython) and pytriton's bundled
  libraries on ``LD_LIBRARY_PATH``, that environment's ``bin/`` first on ``PATH`` (the embedded
  interpreter finds its packages through it: numpy and onnxruntime for the model), and a backend
  folder holding the backend library with the stub built for that Python version
  (``triton_python_backend_stub``; pytriton ships one per version). ``backend_folder`` makes that
  folder in a temporary directory.
- **a Triton release** (the ``nvcr.io/nvidia/tritonserver`` container, ``/opt/tritonserver``):
  ``bin/tritonserver`` with ``backends/<name>/`` beside it; used as it is.

Looked for, first hit wins: ``--server PATH`` or ``$SEGDEPLOY_TRITONSERVER`` (either one is the
only place tried), else ``./.venv-triton``, the ``.venv-triton`` of the checkout this package
runs from, this interpreter's environment, ``tritonserver`` on ``PATH``, ``/opt/tritonserver``.
A PATH is an environment folder, its python, a Triton release folder or a tritonserver binary.
Python 3.6 compatible.
"""

import json
import os
import shutil
import subprocess
import sys

from ..errors import SegDeployError

ENV_VAR = "SEGDEPLOY_TRITONSERVER"
SERVE_ENV = ".venv-triton"
RELEASE_DIR = "/opt/tritonserver"
HOW_TO_INSTALL = (
    "run `make serve-env` in the segdeploy checkout (nvidia-pytriton into .venv-triton), or "
    "`pip install nvidia-pytriton onnxruntime` into an environment and pass --server "
    "ENV/bin/python (or set {})".format(ENV_VAR)
)

_PROBE = r"""
import importlib.util, json, os, sys, sysconfig
spec = importlib.util.find_spec("pytriton")
root = list(spec.submodule_search_locations)[0] if spec else None
version = None
try:
    from importlib import metadata
    version = metadata.version("nvidia-pytriton")
except Exception:
    pass
libdir = sysconfig.get_config_var("LIBDIR") or ""
print(json.dumps({
    "root": root,
    "pytriton_version": version,
    "onnxruntime": importlib.util.find_spec("onnxruntime") is not None,
    "numpy": importlib.util.find_spec("numpy") is not None,
    "version": "%d.%d" % sys.version_info[:2],
    "libdir": libdir,
    "libpython": os.path.join(libdir, sysconfig.get_config_var("INSTSONAME") or "?"),
    "bin": os.path.dirname(os.path.abspath(sys.executable)),
}))
"""


class ServerInstall(object):
    """A usable tritonserver: ``binary``, the ``backends`` it can load (names), how to make its
    backend folder, and the environment to start it with (``environ``)."""

    def __init__(self, binary, backends, origin, python=None, probe=None):
        self.binary = binary
        self.backends = tuple(sorted(backends))
        self.origin = origin  # how it was found, for messages
        self.python = python
        self.probe = probe or {}

    @property
    def pytriton(self):
        return self.python is not None

    def describe(self):
        if self.pytriton:
            version = self.probe.get("pytriton_version")
            return "nvidia-pytriton{} in {}".format(
                " " + version if version else "", _env_root(self.python)
            )
        return self.binary

    def backend_folder(self, workdir):
        """The ``--backend-directory`` to start with: the release's own folder, or for pytriton
        one made under ``workdir`` (symlinks: the backend library and the stub of this Python)."""
        dist = os.path.dirname(os.path.dirname(self.binary))
        if not self.pytriton:
            return os.path.join(dist, "backends")
        folder = os.path.join(workdir, "backends", "python")
        os.makedirs(folder)
        source = os.path.join(dist, "backends", "python")
        for name in os.listdir(source):
            if name.endswith((".so", ".py")):
                os.symlink(os.path.join(source, name), os.path.join(folder, name))
        os.symlink(self.probe["stub"], os.path.join(folder, "triton_python_backend_stub"))
        return os.path.dirname(folder)

    def environ(self, base=None):
        env = dict(os.environ if base is None else base)
        if self.pytriton:
            info = self.probe
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (info["libdir"], info["libs"], env.get("LD_LIBRARY_PATH")) if p
            )
            env["PATH"] = info["bin"] + os.pathsep + env.get("PATH", "")
            # The model imports numpy and onnxruntime from the server's environment; a
            # PYTHONPATH meant for the caller's environment (numpy 2, say) would shadow them.
            env.pop("PYTHONPATH", None)
            env.pop("PYTHONHOME", None)
        return env


def _env_root(python):
    return os.path.dirname(os.path.dirname(os.path.abspath(python)))


def _checkout_root():
    """The folder holding this package when it runs from a source checkout (else None)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    root = os.path.dirname(package)
    return root if os.path.isfile(os.path.join(root, "setup.cfg")) else None


def _known_places():
    places = [os.path.join(os.getcwd(), SERVE_ENV)]
    checkout = _checkout_root()
    if checkout:
        places.append(os.path.join(checkout, SERVE_ENV))
    places.append(sys.executable)
    on_path = shutil.which("tritonserver")
    if on_path:
        places.append(on_path)
    places.append(RELEASE_DIR)
    seen, unique = set(), []
    for place in places:
        key = os.path.abspath(place)
        if key not in seen:
            seen.add(key)
            unique.append(place)
    return unique


def _pytriton_python_of(binary):
    """The python of the environment whose pytriton package holds ``binary``, else None:
    ENV/lib/pythonX.Y/site-packages/pytriton/tritonserver/bin/tritonserver."""
    parts = os.path.abspath(binary).split(os.sep)
    if len(parts) < 8 or parts[-4:-1] != ["pytriton", "tritonserver", "bin"]:
        return None
    env = os.sep.join(parts[:-7])
    python = os.path.join(env, "bin", "python")
    return python if os.path.isfile(python) else None


def _from_python(python, origin):
    """(ServerInstall, None) for a python whose environment has nvidia-pytriton, else (None,
    why not)."""
    # Popen + communicate: subprocess.run's capture_output and text are Python 3.7.
    try:
        child = subprocess.Popen(
            [python, "-c", _PROBE],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
        )
        try:
            out, err = child.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return None, "{} did not answer within 60 s".format(python)
        if child.returncode != 0:
            last = (err.strip().splitlines() or ["exit status {}".format(child.returncode)])[-1]
            return None, "{} cannot be run ({})".format(python, last)
        info = json.loads(out.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError) as exc:
        return None, "{} cannot be run ({})".format(python, exc)
    if not info["root"]:
        return None, "{} has no nvidia-pytriton".format(python)
    missing = [name for name in ("numpy", "onnxruntime") if not info[name]]
    if missing:
        return None, "{} has nvidia-pytriton but no {} for the Python backend model".format(
            python, " or ".join(missing)
        )
    if not os.path.isfile(info["libpython"]):
        return None, "{} has no shared libpython ({}), which the Python backend embeds".format(
            python, info["libpython"]
        )
    dist = os.path.join(info["root"], "tritonserver")
    binary = os.path.join(dist, "bin", "tritonserver")
    stub = os.path.join(dist, "python_backend_stubs", info["version"], "triton_python_backend_stub")
    if not (os.path.isfile(binary) and os.path.isfile(stub)):
        return None, "{} ships no tritonserver binary or stub for Python {}".format(
            info["root"], info["version"]
        )
    info.update(stub=stub, libs=os.path.join(os.path.dirname(info["root"]), "nvidia_pytriton.libs"))
    return ServerInstall(binary, ["python"], origin, python=python, probe=info), None


def _from_release(binary, origin):
    backends_dir = os.path.join(os.path.dirname(os.path.dirname(binary)), "backends")
    backends = []
    if os.path.isdir(backends_dir):
        backends = [
            n for n in os.listdir(backends_dir) if os.path.isdir(os.path.join(backends_dir, n))
        ]
    return ServerInstall(binary, backends, origin), None


def probe(place, origin=None):
    """(ServerInstall, None) for one place (see the module doc), else (None, why not)."""
    origin = origin or place
    if not os.path.exists(place):
        return None, "{} does not exist".format(place)
    if os.path.isdir(place):
        for program in ("python", "tritonserver"):
            candidate = os.path.join(place, "bin", program)
            if os.path.isfile(candidate):
                return probe(candidate, origin)
        return None, "{} holds neither bin/python nor bin/tritonserver".format(place)
    if not os.access(place, os.X_OK):
        return None, "{} is not executable".format(place)
    if os.path.basename(place).startswith("python"):
        return _from_python(place, origin)
    python = _pytriton_python_of(place)
    if python:
        return _from_python(python, origin)
    return _from_release(place, origin)


def find_server(server=None):
    """The ServerInstall to start: ``server`` (a PATH, see the module doc), else
    ``$SEGDEPLOY_TRITONSERVER``, else the first known place that works. Raises SegDeployError
    (one line: where it looked, why each failed, and how to install one) when none does."""
    explicit = server or os.environ.get(ENV_VAR)
    if explicit:
        found, why = probe(explicit, "--server" if server else "$" + ENV_VAR)
        if found is None:
            raise SegDeployError(
                "no usable tritonserver at {} ({}): {}; {}".format(
                    explicit, "--server" if server else "$" + ENV_VAR, why, HOW_TO_INSTALL
                )
            )
        return found
    reasons = []
    for place in _known_places():
        found, why = probe(place)
        if found is not None:
            return found
        reasons.append(why)
    raise SegDeployError(
        "no tritonserver found (looked at: {}); {}".format("; ".join(reasons), HOW_TO_INSTALL)
    )
