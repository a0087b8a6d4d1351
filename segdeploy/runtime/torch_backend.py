"""PyTorch backend: the reference. A zoo name (+ checkpoint), an exported program, or a module.

    TorchEngine("regseg", checkpoint="cityscapes.pth", height=512, width=1024, device="cuda",
                fp16=True, channels_last=True, cuda_graphs=True)

The engine appends the argmax to the model, as the exported graphs do, and returns ``labels``
(N, H, W) uint8; ``output="logits"`` returns (N, K, H, W) float32 instead. BatchNorm is folded
(``fold_bn=True``) when segdeploy's exporter is installed, as SwiftNet's protocol assumes.

Global state, stated because torch has some: ``threads`` calls ``torch.set_num_threads``, which
is process-wide in PyTorch; it is applied only when given. ``cudnn_benchmark`` sets
``torch.backends.cudnn.benchmark`` for the duration of each run and restores it.
``infer`` is serialized by a lock (the CUDA graph and its static buffers are shared).
Python 3.6 compatible: torch is imported when an engine is created.
"""

import os
import threading

import numpy as np

from .._deps import require
from ..errors import EngineError, SegDeployError
from .backend import Engine, TensorSpec

PROGRAM_SUFFIXES = (".pt2",)


def is_torch_source(path):
    """True when ``path`` names a zoo model or an exported PyTorch program, not an engine file."""
    text = str(path)
    if text.lower().endswith(PROGRAM_SUFFIXES):
        return True
    return not os.path.splitext(text)[1] and not os.path.exists(text)


def check_program(path, unsafe=False):
    """EngineError unless the exported program ``path`` exists and the caller opted in.

    ``torch.export.load`` unpickles parts of a ``.pt2`` archive and falls back to full (code-
    running) unpickling when the safe load fails, so opening one runs whatever code it carries.
    segdeploy opens ``.pt2`` files only with ``unsafe=True`` (``--unsafe-pickle``), and checks
    this before torch is imported.
    """
    if not os.path.isfile(path):
        from .._io import missing_file

        raise EngineError(missing_file(path, "exported program"))
    if not unsafe:
        raise EngineError(
            "{} is an exported PyTorch program, and loading one can run code stored in it "
            "(torch.export.load unpickles); if you trust its source pass unsafe=True "
            "(--unsafe-pickle in segbench), or export the model with segexport and "
            "run the .onnx".format(path)
        )


def _card_for(spec, num_classes, height, width, output):
    """The model card of a zoo model, as segexport would write it."""
    from ..models.modelcard import make_card

    return make_card(spec, num_classes, height, width, output)


