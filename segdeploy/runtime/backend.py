"""The one small interface every engine kind implements (DESIGN.md, "Engines and backends").

Modelled on Polygraphy's runners: the public ``infer`` checks the feeds, subclasses implement
``_infer_impl`` only; explicit lifetime with ``close()`` and the context-manager protocol. Which
class opens a file is decided by ``BACKENDS`` (suffix -> module, class), imported on demand so
that opening an ONNX file never imports TensorRT and vice versa. Python 3.6 compatible.
"""

import importlib
import os
from collections import namedtuple

import numpy as np

from ..errors import EngineError, SegDeployError

TensorSpec = namedtuple("TensorSpec", ["name", "shape", "dtype"])
TensorSpec.__doc__ = """Name, shape (ints; -1 or a string for a dynamic axis) and numpy dtype."""

# suffix -> (module, class). The torch backend is chosen by open_engine for zoo names.
BACKENDS = {
    ".onnx": ("segdeploy.runtime.onnxruntime_backend", "OnnxRuntimeEngine"),
    ".ort": ("segdeploy.runtime.onnxruntime_backend", "OnnxRuntimeEngine"),
    ".plan": ("segdeploy.runtime.tensorrt_backend", "TensorRTEngine"),
    ".engine": ("segdeploy.runtime.tensorrt_backend", "TensorRTEngine"),
    ".xml": ("segdeploy.runtime.openvino_backend", "OpenVinoEngine"),
}
# backend name -> (module, class): ``Runtime(path, backend=...)`` overrides the suffix's choice
# (e.g. an .onnx graph in OpenVINO instead of ONNX Runtime).
NAMED_BACKENDS = {
    "onnxruntime": ("segdeploy.runtime.onnxruntime_backend", "OnnxRuntimeEngine"),
    "openvino": ("segdeploy.runtime.openvino_backend", "OpenVinoEngine"),
    "tensorrt": ("segdeploy.runtime.tensorrt_backend", "TensorRTEngine"),
}
# which suffixes each named backend opens
BACKEND_SUFFIXES = {
    "onnxruntime": (".onnx", ".ort"),
    "openvino": (".onnx", ".xml"),
    "tensorrt": (".plan", ".engine"),
}


# What writes each engine kind, for the line that says an engine file is missing.
_WRITERS = {
    ".plan": "a TensorRT plan is built on the GPU that runs it: segbuild {stem}.onnx there (or "
    "segexport --backend tensorrt on that machine)",
    ".engine": "a TensorRT plan is built on the GPU that runs it: segbuild {stem}.onnx --out "
    "{stem}.engine there (or segexport --backend tensorrt on that machine)",
    ".ort": "segexport writes it (--backend onnxruntime)",
    ".xml": "segexport --backend openvino writes it (with segdeploy[openvino] installed)",
    ".onnx": "segexport writes it",
}
ENGINE_SUFFIXES = tuple(BACKENDS) + (".pt2",)


def engines_beside(path):
    """Engine files next to ``path`` with its stem and another suffix (regseg.plan ->
    regseg.onnx, regseg.fp16.onnx, regseg.ort, ...), sorted."""
    text = os.fspath(path)
    folder = os.path.dirname(text) or "."
    stem = os.path.splitext(os.path.basename(text))[0]
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for name in sorted(names):
        if name == os.path.basename(text) or not name.startswith(stem + "."):
            continue
        if name.lower().endswith(ENGINE_SUFFIXES) and os.path.isfile(os.path.join(folder, name)):
            found.append(os.path.join(os.path.dirname(text), name))
    return found


def missing_engine(path, what="engine file"):
    """One line for an engine file that is not there: what builds that kind, and the engines
    with the same stem beside it."""
    from .._io import missing_file

    text = os.fspath(path)
    line = missing_file(text, what)
    if os.path.isdir(text):
        return line
    stem = os.path.splitext(text)[0]
    writer = _WRITERS.get(os.path.splitext(text)[1].lower())
    if writer:
        line += "; " + writer.format(stem=stem)
    beside = engines_beside(text)
    if beside:
        line += "; beside it: " + ", ".join(beside)
    else:
        line += "; no other engine named {}.* beside it".format(stem)
    return line


