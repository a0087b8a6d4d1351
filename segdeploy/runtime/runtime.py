"""``Runtime``: an engine file in, label maps out, configured by the model card alone.

    with segdeploy.Runtime("out/regseg.onnx", threads=2) as rt:
        labels = rt.infer(cv2.imread("frame.png"))   # (H, W) uint8 at the frame's size
        cv2.imwrite("overlay.png", rt.overlay(frame, labels, 0.5))

Python 3.6 compatible; imports no backend library until an engine is opened.
"""

import os
import threading

import numpy as np

from .. import card as card_mod
from ..errors import EngineError, FrameError, SegDeployError
from .backend import BACKENDS, Engine, open_engine
from .postprocess import HEAD_TARGETS, Postprocessor, Visualizer, palette_from_card
from .preprocess import FramePacker, Preprocessor, check_frame, read_frame


class Runtime(object):
    """Open an engine and run frames through it: ``infer``, ``infer_batch``, ``colorize``.

    ``path`` picks the backend: ``.onnx`` / ``.ort`` -> ONNX Runtime, ``.plan`` / ``.engine`` ->
    TensorRT, a zoo name (``"regseg"``, with ``checkpoint=``) or an exported program (``.pt2``)
    -> PyTorch; an already opened ``Engine`` is used as given (and closed with the Runtime);
    a server URL (``grpc://host:8001/NAME``, ``http://host:8000/NAME``) -> the model NAME on a
    Triton Inference Server (``segdeploy.runtime.triton_backend``). Graphs exported with
    ``segexport --input uint8`` get the frames as uint8 (resized only) and normalize inside.
    ``.xml`` (OpenVINO IR) -> OpenVINO; ``backend="openvino"`` or ``"onnxruntime"`` picks the
    backend of an ``.onnx`` file (e.g. the INT8 Q/DQ graph in either).
    ``device`` goes to the backend (``"cpu"``, ``"cuda"``, ...; None: the backend's choice).
    ``rgb=True`` declares frames RGB instead of OpenCV's BGR. ``input_size=(h, w)`` sets the
    network resolution where the engine allows it (PyTorch, dynamic ONNX); otherwise the card's.
    Other keyword arguments go to the backend (e.g. ``threads``, ``graph_optimization``, ``fp16``,
    ``plugins`` for TensorRT plugin libraries: the only libraries ever loaded).

    Nothing in a file runs as code: a ``.pt2`` (which ``torch.export.load`` may unpickle) is
    refused unless ``unsafe=True``; a file that disagrees with the ``report.json`` manifest of
    its folder is refused (``segdeploy.manifest.verify_artifact``).

    Pre- and post-processing follow the model card: frames are resized to the network size
    (``interpolation``, bilinear by default), normalized as the card says, and the label map is
    brought back to the frame's size with nearest neighbour. An engine exported with
    ``segexport --head fused`` returns low-resolution logits: the runtime's fused head
    (``segdeploy.runtime.head``) gives the labels the graph's Resize + ArgMax would have;
    ``head="frame"`` makes it upsample straight to the frame's size instead of the network's
    (then no nearest resize of labels), as official evaluations do; ``head="network"`` (default)
    keeps the graph's labels. Frames that are not H x W x 3 uint8
    are converted or refused as documented in ``segdeploy.runtime.preprocess``.

    Lifetime: ``close()`` (idempotent) or a ``with`` block releases the engine; a closed Runtime
    raises EngineError. Buffers (network input, output, scratch) are allocated on first use and
    reused; returned label maps are new arrays unless ``out=`` is given.

    Thread safety: one Runtime may be shared between threads. ``infer``, ``infer_batch`` and
    ``close`` hold one lock, so concurrent calls are serialized (correct, not parallel); for
    parallel inference open one Runtime per thread. ``colorize`` and ``overlay`` touch no shared
    state and run concurrently. There is no module-level state.
    """

    def __init__(
        self,
        path,
        device=None,
        rgb=False,
        input_size=None,
        interpolation="linear",
        unsafe=False,
        backend=None,
        head=None,
        **backend_options,
    ):
        self._lock = threading.Lock()
        self._closed = False
        if not isinstance(path, Engine):
            text = os.fspath(path) if hasattr(path, "__fspath__") else str(path)
            if text.lower().endswith(".pt2"):
                # Refused before torch is imported: opening a .pt2 can run code (see
                # torch_backend.check_program); unsafe=True is the caller's explicit opt-in.
                from .torch_backend import check_program

                check_program(text, unsafe)
                backend_options["unsafe"] = True
            elif os.path.isfile(text):
                # A file whose bytes disagree with the export's manifest is refused here.
                from ..manifest import verify_artifact

                verify_artifact(text)
        if head not in (None,) + HEAD_TARGETS:
            raise SegDeployError(
                "head must be {} (or None: network), got {!r}".format(
                    " or ".join(repr(t) for t in HEAD_TARGETS), head
                )
            )
        if backend is not None:  # e.g. backend="openvino" for an .onnx graph
            backend_options["backend"] = backend
        threads = backend_options.get("threads")  # the fused head uses the engine's threads
        self.engine = self._open(path, device, input_size, backend_options)
        try:
            self._configure(path, rgb, input_size, interpolation, head or "network", threads)
        except BaseException:
            self.engine.close()
            raise

    @staticmethod
    def _open(path, device, input_size, options):
        if isinstance(path, Engine):
            return path
        if device is not None:
            options["device"] = device
        text = os.fspath(path) if hasattr(path, "__fspath__") else str(path)
        if "://" in text:  # grpc://host:8001/model, http://host:8000/model: a Triton server
            from .triton_backend import open_triton

            return open_triton(text, **options)
        if os.path.isdir(text):
            from .._io import missing_file

            raise EngineError(missing_file(text, "engine file"))
        suffix = os.path.splitext(text)[1].lower()
        if suffix in BACKENDS:
            return open_engine(text, **options)
        from .torch_backend import is_torch_source, open_torch

        if is_torch_source(text):
            if input_size is not None:
                options.setdefault("height", int(input_size[0]))
                options.setdefault("width", int(input_size[1]))
            return open_torch(text, **options)
        raise EngineError(
            "cannot tell the engine kind of {}: known suffixes are {}, .pt2 (an "
            "exported PyTorch program), or a zoo model name".format(
                text, ", ".join(sorted(BACKENDS))
            )
        )

    def _configure(self, path, rgb, input_size, interpolation, head, threads=None):
        engine = self.engine
        card = getattr(engine, "card", None)
        if card is None and not isinstance(path, Engine) and os.path.isfile(str(path)):
            try:
                card = card_mod.read_sidecar(str(path))
            except EngineError:  # no sidecar: the message below says both places looked at
                card = None
        if card is None:
            raise EngineError(
                "{} carries no segdeploy model card (ONNX metadata {!r} or a "
                "sidecar .json); export it with segexport, or pass input_size for "
                "a zoo model".format(path, card_mod.METADATA_KEY)
            )
        output_names = [o.name for o in engine.outputs]
        main_output = engine.outputs[0] if engine.outputs else None
        if main_output is not None and card.get("output", {}).get("name") in output_names:
            main_output = engine.outputs[output_names.index(card["output"]["name"])]
        self.card = card_mod.validate(
            card,
            "the model card of {}".format(path),
            input_shape=engine.inputs[0].shape if len(engine.inputs) == 1 else None,
            output_shape=main_output.shape if main_output is not None else None,
        )
        cin, cout = card["input"], card["output"]
        height, width = int(cin["height"]), int(cin["width"])
        if input_size is not None:
            height, width = self._check_size(input_size, cin)
        names = [t.name for t in engine.inputs]
        if len(names) != 1:
            raise EngineError(
                "the runtime drives single-input engines; this one has {}".format(names)
            )
        self.input_name = names[0]
        spec = engine.inputs[0]
        # uint8 graphs (segexport --input uint8) take N x H x W x 3 frames and normalize inside.
        uint8_input = card_mod.takes_uint8_frames(card)
        hw_dims = spec.shape[1:3] if uint8_input else spec.shape[2:]
        fixed = [d for d in hw_dims if isinstance(d, int) and d > 0]
        if len(fixed) == 2 and tuple(fixed) != (height, width):
            raise EngineError(
                "the engine's input is fixed at {}x{}; input_size {}x{} needs an "
                "engine built for it".format(fixed[0], fixed[1], height, width)
            )
        batch = spec.shape[0]
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else None
        if self.max_batch is None:  # a server's dynamic batch axis has an upper bound
            self.max_batch = getattr(engine, "max_batch_size", None) or None
        self.output_name = (
            cout["name"]
            if cout["name"] in [o.name for o in engine.outputs]
            else engine.outputs[0].name
        )
        self.input_size = (height, width)
        self.num_classes = int(card["model"]["num_classes"])
        self.class_names = card["model"].get("class_names")
        self.order = "RGB" if rgb else "BGR"
        if uint8_input:
            self._pre = FramePacker(height, width, cin["channel_order"], self.order, interpolation)
        else:
            self._pre = Preprocessor(
                height,
                width,
                cin["scale"],
                cin["mean"],
                cin["std"],
                cin["channel_order"],
                self.order,
                interpolation,
            )
        self.input_dtype = "uint8" if uint8_input else "float32"
        fused = card_mod.fused_head(card)
        seghead = card_mod.seghead_head(card)  # labels from the SegHead plugin node (int32)
        if head == "frame" and fused is None and cout["kind"] != "logits":
            raise SegDeployError(
                "head='frame' needs an engine that returns logits: {} ends in labels ({}); "
                "export it with segexport --head fused{}".format(
                    path,
                    "its SegHead node computes them"
                    if seghead
                    else "its Resize + ArgMax are in the graph",
                    " and build it without --seghead-plugin" if seghead else "",
                )
            )
        # "graph" when the labels come out of the engine (or full-resolution logits); "seghead"
        # when its SegHead plugin node computes them (segbuild --seghead-plugin)
        self.head = ("fused-" + head) if fused is not None else "graph"
        if seghead is not None:
            self.head = "seghead"
        self._post = Postprocessor(cout["kind"], self.num_classes, fused, head, threads)
        # the fused head's implementation ("compiled", "numpy"), None where the graph has it
        self.head_impl = self._post.head_impl
        self.palette = palette_from_card(card)  # (K, 3) uint8 RGB
        self._vis = Visualizer(self.palette, self.order)

    @staticmethod
    def _check_size(input_size, cin):
        try:
            height, width = (int(v) for v in input_size)
        except (TypeError, ValueError):
            raise SegDeployError(
                "input_size must be (height, width), got {!r}".format(input_size)
            ) from None
        stride = int(cin.get("stride") or 1)
        if height <= 0 or width <= 0 or height % stride or width % stride:
            raise SegDeployError(
                "input_size {}x{} must be positive multiples of the model's "
                "stride {} (e.g. {}x{})".format(
                    height,
                    width,
                    stride,
                    max(stride, height // stride * stride),
                    max(stride, width // stride * stride),
                )
            )
        return height, width

    @property
    def backend(self):
        return self.engine.backend

    def _check_open(self):
        if self._closed:
            raise EngineError("this Runtime is closed")

    def _run(self, batch):
        # batch: (N, 3, h, w) float32 or (N, h, w, 3) uint8 -> (N, h, w) labels or logits
        return self.engine.infer({self.input_name: batch})[self.output_name]

    def infer(self, frame, out=None):
        """One frame (H x W x 3 uint8, or an image file's path) -> (H, W) uint8 label map;
        written into ``out`` if given."""
        if isinstance(frame, str) or hasattr(frame, "__fspath__"):
            frame = read_frame(frame)  # BGR, as cv2.imread returns
            if self.order == "RGB":
                frame = np.ascontiguousarray(frame[:, :, ::-1])
        frame = check_frame(frame, self.order)
        with self._lock:
            self._check_open()
            output = self._run(self._pre.one(frame))
            return self._post(output[0], frame.shape[:2], out, self.input_size)

    def infer_batch(self, frames):
        """A list of frames (sizes may differ) or an (N, H, W, 3) array -> list of label maps.

        Runs in chunks of the engine's fixed batch size (the last chunk padded by repeating its
        last frame), or all at once when the engine's batch axis is dynamic.
        """
        if isinstance(frames, np.ndarray):
            if frames.ndim != 4:
                raise FrameError(
                    "infer_batch expects a list of frames or an N x H x W x C "
                    "array, got an array of shape {}".format(tuple(frames.shape))
                )
            frames = list(frames)
        frames = list(frames) if not isinstance(frames, list) else frames
        if not frames:
            raise FrameError("infer_batch got no frames")
        checked = []
        for i, frame in enumerate(frames):
            try:
                checked.append(check_frame(frame, self.order, allow_batch_of_one=False))
            except FrameError as exc:
                raise FrameError("frame {} of {}: {}".format(i, len(frames), exc)) from None
        chunk = self.max_batch or len(checked)
        results = []
        with self._lock:
            self._check_open()
            for start in range(0, len(checked), chunk):
                part = checked[start : start + chunk]
                padded = part + [part[-1]] * (chunk - len(part))
                output = self._run(self._pre(padded))
                for i, frame in enumerate(part):
                    results.append(self._post(output[i], frame.shape[:2], None, self.input_size))
        return results

    def colorize(self, labels):
        """(H, W) label map -> (H, W, 3) uint8 colour image in the frames' order (BGR default)."""
        return self._vis.colorize(labels)

    def overlay(self, frame, labels, alpha=0.5):
        """The colourized labels blended over ``frame`` with weight ``alpha``."""
        return self._vis.overlay(frame, labels, alpha)

    def close(self):
        """Release the engine and buffers; idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return "Runtime({} {}, input {}x{}, {} classes{})".format(
            self.backend,
            getattr(self.engine, "path", "?"),
            self.input_size[0],
            self.input_size[1],
            self.num_classes,
            ", closed" if self._closed else "",
        )
