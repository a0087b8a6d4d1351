"""A model on a Triton Inference Server behind the Engine interface: a remote ``Runtime``.

    Runtime("grpc://gpu-node:8001/regseg")       # gRPC   (pip install 'segdeploy[serve]')
    Runtime("http://gpu-node:8000/regseg")       # HTTP/REST
    Runtime("grpc://gpu-node:8001/regseg/2")     # version 2 of the model

The model card comes from the server (the ``segdeploy.card`` parameter that
``segdeploy.engines.triton.write_model_repository`` puts into ``config.pbtxt``), the tensors from
its metadata, so the same ``infer`` / ``infer_batch`` / ``colorize`` / ``overlay`` / ``close``
work unchanged: moving from one device to a fleet changes the path, not the code. A graph that
takes uint8 frames (``segexport --input uint8``) gets the frames as they are: 3 bytes per pixel on
the wire.

Every failure is one line: no server at the address, a model name the server does not have (the
message lists the ones it has), a model that is not ready (with the server's reason), a request
that outlives ``timeout`` seconds, a server that went away mid-run. Options: ``timeout``
(seconds per request, default 30), ``connect_timeout`` (seconds for each set-up call: health,
readiness, config, metadata; default 5; over HTTP one network timeout covers both). One
engine holds one connection; for concurrent clients open one Runtime per thread (the server
batches their requests). Python 3.6 compatible; tritonclient is imported on open.
"""

import os

import numpy as np

from .. import card as card_mod
from .._deps import require
from ..errors import EngineError, SegDeployError
from .backend import Engine, TensorSpec

SCHEMES = {"grpc": 8001, "http": 8000, "https": 443, "grpcs": 443}
CARD_PARAMETER = "segdeploy.card"

_TRITON_DTYPES = {
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BOOL": np.bool_,
}


def parse_url(url):
    """'grpc://host:8001/model[/version]' -> (scheme, 'host:port', model, version or '')."""
    text = str(url)
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise EngineError(
            "{}: a server address starts with grpc:// or http:// (e.g. "
            "grpc://localhost:8001/regseg), not {}://".format(text, scheme)
        )
    address, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not address or not parts or len(parts) > 2:
        raise EngineError(
            "{}: give the model after the address, e.g. {}://localhost:{}/regseg "
            "(or .../regseg/1 for a version)".format(text, scheme, SCHEMES[scheme])
        )
    if ":" not in address:
        address = "{}:{}".format(address, SCHEMES[scheme])
    version = parts[1] if len(parts) == 2 else ""
    if version and not version.isdigit():
        raise EngineError("{}: the model version must be a number, got {!r}".format(text, version))
    return scheme, address, parts[0], version


def _first_line(exc):
    message = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    lines = str(message or type(exc).__name__).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


