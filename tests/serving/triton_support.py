"""Start and stop a real ``tritonserver`` on loopback for the serving tests.

The binary and its Python backend come from ``nvidia-pytriton`` (the Makefile installs it into
its own environment, ``.venv-triton``, because it pins numpy < 2). Its Python backend embeds the
interpreter, so the server needs that interpreter's ``lib/`` folder (libpython) on
``LD_LIBRARY_PATH`` and its ``bin/`` first on ``PATH`` (which is how the embedded interpreter
finds its environment's packages: numpy and onnxruntime for the model).

Where the server environment is looked for, first hit wins: ``$SEGDEPLOY_TRITON_PYTHON`` (a
python with nvidia-pytriton), ``<repo>/.venv-triton/bin/python``, then this interpreter.
``missing_reason()`` says why none works (the tests skip with it). The server binds 127.0.0.1
only, on free ports, runs in its own process group (the Python backend's stub processes are its
children) and is always stopped: SIGTERM, then SIGKILL of the whole group after a bound.
Imported by the serving tests; defines no tests.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 10

_PROBE = r"""
import importlib.util, json, os, sys, sysconfig
spec = importlib.util.find_spec("pytriton")
ort = importlib.util.find_spec("onnxruntime") is not None
root = list(spec.submodule_search_locations)[0] if spec else None
print(json.dumps({
    "root": root,
    "onnxruntime": ort,
    "version": "%d.%d" % sys.version_info[:2],
    "libdir": sysconfig.get_config_var("LIBDIR"),
    "libpython": os.path.join(sysconfig.get_config_var("LIBDIR") or "",
                              sysconfig.get_config_var("INSTSONAME") or "?"),
    "bin": os.path.dirname(os.path.abspath(sys.executable)),
}))
"""


def _candidates():
    env = os.environ.get("SEGDEPLOY_TRITON_PYTHON")
    if env:
        yield env
    yield os.path.join(REPO, ".venv-triton", "bin", "python")
    yield sys.executable


def find_server():
    """(info dict, None) for the first usable server environment, else (None, reason)."""
    reasons = []
    for python in _candidates():
        if not os.path.isfile(python):
            reasons.append("{} does not exist".format(python))
            continue
        try:
            out = subprocess.run(
                [python, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
            ).stdout
            info = json.loads(out.strip().splitlines()[-1])
        except (subprocess.SubprocessError, ValueError, IndexError) as exc:
            reasons.append("{} cannot be probed ({})".format(python, exc))
            continue
        if not info["root"]:
            reasons.append("{} has no nvidia-pytriton".format(python))
            continue
        if not info["onnxruntime"]:
            reasons.append("{} has no onnxruntime for the Python backend model".format(python))
            continue
        if not os.path.isfile(info["libpython"]):
            reasons.append(
                "{} has no shared libpython ({}), which the Python backend embeds".format(
                    python, info["libpython"]
                )
            )
            continue
        dist = os.path.join(info["root"], "tritonserver")
        binary = os.path.join(dist, "bin", "tritonserver")
        stub = os.path.join(
            dist, "python_backend_stubs", info["version"], "triton_python_backend_stub"
        )
        if not (os.path.isfile(binary) and os.path.isfile(stub)):
            reasons.append("{} ships no tritonserver binary or stub for Python {}".format(
                info["root"], info["version"]))  # fmt: skip
            continue
        info.update(python=python, dist=dist, binary=binary, stub=stub)
        info["libs"] = os.path.join(os.path.dirname(info["root"]), "nvidia_pytriton.libs")
        return info, None
    return None, "no tritonserver to test against: " + "; ".join(reasons) + (
        " (run `make serve-env` to install nvidia-pytriton into .venv-triton)"
    )


def missing_reason():
    return find_server()[1]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer(object):
    """A tritonserver process serving ``repository`` on 127.0.0.1 (use as a context manager)."""

    def __init__(self, repository, info=None):
        self.repository = str(repository)
        self.info = info or find_server()[0]
        self.process = None
        self.workdir = tempfile.mkdtemp(prefix="segdeploy-triton-")
        self.http_port = free_port()
        self.grpc_port = free_port()
        while self.grpc_port == self.http_port:
            self.grpc_port = free_port()
        self.shm_prefix = "segdeploy_test_{}_{}".format(os.getpid(), self.http_port)
        self.log_path = os.path.join(self.workdir, "tritonserver.log")

    @property
    def grpc_url(self):
        return "grpc://127.0.0.1:{}".format(self.grpc_port)

    @property
    def http_url(self):
        return "http://127.0.0.1:{}".format(self.http_port)

    def _backends(self):
        # The backend directory Triton loads the Python backend from, with the stub built for
        # this Python version (pytriton ships one per version).
        backends = os.path.join(self.workdir, "backends", "python")
        os.makedirs(backends)
        source = os.path.join(self.info["dist"], "backends", "python")
        for name in os.listdir(source):
            if name.endswith((".so", ".py")):
                os.symlink(os.path.join(source, name), os.path.join(backends, name))
        os.symlink(self.info["stub"], os.path.join(backends, "triton_python_backend_stub"))
        return os.path.dirname(backends)

    def start(self):
        info = self.info
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (info["libdir"], info["libs"], env.get("LD_LIBRARY_PATH")) if p
        )
        env["PATH"] = info["bin"] + os.pathsep + env.get("PATH", "")
        env.pop("PYTHONPATH", None)  # the model imports only numpy and onnxruntime
        env["OMP_NUM_THREADS"] = "1"
        command = [
            info["binary"],
            "--model-repository=" + self.repository,
            "--backend-directory=" + self._backends(),
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--http-port={}".format(self.http_port),
            "--grpc-port={}".format(self.grpc_port),
            "--allow-metrics=false",
            "--exit-timeout-secs=2",
            # A model that fails to load is reported by the tests, not a reason not to start.
            "--exit-on-error=false",
            "--strict-readiness=false",
            "--backend-config=python,shm-region-prefix-name=" + self.shm_prefix,
        ]
        log = open(self.log_path, "wb")
        try:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                start_new_session=True,  # its own group: the stubs die with it
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                message = "tritonserver exited with {} while starting:\n{}".format(
                    self.process.returncode, self.log_tail()
                )
                self.stop()
                raise RuntimeError(message)
            if self.ready():
                return self
            time.sleep(0.2)
        message = "tritonserver not ready after {} s:\n{}".format(START_TIMEOUT_S, self.log_tail())
        self.stop()
        raise RuntimeError(message)

    def ready(self):
        try:
            url = "{}/v2/health/ready".format(self.http_url)
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self):
        """SIGKILL the server and its stubs at once: a crash, as clients see it."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self):
        """Stop the server (SIGTERM, then SIGKILL of the group) and remove what it left."""
        process = self.process
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT_S)
            except ProcessLookupError:
                pass
        if process is not None:  # stubs outliving a killed server: end the group
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for name in os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else ():
            if name.startswith(self.shm_prefix):
                try:
                    os.remove(os.path.join("/dev/shm", name))
                except OSError:
                    pass
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
