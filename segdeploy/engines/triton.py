"""Triton Inference Server model repositories: an engine and its model card -> a servable model.

    DIR/<name>/config.pbtxt
    DIR/<name>/1/model.plan             platform "tensorrt_plan" (built on the serving GPU)
    DIR/<name>/1/model.onnx             backend "onnxruntime" (+ TensorRT / OpenVINO accelerator)
    DIR/<name>/1/model.onnx + model.py  backend "python": ONNX Runtime inside Triton's Python
                                        backend (CPU-only Triton builds, e.g. nvidia-pytriton's)

The config states what the engine takes and returns (names, data types, dims from the card and
the engine), the batching (``max_batch_size``, ``dynamic_batching`` with preferred sizes and a
queue delay), the instances (``instance_group``), a warm-up request, and carries the whole model
card as the parameter ``segdeploy.card``: ``Runtime("grpc://host:8001/<name>")`` reads it back
from the server and needs nothing else. The text is written here without protobuf (the device side
stays light); the tests parse every variant with Triton's own schema (``model_config_pb2``).

``write_model_repository`` is a plain function so that ``segexport --triton`` and the device-side
``segbuild --triton`` share it. Python 3.6 compatible.
"""

import os
import shutil

from .. import card as card_mod
from .._io import atomic_path, check_writable_dir, write_bytes
from ..errors import EngineError, SegDeployError

BACKENDS = ("tensorrt_plan", "onnxruntime", "python")
CARD_PARAMETER = "segdeploy.card"

_TRITON_TYPES = {
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bool": "TYPE_BOOL",
}