class TritonEngine(Engine):
    """One model on a Triton server (see the module docstring)."""

    backend = "triton"

    def __init__(self, url, timeout=30.0, connect_timeout=5.0, verbose=False, shared_memory=False):
        super(TritonEngine, self).__init__()
        self.url = str(url)
        self.path = self.url
        self.scheme, self.address, self.model_name, self.model_version = parse_url(url)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.device_kind = "remote"
        self._grpc = self.scheme in ("grpc", "grpcs")
        module = "tritonclient.grpc" if self._grpc else "tritonclient.http"
        self._client_mod = require(module, "a Triton server")
        self._utils = require("tritonclient.utils", "a Triton server")
        self._client = None
        self._client = self._connect(verbose)
        try:
            self._check_ready()
            # Set-up calls are bounded by connect_timeout, requests by timeout.
            self.config = self._call(
                "read the model config",
                self._client.get_model_config,
                *self._model_args(),
                _timeout=self.connect_timeout,
            )
            metadata = self._call(
                "read the model metadata",
                self._client.get_model_metadata,
                *self._model_args(),
                _timeout=self.connect_timeout,
            )
        except BaseException:
            self._close_impl()
            raise
        if self._grpc:  # protobuf JSON: {"config": {...}} and camel-case names
            self.config = self.config.get("config", self.config)
        self.max_batch_size = int(self.config.get("max_batch_size", 0) or 0)
        self.card = self._read_card()
        self._inputs = [self._spec(t) for t in metadata.get("inputs", [])]
        self._outputs = [self._spec(t) for t in metadata.get("outputs", [])]
        self._shm = None
        if shared_memory:
            try:
                self._shm = _SharedMemory(self)
            except BaseException:
                self._close_impl()
                raise
        self.options = {
            "url": self.url,
            "timeout": self.timeout,
            "max_batch_size": self.max_batch_size,
            "shared_memory": self._shm is not None,
        }

    # --- connection and errors -------------------------------------------------------------
    def _connect(self, verbose):
        kwargs = {"verbose": bool(verbose)}
        if self.scheme in ("https", "grpcs"):
            kwargs["ssl"] = True
        if not self._grpc:
            kwargs["connection_timeout"] = self.connect_timeout
            kwargs["network_timeout"] = self.timeout
        try:
            return self._client_mod.InferenceServerClient(url=self.address, **kwargs)
        except Exception as exc:
            raise EngineError(
                "cannot open a client for {}: {}".format(self.url, _first_line(exc))
            ) from None

    def _model_args(self):
        return (self.model_name, self.model_version)

    def _call(self, what, fn, *args, **kwargs):
        """Run one client call; every failure becomes one EngineError line."""
        if self._grpc:
            kwargs.setdefault("client_timeout", kwargs.pop("_timeout", self.timeout))
            if fn.__name__.startswith("get_model"):
                kwargs["as_json"] = True
        else:
            kwargs.pop("_timeout", None)
        try:
            return fn(*args, **kwargs)
        except self._utils.InferenceServerException as exc:
            raise EngineError(self._describe(what, exc)) from None
        except (OSError, EOFError) as exc:  # HTTP: refused, reset, timed out (socket.timeout)
            raise EngineError(self._describe(what, exc)) from None
        except Exception as exc:  # gevent.Timeout and other transport errors of the client
            if type(exc).__name__ in ("Timeout", "timeout", "ConnectionError"):
                raise EngineError(self._describe(what, exc)) from None
            raise

    def _describe(self, what, exc):
        status = str(exc.status() if hasattr(exc, "status") and callable(exc.status) else "")
        text = _first_line(exc)
        lowered = (status + " " + text + " " + type(exc).__name__).lower()
        where = "the Triton server at {}://{}".format(self.scheme, self.address)
        if "deadline" in lowered or "timeout" in lowered or "timed out" in lowered:
            return (
                "{} did not answer within {:g} s ({}); the server is overloaded or stuck: "
                "raise timeout= or check the server".format(where, self.timeout, what)
            )
        if (
            "unavailable" in lowered
            or "connect" in lowered
            or "refused" in lowered
            or "reset" in lowered
            or "broken pipe" in lowered
            or isinstance(exc, (OSError, EOFError))
        ):
            return "{} cannot be reached ({}: {}); is tritonserver running there?".format(
                where, what, text
            )
        return "{} refused to {}: {}".format(where, what, text)

    def _check_ready(self):
        client = self._client
        live = self._call(
            "answer a health check", client.is_server_live, _timeout=self.connect_timeout
        )
        if not live:
            raise EngineError(
                "the Triton server at {} is not live yet; retry when it has started".format(
                    self.url
                )
            )
        ready = self._call(
            "report the model's state",
            client.is_model_ready,
            *self._model_args(),
            _timeout=self.connect_timeout,
        )
        if ready:
            return
        index = self._call(
            "list its models", client.get_model_repository_index, _timeout=self.connect_timeout
        )
        models = index.get("models", []) if isinstance(index, dict) else index
        names = sorted({m.get("name") for m in models if m.get("name")})
        if self.model_name not in names:
            raise EngineError(
                "the Triton server at {}://{} has no model {!r} (it has: {}); check the name "
                "in the URL".format(
                    self.scheme, self.address, self.model_name, ", ".join(names) or "none"
                )
            )
        states = []
        for m in models:
            if m.get("name") != self.model_name:
                continue
            if self.model_version and str(m.get("version")) != self.model_version:
                continue
            reason = (m.get("reason") or "no reason given").strip().splitlines()
            states.append("{} ({})".format(m.get("state", "?"), reason[0][:200] if reason else ""))
        raise EngineError(
            "model {!r} on the Triton server at {}://{} is not ready: {}; see the server's "
            "log".format(
                self.model_name,
                self.scheme,
                self.address,
                "; ".join(states) or "version {} is not loaded".format(self.model_version),
            )
        )

    def _read_card(self):
        params = self.config.get("parameters", {}) or {}
        entry = params.get(CARD_PARAMETER) or {}
        text = entry.get("string_value") or entry.get("stringValue")
        if not text:
            return None  # a model not written by segdeploy: usable through infer(feeds) only
        return card_mod.from_json(text, "the {} parameter of {}".format(CARD_PARAMETER, self.url))

    def _spec(self, tensor):
        dtype = _TRITON_DTYPES.get(str(tensor.get("datatype")))
        if dtype is None:
            raise EngineError(
                "tensor {!r} of {} has type {}, which segdeploy does not handle".format(
                    tensor.get("name"), self.url, tensor.get("datatype")
                )
            )
        shape = tuple(int(d) for d in tensor.get("shape", []))
        return TensorSpec(tensor["name"], shape, np.dtype(dtype))

    # --- inference --------------------------------------------------------------------------
    def _infer_impl(self, feeds):
        if self.max_batch_size:
            batch = next(iter(feeds.values())).shape[0]
            if batch > self.max_batch_size:
                raise SegDeployError(
                    "a batch of {} exceeds the model's max_batch_size {} on {}; send at most "
                    "{} frames per request".format(
                        batch, self.max_batch_size, self.url, self.max_batch_size
                    )
                )
        if self._shm is not None:
            return self._shm.infer(feeds)
        inputs = []
        for spec in self._inputs:
            array = np.ascontiguousarray(feeds[spec.name])
            value = self._client_mod.InferInput(
                spec.name, list(array.shape), self._utils.np_to_triton_dtype(array.dtype)
            )
            if self._grpc:
                value.set_data_from_numpy(array)
            else:
                value.set_data_from_numpy(array, binary_data=True)
            inputs.append(value)
        result = self._request(inputs, self._requested_outputs())
        return {o.name: result.as_numpy(o.name) for o in self._outputs}

    def _request(self, inputs, outputs):
        """One inference request (tensors inline or in shared memory), errors in one line."""
        return self._call(
            "run the model",
            self._client.infer,
            self.model_name,
            inputs,
            model_version=self.model_version,
            outputs=outputs,
        )

    def _requested_outputs(self):
        if self._grpc:
            return [self._client_mod.InferRequestedOutput(o.name) for o in self._outputs]
        return [
            self._client_mod.InferRequestedOutput(o.name, binary_data=True) for o in self._outputs
        ]

    def versions(self):
        import tritonclient

        return {"tritonclient": getattr(tritonclient, "__version__", "?")}

    def synchronize(self):
        """Requests are synchronous: the answer is on the host when infer returns."""

    def _close_impl(self):
        shm, self._shm = getattr(self, "_shm", None), None
        if shm is not None:
            shm.close()
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # a dead connection: nothing left to release
                pass


