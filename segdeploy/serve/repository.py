"""What segserve serves: a Triton repository the server at hand can load, made from what the
user names.

    SOURCE                        served as
    out/regseg.onnx (+ card)      a repository written into the temporary folder
    out/regseg.ort / .xml         the .onnx beside it (Triton takes ONNX; .ort fits one CPU)
    out/ (a segexport folder)     its ONNX graph (the one without a precision suffix)
    repo/ (segexport --triton)    as it is, when the server has each model's backend and the
                                  machine its instance kind; else its ONNX models rewritten for
                                  the Python backend (CPU) in the temporary folder

The backend follows the server: ONNX Runtime's backend where the server has it (a Triton
release), else the Python backend running ONNX Runtime on the CPU (nvidia-pytriton, whose server
has no other). A TensorRT plan needs Triton's TensorRT backend and a GPU: the error then gives
the container command. Python 3.6 compatible.
"""

import os
import re

from .. import card as card_mod
from ..engines import triton as triton_repo
from ..errors import SegDeployError

CONTAINER = "nvcr.io/nvidia/tritonserver:24.08-py3"
_PLAN_SUFFIXES = (".plan", ".engine")


class Model(object):
    """One model of the served repository: its name, backend, instance kind and batch size."""

    def __init__(self, name, backend, kind, max_batch, source):
        self.name = name
        self.backend = backend
        self.kind = kind
        self.max_batch = max_batch
        self.source = source

    def describe(self):
        what = {
            "python": "Python backend (ONNX Runtime on the CPU)",
            "onnxruntime": "ONNX Runtime backend",
            "tensorrt_plan": "TensorRT plan",
        }.get(self.backend, self.backend)
        return "{}: {}, {}, max_batch_size {}, from {}".format(
            self.name, what, self.kind, self.max_batch, self.source
        )


def container_command(repository, http_port=8000, grpc_port=8001, image=CONTAINER):
    """The command that serves ``repository`` on a GPU server with Triton's own release (ONNX
    Runtime and TensorRT backends), published on that server's loopback only."""
    return (
        "docker run --rm --gpus=1 --ipc=host -p 127.0.0.1:{h}:8000 -p 127.0.0.1:{g}:8001 "
        '-v "{repo}":/models {image} tritonserver --model-repository=/models'.format(
            h=http_port, g=grpc_port, repo=os.path.abspath(repository), image=image
        )
    )


# --- reading a config.pbtxt (only the fields segserve needs; no protobuf on this side) ---------


def _field(text, key):
    match = re.search(r"^\s*{}:\s*\"?([^\"\s]+)\"?\s*$".format(key), text, re.M)
    return match.group(1) if match else None


def _string_literal(text, start):
    """The protobuf text-format string literal starting at ``text[start]`` (a quote)."""
    quote, i, out = text[start], start + 1, []
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\"}
    while i < len(text) and text[i] != quote:
        if text[i] == "\\":
            nxt = text[i + 1]
            if nxt in escapes:
                out.append(escapes[nxt])
                i += 2
                continue
            octal = re.match(r"[0-7]{1,3}", text[i + 1 : i + 4])
            if octal:
                out.append(chr(int(octal.group(0), 8)))
                i += 1 + len(octal.group(0))
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def read_config(path):
    """{name, backend, kind, max_batch, count, queue_delay_us, card} of one config.pbtxt."""
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    platform = _field(text, "platform")
    backend = "tensorrt_plan" if platform == "tensorrt_plan" else _field(text, "backend")
    card = None
    match = re.search(
        r"key:\s*\"{}\"\s*value\s*\{{\s*string_value:\s*(\")".format(
            re.escape(triton_repo.CARD_PARAMETER)
        ),
        text,
    )
    if match:
        card = card_mod.from_json(_string_literal(text, match.start(1)), path)
    kinds = re.findall(r"kind:\s*(KIND_\w+)", text)
    return {
        "name": _field(text, "name"),
        "backend": backend or platform,
        "kind": kinds[0] if kinds else "KIND_AUTO",
        "max_batch": int(_field(text, "max_batch_size") or 0),
        "count": int(_field(text, "count") or 1),
        "queue_delay_us": int(_field(text, "max_queue_delay_microseconds") or 100),
        "card": card,
    }


# --- the source -> a servable repository ------------------------------------------------------


def _model_dirs(folder):
    names = sorted(os.listdir(folder))
    return [n for n in names if os.path.isfile(os.path.join(folder, n, "config.pbtxt"))]


def _onnx_of_export_folder(folder):
    graphs = sorted(n for n in os.listdir(folder) if n.endswith(".onnx"))
    if not graphs:
        raise SegDeployError(
            "{} holds neither a Triton repository (<name>/config.pbtxt) nor an ONNX graph; "
            "give segserve the .onnx file or the folder segexport wrote".format(folder)
        )
    base = [n for n in graphs if "." not in n[: -len(".onnx")]]
    if len(graphs) == 1 or len(base) == 1:
        return os.path.join(folder, (graphs if len(graphs) == 1 else base)[0])
    raise SegDeployError(
        "{} holds several ONNX graphs ({}); name the one to serve".format(folder, ", ".join(graphs))
    )


