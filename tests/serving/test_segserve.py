"""segserve, as the README and docs/serving.md tell a user to run it.

The serving quick start (the same lines in both files) runs as written, each line a subprocess
in a fresh folder: segexport writes the repository, segserve starts nvidia-pytriton's real
tritonserver on 127.0.0.1, the documented Python line asks it for a label map. Then a remote
``Runtime("grpc://127.0.0.1:PORT/regseg")`` must give the local engine's labels (varied weights,
>= 5 classes), and SIGTERM must stop the server whole: exit 0, one line, the temporary folder
gone, no process of it left, its ports free again.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from triton_support import missing_reason, server_place  # noqa: E402

from segdeploy.serve.install import ENV_VAR  # noqa: E402
from segdeploy.serve.process import free_port, port_in_use  # noqa: E402

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed ([serve] extra)")
REASON = missing_reason()
needs_server = pytest.mark.skipif(REASON is not None, reason=REASON or "")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARK = "<!-- segserve quick start: tests/serving/test_segserve.py runs these lines as written -->"
READY_TIMEOUT_S = 240
RUNTIME_LINE = re.compile(r'Runtime\("(grpc://127\.0\.0\.1:(\d+)/(\w+))"\)')


def documented_lines(path):
    """The command lines of the fenced block that follows MARK in ``path``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text.count(MARK) == 1, "{} must hold the segserve quick start once".format(path)
    block = text.split(MARK, 1)[1].split("```", 2)[1]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_and_docs_give_the_same_serving_lines():
    readme = documented_lines(os.path.join(REPO, "README.md"))
    docs = documented_lines(os.path.join(REPO, "docs", "serving.md"))
    assert readme == docs
    assert [shlex.split(line, comments=True)[0] for line in docs] == [
        "segexport",
        "segserve",
        "python",
    ]


def console_scripts():
    """{name: "module:function"} from setup.cfg's console_scripts."""
    import configparser

    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    entries = config["options.entry_points"]["console_scripts"]
    pairs = (line.split("=", 1) for line in entries.strip().splitlines())
    return {name.strip(): target.strip() for name, target in pairs}


def user_environment(bin_dir):
    """PATH with this checkout's console scripts (as pip would install them from setup.cfg,
    whether or not this environment was reinstalled since) and this interpreter as `python`."""
    os.makedirs(bin_dir)
    for name, target in console_scripts().items():
        module, function = target.split(":")
        path = os.path.join(bin_dir, name)
        with open(path, "w") as f:
            f.write(
                "#!{}\nimport sys\nfrom {} import {}\nsys.exit({}())\n".format(
                    sys.executable, module, function, function
                )
            )
        os.chmod(path, 0o755)
    python = os.path.join(bin_dir, "python")
    with open(python, "w") as f:  # not a symlink: the venv is found from the path run
        f.write('#!/bin/sh\nexec "{}" "$@"\n'.format(sys.executable))
    os.chmod(python, 0o755)
    env = dict(os.environ)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    if server_place():  # a .venv-triton made outside this checkout (see triton_support)
        env[ENV_VAR] = server_place()
    return env


class Served(object):
    """A segserve subprocess whose stdout is read as it comes."""

    def __init__(self, argv, cwd, env):
        self.lines = []
        self.process = subprocess.Popen(
            argv,
            cwd=str(cwd),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self):
        return "\n".join(self.lines)

    def wait_for(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                match = pattern.search(line)
                if match:
                    return match
            if self.process.poll() is not None:
                self.reader.join(5)
                pytest.fail(
                    "segserve exited with {}:\n{}".format(self.process.returncode, self.output())
                )
            time.sleep(0.2)
        self.stop(signal.SIGTERM)
        pytest.fail(
            "segserve printed no {!r} in {} s:\n{}".format(pattern.pattern, timeout, self.output())
        )

    def stop(self, signum=signal.SIGTERM, timeout=60):
        self.process.send_signal(signum)
        code = self.process.wait(timeout)
        self.reader.join(5)
        return code


def assert_stopped_whole(served, code, name):
    """Exit 0, one line, the temporary folder removed, no process started from it, ports free."""
    assert code == 0, served.output()
    last = served.lines[-1]
    match = re.match(r"segserve: {}: tritonserver stopped, (\S+) removed$".format(name), last)
    assert match, served.output()
    workdir = match.group(1)
    assert not os.path.exists(workdir)
    shm = "segserve_{}_".format(served.process.pid)  # the Python backend's regions
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(shm)]
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/{}/cmdline".format(pid), "rb") as f:
                assert workdir.encode() not in f.read(), "process {} outlived segserve".format(pid)
        except OSError:
            pass
    return workdir


def labels_agree(remote_url, local_path, frames):
    import segdeploy

    classes = set()
    with segdeploy.Runtime(remote_url) as remote, segdeploy.Runtime(local_path) as local:
        for frame in frames:
            expected = local.infer(frame)
            np.testing.assert_array_equal(remote.infer(frame), expected)
            classes.update(np.unique(expected).tolist())
    assert len(classes) >= 5  # varied labels: equality means something


def save_varied_checkpoint(path, name, seed=0):
    import torch

    from segdeploy import models
    from segdeploy.models.golden import vary_weights_

    torch.manual_seed(seed)
    model = vary_weights_(models.build(name).eval())
    torch.save(model.state_dict(), str(path))


