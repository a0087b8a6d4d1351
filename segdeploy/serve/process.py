"""One ``tritonserver`` process: started in its own process group, waited for until it answers
ready, and always stopped as a whole (server and Python backend stubs) with what it left behind
(its temporary folder, its shared-memory regions) removed. Python 3.6 compatible.
"""

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from ..errors import SegDeployError

START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 10
# Triton's own log lines: "E1207 02:11:58.123456 123 file.cc:42] message"
_ERROR_LINE = re.compile(r"^E\d{4} [\d:.]+ +\d+ [^\]]*\] ?(.*)$")
_NOISE = ("CudaDriverHelper has not been initialized.",)


def port_in_use(host, port):
    """Whether something already listens on ``host:port`` (the bind Triton would do fails);
    SegDeployError when ``host`` is no address of this machine."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton binds
        sock.bind((host, int(port)))
        return False
    except socket.gaierror as exc:
        raise SegDeployError("--host {}: {}".format(host, exc.strerror or exc)) from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return True
        raise SegDeployError(
            "cannot bind {}:{} ({}); --host takes an address of this machine".format(
                host, port, exc.strerror or exc
            )
        ) from None
    finally:
        sock.close()


def check_ports(host, http_port, grpc_port):
    """SegDeployError (one line) unless both ports are free on ``host``."""
    if int(http_port) == int(grpc_port):
        raise SegDeployError("--http-port and --grpc-port must differ")
    for port, option in ((http_port, "--http-port"), (grpc_port, "--grpc-port")):
        if port_in_use(host, port):
            raise SegDeployError(
                "port {} on {} is already in use (another tritonserver or segserve?); "
                "pick a free one with {} N".format(port, host, option)
            )


def free_port(host="127.0.0.1"):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        return sock.getsockname()[1]
    finally:
        sock.close()


def _die_with_parent():
    """In the child before exec: SIGTERM it when the process that started it dies, even by
    SIGKILL (Linux prctl PR_SET_PDEATHSIG), so a killed segserve leaves no server behind."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