def open_triton(url, device=None, **options):
    """A TritonEngine for ``url``; ``options``: timeout, connect_timeout, verbose."""
    if device is not None:
        raise EngineError(
            "device={!r} does not apply to a model on a server: the server's "
            "config.pbtxt (instance_group) places it".format(device)
        )
    unknown = sorted(set(options) - {"timeout", "connect_timeout", "verbose", "shared_memory"})
    if unknown:
        raise EngineError(
            "{} do not apply to a Triton server; it takes timeout, connect_timeout, "
            "shared_memory and verbose".format(", ".join(unknown))
        )
    return TritonEngine(url, **options)


class _SharedMemory(object):
    """Inputs and outputs through POSIX shared memory instead of the socket, for a server on
    the same host (``shared_memory=True``). One region per tensor, sized for the largest batch,
    registered with the server for the engine's life; only the request's small header crosses
    the socket. Needs fixed tensor sizes and a server that sees this host's /dev/shm."""

    def __init__(self, engine):
        self.engine = engine
        self.shm = require("tritonclient.utils.shared_memory", "shared-memory transport")
        self.regions = {}  # tensor name -> (region name, handle, bytes per batch item)
        batch = engine.max_batch_size or 1
        prefix = "segdeploy_{}_{}".format(os.getpid(), id(self))
        try:
            for spec in engine._inputs + engine._outputs:
                dims = spec.shape[1:] if engine.max_batch_size else spec.shape
                if any(not isinstance(d, int) or d < 0 for d in dims):
                    raise EngineError(
                        "shared_memory=True needs fixed tensor sizes; {!r} of {} has shape "
                        "{}".format(spec.name, engine.url, tuple(spec.shape))
                    )
                item = int(np.prod(dims)) * spec.dtype.itemsize
                name = "{}_{}".format(prefix, len(self.regions))
                handle = self.shm.create_shared_memory_region(name, "/" + name, item * batch)
                self.regions[spec.name] = (name, handle, item)
                engine._call(
                    "register shared memory",
                    engine._client.register_system_shared_memory,
                    name,
                    "/" + name,
                    item * batch,
                    _timeout=engine.connect_timeout,
                )
        except EngineError as exc:
            self.close()
            raise EngineError(
                "{}; the server must run on this host and see its /dev/shm, or pass "
                "shared_memory=False".format(str(exc))
            ) from None
        except BaseException:
            self.close()
            raise

    def infer(self, feeds):
        engine = self.engine
        inputs = []
        for spec in engine._inputs:
            array = np.ascontiguousarray(feeds[spec.name])
            name, handle, _ = self.regions[spec.name]
            self.shm.set_shared_memory_region(handle, [array])
            value = engine._client_mod.InferInput(
                spec.name, list(array.shape), engine._utils.np_to_triton_dtype(array.dtype)
            )
            value.set_shared_memory(name, array.nbytes)
            inputs.append(value)
        batch = next(iter(feeds.values())).shape[0] if engine.max_batch_size else 1
        outputs = engine._requested_outputs()
        for spec, output in zip(engine._outputs, outputs):
            name, _, item = self.regions[spec.name]
            output.set_shared_memory(name, item * batch)
        result = engine._request(inputs, outputs)
        arrays = {}
        for spec in engine._outputs:
            described = result.get_output(spec.name)
            shape = described["shape"] if isinstance(described, dict) else described.shape
            _, handle, _ = self.regions[spec.name]
            view = self.shm.get_contents_as_numpy(handle, spec.dtype, [int(d) for d in shape])
            arrays[spec.name] = np.array(view)  # the region is reused by the next request
        return arrays

    def close(self):
        engine, regions, self.regions = self.engine, self.regions, {}
        for name, handle, _ in regions.values():
            if engine._client is not None:
                try:
                    engine._client.unregister_system_shared_memory(name)
                except Exception:  # the server is gone: it has nothing left to unregister
                    pass
            try:
                self.shm.destroy_shared_memory_region(handle)
            except Exception:  # already unlinked
                pass