@needs_server
@pytest.mark.slow
def test_documented_serving_lines_run_as_written(tmp_path):
    from segdeploy.samples import sample_frame, street_scene

    lines = documented_lines(os.path.join(REPO, "docs", "serving.md"))
    work = tmp_path / "user"
    work.mkdir()
    save_varied_checkpoint(work / "cityscapes.pth", "regseg")
    env = user_environment(str(tmp_path / "bin"))
    served, port = None, "8001"
    try:
        for line in lines:
            argv = shlex.split(line, comments=True)
            if argv[0] == "segserve":
                # As written, unless this machine's 8000/8001 are taken by something else (a
                # parallel run): then the same line on free ports, and the later lines follow.
                if port_in_use("127.0.0.1", 8000) or port_in_use("127.0.0.1", 8001):
                    port = str(free_port())
                    argv += ["--http-port", str(free_port()), "--grpc-port", port]
                served = Served(argv, work, env)
                url, port, name = served.wait_for(RUNTIME_LINE, READY_TIMEOUT_S).groups()
                continue
            argv = [a.replace("127.0.0.1:8001", "127.0.0.1:" + port) for a in argv]
            done = subprocess.run(
                argv,
                cwd=str(work),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=900,
            )
            assert done.returncode == 0, "{}\n{}".format(line, done.stdout)
            if argv[0] == "python":
                assert done.stdout.strip().splitlines()[-1] == "(720, 1280)"
        assert served is not None and name == "regseg"
        frames = [street_scene(720, 1280), sample_frame(512, 1024, 3)]
        labels_agree(url, str(work / "out" / "regseg.onnx"), frames)
        code = served.stop(signal.SIGTERM)
        assert_stopped_whole(served, code, "SIGTERM")
        assert not port_in_use("127.0.0.1", int(port))
    finally:
        if served is not None and served.process.poll() is None:
            served.stop(signal.SIGTERM)  # its own clean stop, also when an assertion failed


@needs_server
def test_python_m_serves_a_gpu_repository_on_the_cpu_and_stops_on_ctrl_c(tmp_path):
    # A repository written for a GPU server (ONNX Runtime backend, KIND_GPU): pip's server has
    # neither that backend nor, here, a GPU, so segserve serves its ONNX graph through the
    # Python backend on the CPU and leaves the repository as it was.
    from segdeploy.export.cli import main as segexport
    from segdeploy.samples import sample_frame

    save_varied_checkpoint(tmp_path / "tiny.pth", "regseg_tiny", seed=2)
    argv = ["--model", "regseg_tiny", "--checkpoint", str(tmp_path / "tiny.pth")]
    argv += ["--res", "64x128", "--verify-inputs", "1", "--backend", "onnxruntime"]
    argv += ["--triton", str(tmp_path / "repo"), "--triton-device", "gpu"]
    assert segexport(argv + ["--out", str(tmp_path / "out")]) == 0
    config = tmp_path / "repo" / "regseg_tiny" / "config.pbtxt"
    before = config.read_text()
    assert "KIND_GPU" in before and 'backend: "onnxruntime"' in before
    env = user_environment(str(tmp_path / "bin"))
    http, grpc = free_port(), free_port()
    command = [sys.executable, "-m", "segdeploy.serve", str(tmp_path / "repo")]
    command += ["--http-port", str(http), "--grpc-port", str(grpc)]
    served = Served(command, tmp_path, env)
    try:
        url = served.wait_for(RUNTIME_LINE, READY_TIMEOUT_S).group(1)
        assert url == "grpc://127.0.0.1:{}/regseg_tiny".format(grpc)
        assert "this tritonserver has no onnxruntime backend" in served.output()
        assert "Python backend (ONNX Runtime on the CPU), KIND_CPU" in served.output()
        shm = "segserve_{}_".format(served.process.pid)
        assert [n for n in os.listdir("/dev/shm") if n.startswith(shm)]  # removed at the stop
        frames = [sample_frame(64, 128, s) for s in range(3)] + [sample_frame(90, 170, 7)]
        labels_agree(url, str(tmp_path / "out" / "regseg_tiny.onnx"), frames)
        code = served.stop(signal.SIGINT)  # what Ctrl-C sends
        assert_stopped_whole(served, code, "Ctrl-C")
        assert not port_in_use("127.0.0.1", grpc) and not port_in_use("127.0.0.1", http)
        assert config.read_text() == before
    finally:
        if served.process.poll() is None:
            served.stop(signal.SIGTERM)


@needs_server
def test_a_model_that_fails_to_load_is_one_line_and_leaves_nothing(tmp_path):
    from segdeploy.engines.triton import write_model_repository
    from segdeploy.export.cli import main as segexport

    argv = ["--model", "regseg_tiny", "--res", "32x64", "--verify-inputs", "1"]
    assert segexport(argv + ["--backend", "onnxruntime", "--out", str(tmp_path / "out")]) == 0
    repo = tmp_path / "repo"
    write_model_repository(repo, str(tmp_path / "out" / "regseg_tiny.onnx"), backend="python")
    (repo / "regseg_tiny" / "1" / "model.onnx").write_bytes(b"not an ONNX file")
    env = user_environment(str(tmp_path / "bin"))
    command = [sys.executable, "-m", "segdeploy.serve", str(repo)]
    command += ["--http-port", str(free_port()), "--grpc-port", str(free_port())]
    before = set(os.listdir(tempfile.gettempdir()))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("segserve: error: tritonserver exited with status ")
    assert "failed to load 'regseg_tiny'" in line  # Triton's own line: which model, why
    left = [n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("segserve-")]
    assert left == []