class TritonProcess(object):
    """``tritonserver`` for ``repository`` from ``install`` (a ``ServerInstall``), bound to
    ``host`` only. ``strict``: the server exits when a model fails to load and is ready only
    with every model ready (segserve); off, a broken model stays UNAVAILABLE beside the others
    (what the serving tests check). The server's output goes to a file in the temporary folder
    (``log_tail`` and ``error_line`` read it); ``log``, a stream, also gets it as it comes."""

    def __init__(
        self,
        install,
        repository,
        host="127.0.0.1",
        http_port=8000,
        grpc_port=8001,
        strict=True,
        log=None,
        extra_env=None,
        shm_prefix=None,
        workdir=None,
    ):
        self.install = install
        # The server runs in its temporary folder: a relative path would not be found there.
        self.repository = os.path.abspath(str(repository))
        self.host = host
        self.http_port = int(http_port)
        self.grpc_port = int(grpc_port)
        self.strict = strict
        self.log = log
        self.extra_env = dict(extra_env or {})
        self.workdir = workdir or tempfile.mkdtemp(prefix="segserve-")
        self.shm_prefix = shm_prefix or "segserve_{}_{}".format(os.getpid(), self.http_port)
        self.log_path = os.path.join(self.workdir, "tritonserver.log")
        self.process = None
        self.metadata = {}

    # --- addresses ------------------------------------------------------------------------

    @property
    def client_host(self):
        """The address a client on this machine uses (a wildcard bind answers on loopback)."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def grpc_url(self):
        return "grpc://{}:{}".format(self.client_host, self.grpc_port)

    @property
    def http_url(self):
        return "http://{}:{}".format(self.client_host, self.http_port)

    # --- life cycle -----------------------------------------------------------------------

    def check_ports(self):
        check_ports(self.host, self.http_port, self.grpc_port)

    def command(self):
        return [
            self.install.binary,
            "--model-repository=" + self.repository,
            "--backend-directory=" + self.install.backend_folder(self.workdir),
            "--http-address=" + self.host,
            "--grpc-address=" + self.host,
            "--http-port={}".format(self.http_port),
            "--grpc-port={}".format(self.grpc_port),
            "--allow-metrics=false",
            "--exit-timeout-secs=2",
            "--exit-on-error={}".format("true" if self.strict else "false"),
            "--strict-readiness={}".format("true" if self.strict else "false"),
            "--backend-config=python,shm-region-prefix-name=" + self.shm_prefix,
        ]

    def start(self, timeout=START_TIMEOUT_S):
        """Start the server and wait until it answers ready; on failure stop it and raise
        SegDeployError with the server's own error line."""
        env = self.install.environ()
        env.update(self.extra_env)
        command = self.command()
        out = open(self.log_path, "wb")
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                start_new_session=True,  # its own group: the backend stubs stop with it
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        except OSError as exc:
            self.stop()
            raise SegDeployError("cannot start {}: {}".format(command[0], exc)) from None
        finally:
            out.close()
        if self.log is not None:
            threading.Thread(target=self._echo_log, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                why = self.error_line() or "no error line in its log"
                self.stop()
                if "already in use" in why:
                    raise SegDeployError("tritonserver could not bind its ports: " + why)
                raise SegDeployError(
                    "tritonserver exited with status {} while starting: {}".format(code, why)
                )
            if self.ready():
                self.metadata = self._get_json("/v2") or {}
                return self
            time.sleep(0.2)
        why = self.error_line()
        self.stop()
        raise SegDeployError(
            "tritonserver was not ready after {:.0f} s{}".format(
                timeout, ": " + why if why else " (a large model loading? raise --timeout)"
            )
        )

    def _echo_log(self):
        """Copy the server's log to ``self.log`` as it grows (-v), until the server ends."""
        try:
            with open(self.log_path, "r", errors="replace") as f:
                while True:
                    line = f.readline()
                    if line:
                        self.log.write(line)
                        self.log.flush()
                    elif self.running():
                        time.sleep(0.2)
                    else:
                        break
        except (OSError, ValueError):
            pass

    def _get_json(self, path):
        import urllib.request

        try:
            with urllib.request.urlopen(self.http_url + path, timeout=1) as response:
                return json.loads(response.read().decode("utf-8"))
        except (OSError, ValueError):
            return None

    def ready(self):
        import urllib.request

        try:
            with urllib.request.urlopen(self.http_url + "/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def model_ready(self, name):
        import urllib.request

        try:
            url = "{}/v2/models/{}/ready".format(self.http_url, name)
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def running(self):
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def error_line(self):
        """The error that explains a failed start, without Triton's prefix, or None: the first
        model that failed to load, else the server's fatal ``error: ...`` line, else its last
        error line (the CUDA probe's complaint on a CPU-only host is no explanation)."""
        errors, fatal = [], None
        for line in self.log_tail(2000).splitlines():
            line = line.strip()
            match = _ERROR_LINE.match(line)
            if match:
                # Newer servers quote the message and escape its line breaks: keep line one.
                text = match.group(1).strip().strip('"').split("\\n")[0].strip()
                if text and text not in _NOISE:
                    errors.append(text)
            elif line.startswith("error: "):
                fatal = line[len("error: ") :]
        for text in errors:
            if text.startswith("failed to load"):
                return text
        return fatal or (errors[-1] if errors else None)

    def kill(self):
        """SIGKILL the server and its stubs at once (a crash, as clients see it)."""
        if self.running():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self):
        """SIGTERM the process group, SIGKILL it after STOP_TIMEOUT_S, then remove the
        temporary folder and the Python backend's shared-memory regions. Safe to repeat.
        Returns how the server ended: "terminated", "killed" or "not running"."""
        process, how = self.process, "not running"
        if process is not None and process.poll() is None:
            how = "terminated"
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                how = "killed"
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT_S)
            except ProcessLookupError:
                pass
        if process is not None:  # stubs outliving the server: end the group
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shm = "/dev/shm"
        for name in os.listdir(shm) if os.path.isdir(shm) else ():
            if name.startswith(self.shm_prefix):
                try:
                    os.remove(os.path.join(shm, name))
                except OSError:
                    pass
        shutil.rmtree(self.workdir, ignore_errors=True)
        return how

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
