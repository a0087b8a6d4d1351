"""segserve's parts that need no running server: what it serves for each kind of SOURCE, where
it looks for a tritonserver, and its one-line answers to mistakes (exit status 2)."""

import importlib.util
import os
import socket
import subprocess
import sys

import pytest

from segdeploy import card as card_mod
from segdeploy.engines.triton import write_model_repository
from segdeploy.errors import SegDeployError
from segdeploy.export.cli import main as segexport
from segdeploy.serve import repository
from segdeploy.serve.install import ServerInstall, find_server
from segdeploy.serve.process import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PIP_SERVER = ServerInstall("/nowhere/tritonserver", ["python"], "test")  # nvidia-pytriton's
RELEASE = ServerInstall(
    "/opt/tritonserver/bin/tritonserver", ["onnxruntime", "python", "tensorrt"], "test"
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("segserve")
    argv = ["--model", "regseg_tiny", "--res", "32x64", "--verify-inputs", "1", "--max-batch", "4"]
    assert segexport(argv + ["--backend", "onnxruntime", "--out", str(root / "out")]) == 0
    return root


def read(path):
    with open(path) as f:
        return f.read()


def test_config_round_trip_gives_back_the_card(exported, tmp_path):
    onnx = str(exported / "out" / "regseg_tiny.onnx")
    card = card_mod.read_sidecar(onnx)
    card["model"]["source"] = 'a "quoted" name\\ with a backslash\nand a newline'
    result = write_model_repository(tmp_path, onnx, card=card, backend="onnxruntime", device="gpu")
    config = repository.read_config(result["config"])
    assert config["card"] == card
    assert (config["name"], config["backend"], config["kind"]) == (
        "regseg_tiny",
        "onnxruntime",
        "KIND_GPU",
    )
    assert config["max_batch"] == 4 and config["count"] == 1


def test_onnx_file_gets_a_python_backend_repository(exported, tmp_path):
    onnx = str(exported / "out" / "regseg_tiny.onnx")
    repo, models, notes = repository.prepare(onnx, str(tmp_path), PIP_SERVER, has_gpu=False)
    assert repo == str(tmp_path / "repository") and notes == []
    (model,) = models
    assert (model.name, model.backend, model.kind, model.max_batch) == (
        "regseg_tiny",
        "python",
        "KIND_CPU",
        4,
    )
    config = read(os.path.join(repo, "regseg_tiny", "config.pbtxt"))
    assert 'backend: "python"' in config and "kind: KIND_CPU" in config
    assert os.path.isfile(os.path.join(repo, "regseg_tiny", "1", "model.py"))
    # a name of the user's choosing
    repo2, models2, _ = repository.prepare(onnx, str(tmp_path / "b"), PIP_SERVER, False, "seg")
    assert models2[0].name == "seg" and os.path.isdir(os.path.join(repo2, "seg"))


def test_engine_file_and_export_folder_serve_their_onnx_graph(exported, tmp_path):
    out = exported / "out"
    ort = str(out / "regseg_tiny.ort")
    assert os.path.isfile(ort)
    _, models, notes = repository.prepare(ort, str(tmp_path / "a"), PIP_SERVER, False)
    assert models[0].source == str(out / "regseg_tiny.onnx")
    assert notes == ["serving {} (the ONNX graph beside {})".format(models[0].source, ort)]
    _, models, notes = repository.prepare(str(out), str(tmp_path / "b"), PIP_SERVER, False)
    assert models[0].source == str(out / "regseg_tiny.onnx")
    lone = tmp_path / "lone.ort"
    lone.write_bytes(b"x")
    with pytest.raises(SegDeployError, match="lone.onnx is not beside it"):
        repository.prepare(str(lone), str(tmp_path / "c"), PIP_SERVER, False)


def test_a_repository_is_served_as_it_is_only_where_it_loads(exported, tmp_path):
    onnx = str(exported / "out" / "regseg_tiny.onnx")
    src = tmp_path / "repo"
    write_model_repository(src, onnx, backend="onnxruntime", device="gpu")  # for a GPU server
    before = read(src / "regseg_tiny" / "config.pbtxt")
    # Triton's release on a GPU machine loads it as written.
    repo, models, notes = repository.prepare(str(src), str(tmp_path / "w1"), RELEASE, True)
    assert repo == str(src) and notes == [] and models[0].kind == "KIND_GPU"
    # pip's server (Python backend only) on this CPU machine: rewritten into the temporary
    # folder for the Python backend, the user's repository untouched.
    repo, models, notes = repository.prepare(str(src), str(tmp_path / "w2"), PIP_SERVER, False)
    assert repo == str(tmp_path / "w2" / "repository")
    assert (models[0].backend, models[0].kind, models[0].max_batch) == ("python", "KIND_CPU", 4)
    assert "this tritonserver has no onnxruntime backend" in notes[0]
    assert read(src / "regseg_tiny" / "config.pbtxt") == before
    # the release on a machine without a GPU: the kind is what stops it
    _, models, notes = repository.prepare(str(src), str(tmp_path / "w3"), RELEASE, False)
    assert models[0].backend == "onnxruntime" and models[0].kind == "KIND_CPU"
    assert "KIND_GPU and this machine has no GPU" in notes[0]
    # a Python backend repository loads on pip's server as written
    py = tmp_path / "pyrepo"
    write_model_repository(py, onnx, backend="python")
    repo, _, notes = repository.prepare(str(py), str(tmp_path / "w4"), PIP_SERVER, False)
    assert repo == str(py) and notes == []


def test_a_plan_needs_the_container_and_says_its_command(exported, tmp_path):
    plan = tmp_path / "regseg_tiny.plan"
    plan.write_bytes(b"not built here")
    with pytest.raises(SegDeployError) as info:
        repository.prepare(str(plan), str(tmp_path / "w"), PIP_SERVER, False)
    text = str(info.value)
    assert "\n" not in text and "TensorRT backend on a GPU" in text
    assert "docker run --rm --gpus=1" in text and "-p 127.0.0.1:8001:8001" in text


def test_no_server_is_one_line_naming_the_way_to_install_one(tmp_path):
    with pytest.raises(SegDeployError) as info:
        find_server(str(tmp_path / "missing-env"))
    assert "missing-env does not exist" in str(info.value) and "make serve-env" in str(info.value)
    if importlib.util.find_spec("pytriton") is None:
        with pytest.raises(SegDeployError, match="has no nvidia-pytriton"):
            find_server(sys.executable)


def segserve(*argv, **kwargs):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "segdeploy.serve"] + list(argv),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def one_line_exit_2(done):
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segserve: error: "), done.stderr
    return lines[0]


