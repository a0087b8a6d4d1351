"""ONNX export with the TorchScript-based exporter, graph clean-up and the in-graph label head.

    model (folded) ──► torch.onnx.export (opset 13, static or dynamic H/W) ──► logits graph
        ──► onnxslim (constant folding, shape inference, dead nodes) ──► onnx.checker
        ──► [labels] append ArgMax(axis=1, keepdims=0): (N,K,H,W) float -> (N,H,W) int64
        ──► model card into metadata_props ──► atomic write

Why these choices:
- TorchScript exporter (``dynamo=False``): its opset-13 output parses on TensorRT 8.2 (Jetson TX2),
  the oldest target; the torch.export-based exporter emits opset 18+.
- onnxslim for clean-up: maintained, pure Python wheels for every current Python (onnxsim has no
  wheels for recent Pythons and needs a C++ build), and it folds the shape arithmetic the exporter
  leaves around ``F.interpolate(size=x.shape[-2:])`` into constants for static shapes.
- The ArgMax head is appended to the cleaned graph instead of exported from torch so that the
  logits graph verified against PyTorch is exactly the graph the head is put on.
"""

import time
import warnings

from .._io import atomic_path
from ..card import store_onnx_card as store_card
from ..errors import ExportError

INPUT_NAME = "image"
LOGITS_NAME = "logits"
LABELS_NAME = "labels"

# The TorchScript exporter's bilinear Resize with align_corners=False needs opset 11.
MIN_OPSET = 11


def max_exporter_opset():
    """Highest opset the installed TorchScript exporter writes."""
    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as top
    except ImportError:  # older torch
        from torch.onnx._constants import ONNX_MAX_OPSET as top
    return int(top)


def check_opset(opset, target_max=None, target=None):
    """Raise ExportError unless ``opset`` can be exported and parsed by the target."""
    top = max_exporter_opset()
    if not MIN_OPSET <= opset <= top:
        raise ExportError(
            "--opset {} is outside what the exporter supports here ({}..{}); use 13 for Jetson "
            "TX2 (TensorRT 8.2) or up to {} for newer stacks".format(opset, MIN_OPSET, top, top)
        )
    if target_max is not None and opset > target_max:
        raise ExportError(
            "--opset {} is newer than {} parses (at most {}); use --opset {}".format(
                opset, target, target_max, target_max
            )
        )


def _export_logits(model, path, height, width, opset, dynamic, dynamic_batch=False):
    import torch

    x = torch.zeros(1, 3, height, width)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {
            INPUT_NAME: {2: "height", 3: "width"},
            LOGITS_NAME: {2: "height", 3: "width"},
        }
    if dynamic_batch:  # a serving graph: Triton's dynamic batcher stacks requests on axis 0
        dynamic_axes = dynamic_axes or {INPUT_NAME: {}, LOGITS_NAME: {}}
        for axes in dynamic_axes.values():
            axes[0] = "batch"
    # The exporter's TracerWarnings and deprecation notes are noise here: whatever the trace
    # baked in is caught by the numerical verification that follows.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[LOGITS_NAME],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


def clean_graph(model_proto):
    """Constant folding, shape inference and dead-node removal (onnxslim), then the checker."""
    import onnx
    import onnxslim

    slim = onnxslim.slim(model_proto)
    onnx.checker.check_model(slim, full_check=True)
    return slim


def append_argmax(model_proto, logits=LOGITS_NAME, labels=LABELS_NAME):
    """Make the graph return ``labels = ArgMax(logits, axis=1, keepdims=0)`` (int64, N x H x W).

    ``logits`` stays a named tensor inside the graph, so verification can expose it again.
    """
    from onnx import TensorProto, helper

    graph = model_proto.graph
    out = next(o for o in graph.output if o.name == logits)
    dims = [d for d in out.type.tensor_type.shape.dim]
    shape = [(d.dim_param or d.dim_value) for i, d in enumerate(dims) if i != 1]
    graph.node.append(
        helper.make_node("ArgMax", [logits], [labels], name="labels_argmax", axis=1, keepdims=0)
    )
    graph.output.remove(out)
    graph.output.append(helper.make_tensor_value_info(labels, TensorProto.INT64, shape))
    return model_proto


def set_card(model_proto, card):
    """Store ``card`` (as ``store_card``) and mark segdeploy as the model's producer."""
    store_card(model_proto, card)
    model_proto.producer_name = "segdeploy"
    return model_proto


def save_model(model_proto, path):
    """Write ``model_proto`` atomically (single file; our models are far below 2 GB)."""
    import onnx

    with atomic_path(path) as tmp:
        onnx.save_model(model_proto, tmp)


def export_onnx(
    model,
    path,
    *,
    height,
    width,
    output="labels",
    opset=13,
    dynamic=None,
    card=None,
    dynamic_batch=False,
):
    """Export ``model`` (use a folded copy) to a cleaned ONNX file at ``path``.

    The input is ``image`` (float32, N x 3 x H x W, normalized as the card says); the output is
    ``labels`` (int64 N x H x W) or ``logits`` (float32 N x K x H x W). ``dynamic`` (any truthy
    value, e.g. a ShapeProfile) makes height and width dynamic; ``dynamic_batch`` the batch axis
    (for servers that batch requests). Returns a dict of timings and the
    in-memory ``onnx.ModelProto`` under ``"model"``.
    """
    import os
    import tempfile

    import onnx

    if output not in ("labels", "logits"):
        raise ExportError("--output must be labels or logits, got {!r}".format(output))
    check_opset(opset)
    timings = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="segexport-") as tmpdir:
        raw_path = os.path.join(tmpdir, "raw.onnx")
        try:
            _export_logits(model, raw_path, height, width, opset, dynamic, dynamic_batch)
        except Exception as exc:
            raise ExportError(
                "torch.onnx.export failed for {}: {}".format(type(model).__name__, exc)
            ) from exc
        raw = onnx.load(raw_path)
    timings["export_s"] = time.perf_counter() - start
    start = time.perf_counter()
    proto = clean_graph(raw)
    if dynamic_batch and not dynamic:
        # The exporter names the resized logits' height/width symbolically once the batch is
        # dynamic; they are the input's, so say so (runtimes then preallocate the outputs).
        for value in proto.graph.output:
            dims = value.type.tensor_type.shape.dim
            for d, size in zip(dims[len(dims) - 2 :], (height, width)):
                d.ClearField("dim_param")
                d.dim_value = size
    if output == "labels":
        proto = append_argmax(proto)
        onnx.checker.check_model(proto)
    timings["clean_s"] = time.perf_counter() - start
    if card is not None:
        set_card(proto, card)
    if path is not None:  # None: the caller verifies first and saves afterwards
        save_model(proto, path)
    timings["model"] = proto
    timings["nodes"] = len(proto.graph.node)
    return timings


def op_histogram(model_proto):
    """{op_type: count} of a graph, for reports and tests."""
    counts = {}
    for node in model_proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