def machine_has_gpu():
    """Whether this machine has an NVIDIA GPU that a server started here would see: a CUDA
    device node (``/dev/nvidia0``; ``/dev/nvhost-ctrl-gpu`` on a Jetson) or a GPU under the
    driver's ``/proc`` folder, and ``CUDA_VISIBLE_DEVICES`` not hiding them all. No CUDA library
    is loaded: the repository writer and segserve ask this on hosts without one."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return False
    if os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvhost-ctrl-gpu"):
        return True
    gpus = "/proc/driver/nvidia/gpus"
    return os.path.isdir(gpus) and bool(os.listdir(gpus))


def default_device(backend, has_gpu=None):
    """The instance kind a model gets when none is asked for: a plan runs on a GPU, the Python
    backend model on the CPU, and ONNX Runtime where this machine computes (gpu when it has one,
    else cpu: a KIND_GPU instance fails to load on a CPU-only server)."""
    if backend == "tensorrt_plan":
        return "gpu"
    if backend == "python":
        return "cpu"
    if has_gpu is None:
        has_gpu = machine_has_gpu()
    return "gpu" if has_gpu else "cpu"


def backend_for_engine(engine_path):
    """The repository backend an engine file goes with: a plan -> tensorrt_plan, ONNX ->
    onnxruntime."""
    suffix = os.path.splitext(str(engine_path))[1].lower()
    if suffix in (".plan", ".engine"):
        return "tensorrt_plan"
    if suffix == ".onnx":
        return "onnxruntime"
    raise SegDeployError(
        "a Triton repository takes a TensorRT plan (.plan/.engine) or an ONNX file (.onnx), got "
        "{}; ONNX Runtime's .ort files are optimized for the CPU that built them, so give the "
        ".onnx next to it".format(engine_path)
    )


def _quote(text):
    """A protobuf text-format string literal."""
    out = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + out + '"'


def _dims(values):
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]"


def tensor_dims(card, max_batch):
    """(input dims, output dims) as Triton wants them: without the batch axis when
    ``max_batch`` > 0, with a batch of 1 otherwise; -1 for dynamic height/width."""
    cin, cout = card["input"], card["output"]
    dynamic = cin.get("dynamic")
    h, w = (-1, -1) if dynamic else (int(cin["height"]), int(cin["width"]))
    if card_mod.takes_uint8_frames(card):  # N x H x W x 3 uint8 frames
        inp = [h, w, 3]
    else:
        inp = [3, h, w]
    head = card_mod.fused_head(card)
    if head is not None:  # segexport --head fused: low-resolution logits, the client's head
        lh, lw = head.get("logits_size") or (-1, -1)
        out = [int(card["model"]["num_classes"]), -1 if dynamic else lh, -1 if dynamic else lw]
    elif cout.get("kind") == "logits":
        out = [int(card["model"]["num_classes"]), h, w]
    else:
        out = [h, w]
    if not max_batch:
        inp, out = [1] + inp, [1] + out
    return inp, out


def _output_dtype(card, backend):
    dtype = str(card["output"].get("dtype") or "int64")
    if backend == "python" and card["output"].get("kind") == "labels":
        # The Python backend model sends labels as bytes (classes <= 256): 1 byte per pixel back
        # instead of the graph's 8.
        if int(card["model"]["num_classes"]) <= 256:
            return "uint8"
    return dtype


def _triton_type(dtype, what):
    try:
        return _TRITON_TYPES[str(dtype)]
    except KeyError:
        raise SegDeployError(
            "{} has data type {}, which Triton cannot take".format(what, dtype)
        ) from None


def config_text(
    card,
    name,
    backend,
    max_batch=8,
    preferred_batch_sizes=None,
    queue_delay_us=100,
    instances=1,
    device="gpu",
    accelerator=None,
    warmup=True,
    threads=None,
):
    """The ``config.pbtxt`` text of one model (see ``write_model_repository``)."""
    if backend not in BACKENDS:
        raise SegDeployError(
            "Triton backend must be one of {}, got {!r}".format(", ".join(BACKENDS), backend)
        )
    if device not in ("gpu", "cpu"):
        raise SegDeployError("Triton instance device must be gpu or cpu, got {!r}".format(device))
    if backend == "tensorrt_plan" and device != "gpu":
        raise SegDeployError("a TensorRT plan runs on a GPU only; drop the cpu instance kind")
    max_batch = int(max_batch or 0)
    if max_batch < 0:
        raise SegDeployError("max_batch_size must be >= 0, got {}".format(max_batch))
    cin, cout = card["input"], card["output"]
    in_dims, out_dims = tensor_dims(card, max_batch)
    in_type = _triton_type(cin.get("dtype", "float32"), "input {!r}".format(cin["name"]))
    out_type = _triton_type(_output_dtype(card, backend), "output {!r}".format(cout["name"]))
    lines = ["name: {}".format(_quote(name))]
    if backend == "tensorrt_plan":
        lines.append('platform: "tensorrt_plan"')
    else:
        lines.append("backend: {}".format(_quote(backend)))
    lines.append("max_batch_size: {}".format(max_batch))
    lines += [
        "input [",
        "  {",
        "    name: {}".format(_quote(cin["name"])),
        "    data_type: {}".format(in_type),
        "    dims: {}".format(_dims(in_dims)),
        "  }",
        "]",
        "output [",
        "  {",
        "    name: {}".format(_quote(cout["name"])),
        "    data_type: {}".format(out_type),
        "    dims: {}".format(_dims(out_dims)),
        "  }",
        "]",
    ]
    if max_batch > 0:
        sizes = preferred_batch_sizes
        if sizes is None:
            sizes = sorted({s for s in (max_batch // 2, max_batch) if s >= 2})
        bad = [s for s in sizes if not 1 <= int(s) <= max_batch]
        if bad:
            raise SegDeployError(
                "preferred batch sizes {} exceed max_batch_size {}".format(bad, max_batch)
            )
        lines.append("dynamic_batching {")
        if sizes:
            lines.append("  preferred_batch_size: {}".format(_dims(sizes)))
        lines.append("  max_queue_delay_microseconds: {}".format(int(queue_delay_us)))
        lines.append("}")
    lines += [
        "instance_group [",
        "  {",
        "    count: {}".format(int(instances)),
        "    kind: {}".format("KIND_GPU" if device == "gpu" else "KIND_CPU"),
        "  }",
        "]",
    ]
    if backend == "onnxruntime" and accelerator:
        lines += _accelerator_lines(accelerator, device, card)
    if warmup:
        fixed = [d for d in in_dims if d > 0]
        if len(fixed) == len(in_dims):  # dynamic sizes: no single warm-up shape to send
            lines += [
                "model_warmup [",
                "  {",
                '    name: "zero_frame"',
                "    batch_size: 1",
                "    inputs {",
                "      key: {}".format(_quote(cin["name"])),
                "      value {",
                "        data_type: {}".format(in_type),
                "        dims: {}".format(_dims(in_dims)),
                "        zero_data: true",
                "      }",
                "    }",
                "  }",
                "]",
            ]
    params = [(CARD_PARAMETER, card_mod.to_json(card))]
    if threads:
        params.append(("segdeploy.threads", str(int(threads))))
    for key, value in params:
        lines += [
            "parameters {",
            "  key: {}".format(_quote(key)),
            "  value {{ string_value: {} }}".format(_quote(value)),
            "}",
        ]
    return "\n".join(lines) + "\n"


def _accelerator_lines(accelerator, device, card):
    accelerator = str(accelerator).lower()
    if accelerator == "tensorrt":
        if device != "gpu":
            raise SegDeployError("the TensorRT accelerator needs gpu instances")
        precision = "FP16" if (card.get("engine") or {}).get("precision") == "fp16" else "FP32"
        precision = "FP16" if card.get("precision") == "fp16" else precision
        return [
            "optimization {",
            "  execution_accelerators {",
            "    gpu_execution_accelerator [",
            "      {",
            '        name: "tensorrt"',
            '        parameters { key: "precision_mode" value: ' + _quote(precision) + " }",
            '        parameters { key: "max_workspace_size_bytes" value: "1073741824" }',
            "      }",
            "    ]",
            "  }",
            "}",
        ]
    if accelerator == "openvino":
        if device != "cpu":
            raise SegDeployError("the OpenVINO accelerator needs cpu instances")
        return [
            "optimization {",
            "  execution_accelerators {",
            '    cpu_execution_accelerator [ { name: "openvino" } ]',
            "  }",
            "}",
        ]
    raise SegDeployError(
        "accelerator must be tensorrt, openvino or none, got {!r}".format(accelerator)
    )


# The Python backend model: ONNX Runtime on the version folder's model.onnx. Requests that the
# dynamic batcher hands over together are concatenated and run as one batch.
PYTHON_MODEL = '''"""Triton Python backend model written by segdeploy: ONNX Runtime runs model.onnx.