def test_cli_mistakes_are_one_line_exit_2(exported, tmp_path):
    onnx = str(exported / "out" / "regseg_tiny.onnx")
    assert "nothing.onnx does not exist" in one_line_exit_2(
        segserve(str(tmp_path / "nothing.onnx"))
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = str(busy.getsockname()[1])
        line = one_line_exit_2(segserve(onnx, "--grpc-port", port, "--http-port", str(free_port())))
        assert "port {} on 127.0.0.1 is already in use".format(port) in line
        assert "--grpc-port N" in line
    ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port())]
    line = one_line_exit_2(segserve(onnx, "--server", str(tmp_path / "no-env"), *ports))
    assert "make serve-env" in line and "pip install nvidia-pytriton onnxruntime" in line
    line = one_line_exit_2(segserve(onnx, "--http-port", "9", "--grpc-port", "9"))
    assert "must differ" in line


def test_print_docker_gives_the_gpu_server_command(exported, tmp_path):
    repo = tmp_path / "repo"
    write_model_repository(repo, str(exported / "out" / "regseg_tiny.onnx"), device="gpu")
    done = segserve(str(repo), "--print-docker", "--grpc-port", "9001")
    assert done.returncode == 0, done.stderr
    command = done.stdout.strip()
    assert command.startswith("docker run --rm --gpus=1 ")
    assert '-v "{}":/models'.format(repo) in command and "-p 127.0.0.1:9001:8001" in command
    assert command.endswith("tritonserver --model-repository=/models")
    assert "takes a Triton repository" in one_line_exit_2(
        segserve(str(exported / "out" / "regseg_tiny.onnx"), "--print-docker")
    )


def test_segserve_is_a_console_script_of_the_package():
    import configparser

    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    scripts = config["options.entry_points"]["console_scripts"]
    assert "segserve = segdeploy.serve.cli:main" in scripts
    assert segserve("--version").stdout.startswith("segserve 0.")  # NAME X.Y.Z, as every command