class TorchEngine(Engine):
    """A PyTorch model behind the Engine interface (see the module docstring)."""

    backend = "torch"

    def __init__(
        self,
        source,
        device=None,
        checkpoint=None,
        height=None,
        width=None,
        num_classes=None,
        output="labels",
        fp16=False,
        channels_last=True,
        cuda_graphs=False,
        fold_bn=True,
        threads=None,
        cudnn_benchmark=True,
        allow_unsafe_pickle=False,
        unsafe=False,
    ):
        super(TorchEngine, self).__init__()
        torch = require("torch", "the PyTorch backend")
        self._torch = torch
        if output not in ("labels", "logits"):
            raise EngineError("output must be 'labels' or 'logits', got {!r}".format(output))
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.device_kind = self.device.type
        if self.device_kind == "cuda" and not torch.cuda.is_available():
            raise EngineError(
                "device {!r} requested but this torch has no CUDA device".format(str(self.device))
            )
        if fp16 and self.device_kind != "cuda":
            raise EngineError("fp16 needs a CUDA device; on the CPU use fp32")
        if cuda_graphs and self.device_kind != "cuda":
            raise EngineError("cuda_graphs needs a CUDA device")
        model, spec = self._load(source, checkpoint, num_classes, allow_unsafe_pickle or unsafe)
        if fold_bn:
            from ..models.fold import fold_batchnorm

            model = fold_batchnorm(model)
        self.path = str(source) if not hasattr(source, "forward") else type(source).__name__
        self.fp16, self.channels_last, self.cuda_graphs = fp16, channels_last, cuda_graphs
        self.cudnn_benchmark = cudnn_benchmark
        self.output_kind = output
        model = model.eval().to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if fp16:
            model = model.half()
        self.model = model
        self.spec = spec
        num_classes = num_classes or (spec.num_classes if spec is not None else None)
        self.card = None
        if spec is not None and height and width:
            self.card = _card_for(spec, num_classes, int(height), int(width), output)
        self._inputs = [TensorSpec("image", (-1, 3, -1, -1), np.dtype(np.float32))]
        out_dtype = np.dtype(np.uint8) if output == "labels" else np.dtype(np.float32)
        out_shape = (-1, -1, -1) if output == "labels" else (-1, -1, -1, -1)
        self._outputs = [TensorSpec(output, out_shape, out_dtype)]
        self.options = {
            "device": str(self.device),
            "fp16": fp16,
            "channels_last": channels_last,
            "cuda_graphs": cuda_graphs,
            "fold_bn": fold_bn,
            "threads": threads,
        }
        self._lock = threading.Lock()
        self._graph = None  # (input shape, CUDAGraph, static input, static output)
        self._pinned = None

    def _load(self, source, checkpoint, num_classes, allow_unsafe_pickle):
        torch = self._torch
        if hasattr(source, "forward"):  # an nn.Module: used as given
            return source, getattr(source, "segdeploy_spec", None)
        text = str(source)
        if text.lower().endswith(PROGRAM_SUFFIXES):
            check_program(text, allow_unsafe_pickle)
            try:
                program = torch.export.load(text)
            except Exception as exc:
                first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
                raise EngineError(
                    "cannot load exported program {}: {}".format(text, first or type(exc).__name__)
                ) from None
            return program.module(), None
        from .. import models

        spec = models.get_spec(text)
        kwargs = {"num_classes": num_classes} if num_classes else {}
        model = models.build(text, **kwargs)
        if checkpoint:
            models.load_checkpoint(model, str(checkpoint), allow_unsafe_pickle=allow_unsafe_pickle)
        return model, spec

    def _forward(self, x):
        # x: (N, 3, H, W) on the device -> labels (N, H, W) uint8 or logits (N, K, H, W) float32
        logits = self.model(x)
        if self.output_kind == "labels":
            return logits.argmax(1).to(self._torch.uint8)
        return logits.float()

    def to_device(self, array):
        """(N, 3, H, W) float32 numpy -> a device tensor in the model's dtype and memory format."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(array))
        if self.device_kind == "cuda":
            # Staging through a pinned buffer makes the copy asynchronous and faster.
            if self._pinned is None or tuple(self._pinned.shape) != tuple(x.shape):
                self._pinned = torch.empty(x.shape, dtype=x.dtype).pin_memory()
            self._pinned.copy_(x)
            x = self._pinned.to(self.device, non_blocking=True)
        if self.fp16:
            x = x.half()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def run_on_device(self, x):
        """Forward (+ argmax) of a device tensor; the result stays on the device (no sync)."""
        torch = self._torch
        saved = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = bool(self.cudnn_benchmark)
        try:
            with torch.inference_mode():
                if self.cuda_graphs:
                    return self._replay(x)
                return self._forward(x)
        finally:
            torch.backends.cudnn.benchmark = saved

    def _replay(self, x):
        torch = self._torch
        if self._graph is None or self._graph[0] != tuple(x.shape):
            static_in = x.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up outside the graph, as capture requires
                for _ in range(3):
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
            self._graph = (tuple(x.shape), graph, static_in, static_out)
        _, graph, static_in, static_out = self._graph
        static_in.copy_(x)
        graph.replay()
        return static_out

    def synchronize(self):
        if self.device_kind == "cuda":
            self._torch.cuda.synchronize(self.device)

    def _infer_impl(self, feeds):
        with self._lock:
            x = self.to_device(feeds["image"])
            y = self.run_on_device(x)
            return {self.output_kind: y.cpu().numpy()}

    def reset_peak_memory(self):
        if self.device_kind == "cuda":
            self._torch.cuda.reset_peak_memory_stats(self.device)

    def peak_device_memory(self):
        """Bytes of device memory at the peak since the last reset (None on the CPU)."""
        if self.device_kind == "cuda":
            return int(self._torch.cuda.max_memory_allocated(self.device))
        return None

    def versions(self):
        return {"torch": self._torch.__version__}

    def _close_impl(self):
        self._graph = None
        self._pinned = None
        self.model = None
        if self.device_kind == "cuda":
            self._torch.cuda.empty_cache()


def open_torch(source, **options):
    """TorchEngine(source, ...), turning a bad keyword into a one-line SegDeployError."""
    try:
        return TorchEngine(source, **options)
    except TypeError as exc:
        raise SegDeployError("bad option for the PyTorch backend: {}".format(exc)) from None