Requests that Triton's dynamic batcher hands over together run as one batch; labels go back as
uint8 when the config says so (1 byte per pixel instead of the graph's int64).
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        options = onnxruntime.SessionOptions()
        threads = int(params.get("segdeploy.threads") or 0)
        if threads:
            options.intra_op_num_threads = threads
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = onnxruntime.InferenceSession(
            path, options, providers=["CPUExecutionProvider"]
        )
        self.input_name = config["input"][0]["name"]
        self.outputs = [
            (o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]
        ]
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def _run(self, batch):
        names = [name for name, _ in self.outputs]
        return self.session.run(names, {self.input_name: batch})

    def execute(self, requests):
        name = self.input_name
        arrays = [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
        try:
            if self.batched and len(arrays) > 1:
                merged = self._run(np.concatenate(arrays))
                results, start = [], 0
                for array in arrays:
                    results.append([v[start : start + len(array)] for v in merged])
                    start += len(array)
            else:
                results = [self._run(array) for array in arrays]
        except Exception as exc:
            error = pb_utils.TritonError("ONNX Runtime failed: {}".format(exc))
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses = []
        for values in results:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(value).astype(dtype, copy=False))
                for (name, dtype), value in zip(self.outputs, values)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self):
        self.session = None
'''


def write_model_repository(
    repo_dir,
    engine_path,
    card=None,
    name=None,
    backend=None,
    max_batch=None,
    preferred_batch_sizes=None,
    queue_delay_us=100,
    instances=1,
    device=None,
    accelerator="auto",
    warmup=True,
    version=1,
    threads=None,
):
    """Write ``repo_dir/<name>/config.pbtxt`` and ``repo_dir/<name>/<version>/model.*``.

    ``engine_path``: a TensorRT plan or an ONNX file; ``card``: its model card (default: the
    sidecar next to it). ``backend``: tensorrt_plan | onnxruntime | python (default: by the
    file's suffix). ``max_batch``: Triton's max_batch_size (default: the card's ``max_batch``,
    0 when the graph's batch axis is fixed: no batching). ``device``: gpu | cpu instances
    (default: ``default_device``, i.e. gpu for a plan, cpu for python, and for onnxruntime
    gpu when this machine has one, else cpu). ``accelerator``: for onnxruntime, tensorrt
    (gpu) / openvino (cpu) / none; auto picks by device. Returns {"model_dir", "config",
    "model_file", "text", "backend", "device", "max_batch_size"}. An existing model folder of
    that name is replaced whole, never left half-written.
    """
    engine_path = str(engine_path)
    if not os.path.isfile(engine_path):
        raise EngineError("engine file {} does not exist".format(engine_path))
    if card is None:
        card = card_mod.read_sidecar(engine_path)
    card_mod.validate(card, "the card of {}".format(engine_path))
    backend = backend or backend_for_engine(engine_path)
    suffix = os.path.splitext(engine_path)[1].lower()
    if backend == "tensorrt_plan" and suffix not in (".plan", ".engine"):
        raise SegDeployError(
            "backend tensorrt_plan needs a TensorRT plan, got {}".format(engine_path)
        )
    if backend in ("onnxruntime", "python") and suffix != ".onnx":
        raise SegDeployError(
            "backend {} needs the ONNX file (.onnx), got {}".format(backend, engine_path)
        )
    graph_batch = card["input"].get("max_batch")
    if max_batch is None:
        max_batch = graph_batch or 0
    elif max_batch and not graph_batch:
        raise SegDeployError(
            "max_batch_size {} needs a graph with a dynamic batch axis; re-export with "
            "segexport --max-batch {} (this one takes batches of 1)".format(max_batch, max_batch)
        )
    elif max_batch and backend == "tensorrt_plan" and max_batch > graph_batch:
        raise SegDeployError(
            "max_batch_size {} exceeds the plan's batch range 1..{}; rebuild the plan for "
            "it".format(max_batch, graph_batch)
        )
    if device is None:
        device = default_device(backend)
    if accelerator == "auto":
        accelerator = "tensorrt" if device == "gpu" else "openvino"
    if accelerator in (None, "none"):
        accelerator = None
    name = name or card["model"]["name"]
    if not name or "/" in name or name.startswith("."):
        raise SegDeployError("model name {!r} cannot be a repository folder name".format(name))
    text = config_text(
        card,
        name,
        backend,
        max_batch=max_batch,
        preferred_batch_sizes=preferred_batch_sizes,
        queue_delay_us=queue_delay_us,
        instances=instances,
        device=device,
        accelerator=accelerator if backend == "onnxruntime" else None,
        warmup=warmup,
        threads=threads,
    )
    check_writable_dir(str(repo_dir))
    model_dir = os.path.join(str(repo_dir), name)
    # Build the model folder beside its final place, then swap it in.
    staging = model_dir + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    version_dir = os.path.join(staging, str(int(version)))
    os.makedirs(version_dir)
    try:
        model_file = "model.plan" if backend == "tensorrt_plan" else "model.onnx"
        with atomic_path(os.path.join(version_dir, model_file)) as tmp:
            shutil.copyfile(engine_path, tmp)
        if backend == "python":
            write_bytes(os.path.join(version_dir, "model.py"), PYTHON_MODEL.encode("utf-8"))
        write_bytes(os.path.join(staging, "config.pbtxt"), text.encode("utf-8"))
        if os.path.isdir(model_dir):
            shutil.rmtree(model_dir)
        os.rename(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "model_dir": model_dir,
        "config": os.path.join(model_dir, "config.pbtxt"),
        "model_file": os.path.join(model_dir, str(int(version)), model_file),
        "text": text,
        "backend": backend,
        "device": device,
        "max_batch_size": max_batch,
    }