def _onnx_for(path):
    """The ONNX file to serve for an engine file ``path``."""
    stem, suffix = os.path.splitext(path)
    suffix = suffix.lower()
    if suffix == ".onnx":
        return path
    if suffix in (".ort", ".xml"):
        beside = stem + ".onnx"
        if os.path.isfile(beside):
            return beside
        raise SegDeployError(
            "Triton serves the ONNX graph, not {} (an engine for this CPU), and {} is not beside "
            "it; give segserve the .onnx file segexport wrote".format(path, beside)
        )
    raise SegDeployError(
        "segserve takes an ONNX file, a segexport folder or a Triton repository, got {}".format(
            path
        )
    )


def _plan_error(what, repository=None):
    where = repository or "a repository written by segbuild --triton on that GPU"
    return SegDeployError(
        "{} needs Triton's TensorRT backend on a GPU, which this server or machine lacks; on "
        "the GPU server run: {}".format(what, container_command(where))
    )


def _choose_backend(install):
    return "onnxruntime" if "onnxruntime" in install.backends else "python"


def _write(
    repo,
    onnx_path,
    card,
    name,
    install,
    has_gpu,
    max_batch=None,
    instances=1,
    queue_delay_us=100,
    source=None,
):
    backend = _choose_backend(install)
    device = triton_repo.default_device(backend, has_gpu)
    result = triton_repo.write_model_repository(
        repo,
        onnx_path,
        card=card,
        name=name,
        backend=backend,
        device=device,
        max_batch=max_batch,
        instances=instances,
        queue_delay_us=queue_delay_us,
        accelerator="none" if backend == "python" else "auto",
    )
    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    return Model(
        os.path.basename(result["model_dir"]),
        backend,
        kind,
        result["max_batch_size"],
        source or onnx_path,
    )


def _servable(config, install, has_gpu):
    """None when the server at hand loads this model as it is, else why not."""
    backend = config["backend"]
    needed = "tensorrt" if backend == "tensorrt_plan" else backend
    if needed not in install.backends:
        return "this tritonserver has no {} backend".format(needed)
    if config["kind"] == "KIND_GPU" and not has_gpu:
        return "its instances are KIND_GPU and this machine has no GPU"
    return None


def prepare(source, workdir, install, has_gpu, name=None):
    """(repository folder to serve, [Model], [note lines]) for ``source``; what has to be
    written goes under ``workdir`` (removed when the server stops)."""
    source = str(source)
    if not os.path.exists(source):
        raise SegDeployError("{} does not exist".format(source))
    repo = os.path.join(workdir, "repository")
    notes = []
    if os.path.isfile(source):
        if os.path.splitext(source)[1].lower() in _PLAN_SUFFIXES:
            raise _plan_error("the TensorRT plan {}".format(source))
        onnx_path = _onnx_for(source)
        if onnx_path != source:
            notes.append("serving {} (the ONNX graph beside {})".format(onnx_path, source))
        os.makedirs(repo)
        card = card_mod.read_sidecar(onnx_path)
        return repo, [_write(repo, onnx_path, card, name, install, has_gpu)], notes
    models = _model_dirs(source)
    if not models:
        onnx_path = _onnx_of_export_folder(source)
        notes.append("serving {}".format(onnx_path))
        os.makedirs(repo)
        card = card_mod.read_sidecar(onnx_path)
        return repo, [_write(repo, onnx_path, card, name, install, has_gpu)], notes
    if name is not None:
        raise SegDeployError(
            "--name renames one model; {} is a repository: drop --name".format(source)
        )
    configs = [(m, read_config(os.path.join(source, m, "config.pbtxt"))) for m in models]
    if all(_servable(config, install, has_gpu) is None for _, config in configs):
        served = [
            Model(m, c["backend"], c["kind"], c["max_batch"], os.path.join(source, m))
            for m, c in configs
        ]
        return source, served, notes
    os.makedirs(repo)
    served = []
    for model, config in configs:
        folder = os.path.join(source, model)
        why = _servable(config, install, has_gpu)
        if why is None:
            os.symlink(os.path.abspath(folder), os.path.join(repo, model))
            served.append(
                Model(model, config["backend"], config["kind"], config["max_batch"], folder)
            )
            continue
        if config["backend"] == "tensorrt_plan":
            raise _plan_error("model {} (a TensorRT plan)".format(model), source)
        versions = sorted((v for v in os.listdir(folder) if v.isdigit()), key=int, reverse=True)
        onnx_path = next(
            (
                os.path.join(folder, v, "model.onnx")
                for v in versions
                if os.path.isfile(os.path.join(folder, v, "model.onnx"))
            ),
            None,
        )
        if onnx_path is None or config["card"] is None:
            raise SegDeployError(
                "model {} in {} cannot be served here ({}) and has no model.onnx with a "
                "segdeploy card to rewrite it from".format(model, source, why)
            )
        served.append(
            _write(
                repo,
                onnx_path,
                config["card"],
                model,
                install,
                has_gpu,
                max_batch=config["max_batch"],
                instances=config["count"],
                queue_delay_us=config["queue_delay_us"],
                source=folder,
            )
        )
        notes.append(
            "{}: {}, so it runs in the Python backend on the CPU (a copy in the temporary "
            "folder; {} is unchanged)".format(model, why, source)
        )
    return repo, served, notes