class Engine(object):
    """An opened engine: ``inputs``, ``outputs``, ``infer(feeds) -> dict``, ``close()``.

    Subclasses set ``self._inputs`` / ``self._outputs`` (lists of TensorSpec) in ``__init__`` and
    implement ``_infer_impl(feeds)`` and ``_close_impl()``.
    """

    backend = "abstract"

    def __init__(self):
        self._inputs = []
        self._outputs = []
        self._closed = False

    @property
    def inputs(self):
        return list(self._inputs)

    @property
    def outputs(self):
        return list(self._outputs)

    def infer(self, feeds):
        """Run once. ``feeds`` maps every input name to a numpy array of its dtype and shape."""
        if self._closed:
            raise EngineError("this {} engine is closed".format(self.backend))
        expected = {t.name: t for t in self._inputs}
        missing = sorted(set(expected) - set(feeds))
        extra = sorted(set(feeds) - set(expected))
        if missing or extra:
            raise SegDeployError(
                "feeds must be exactly {}; missing {}, unexpected {}".format(
                    sorted(expected), missing, extra
                )
            )
        for name, array in feeds.items():
            spec = expected[name]
            if not isinstance(array, np.ndarray):
                raise SegDeployError(
                    "input {!r} must be a numpy array, got {}".format(name, type(array).__name__)
                )
            if np.dtype(spec.dtype) != array.dtype:
                raise SegDeployError(
                    "input {!r} must be {}, got {}".format(name, np.dtype(spec.dtype), array.dtype)
                )
            if len(spec.shape) != array.ndim or any(
                isinstance(d, int) and d >= 0 and d != s for d, s in zip(spec.shape, array.shape)
            ):
                raise SegDeployError(
                    "input {!r} must have shape {}, got {}".format(
                        name, tuple(spec.shape), array.shape
                    )
                )
        return self._infer_impl(feeds)

    def _infer_impl(self, feeds):
        raise NotImplementedError

    def close(self):
        """Release the engine's resources; idempotent."""
        if not self._closed:
            self._closed = True
            self._close_impl()

    def _close_impl(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may be gone
            pass


def backend_for(path):
    """(module, class name) of the backend that opens ``path``, from its suffix."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    try:
        return BACKENDS[suffix]
    except KeyError:
        raise EngineError(
            "cannot tell the engine kind of {}: known suffixes are {}".format(
                path, ", ".join(sorted(BACKENDS))
            )
        ) from None


def named_backend(name, path):
    """(module, class name) of backend ``name`` for ``path``; EngineError if it cannot open it."""
    if name not in NAMED_BACKENDS:
        raise EngineError(
            "backend must be one of {}, got {!r}".format(", ".join(sorted(NAMED_BACKENDS)), name)
        )
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in BACKEND_SUFFIXES[name]:
        raise EngineError(
            "backend {!r} opens {} files, not {}".format(
                name, " / ".join(BACKEND_SUFFIXES[name]), os.fspath(path)
            )
        )
    return NAMED_BACKENDS[name]


def open_engine(path, backend=None, **options):
    """Open ``path`` with ``backend`` (a name) or the backend its suffix names; ``options`` go
    to the backend."""
    if not os.path.isfile(os.fspath(path)):
        raise EngineError(missing_engine(path))
    if backend is not None:
        module_name, class_name = named_backend(backend, path)
    else:
        module_name, class_name = backend_for(path)
    cls = getattr(importlib.import_module(module_name), class_name)
    check_options(cls, options)
    return cls(path, **options)


def check_options(cls, options):
    """Refuse keyword options the backend's constructor does not take, naming those it does."""
    import inspect

    accepted = [
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name not in ("self", "path") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise EngineError(
            "the {} backend takes no option{} {}; it takes {}".format(
                cls.backend,
                "s" if len(unknown) > 1 else "",
                ", ".join(unknown),
                ", ".join(accepted),
            )
        )
