"""Open one backend's engine for a zoo model at one resolution (what ``segbench --model`` sweeps).

``torch`` wraps the module directly; ``onnxruntime`` exports the folded model to ONNX in a scratch
directory with ``segdeploy.export.export_onnx`` (the graph segexport writes) and opens that;
``tensorrt`` builds a plan from the same ONNX with ``segdeploy.engines.build_tensorrt_engine``.
Python 3.6 compatible; torch and onnx are imported inside the functions.
"""

import os

from ..errors import SegDeployError

BACKEND_NAMES = ("torch", "onnxruntime", "tensorrt")


def parse_choices(option, text, allowed, aliases=None):
    """``"a, B,c"`` -> ["a", "b", "c"] for ``option`` (e.g. ``--backends``): each name (after
    ``aliases``) one of ``allowed``; anything else is a one-line SegDeployError."""
    names = [n.strip().lower() for n in str(text).split(",") if n.strip()]
    names = [(aliases or {}).get(n, n) for n in names]
    if not names or any(n not in allowed for n in names):
        raise SegDeployError(
            "{} takes a comma-separated list of {}; got {!r}".format(
                option, ", ".join(allowed), text
            )
        )
    return names


def parse_backends(text):
    aliases = {"ort": "onnxruntime", "pytorch": "torch", "trt": "tensorrt"}
    return parse_choices("--backends", text, BACKEND_NAMES, aliases)


def open_backend(
    name,
    model,
    spec,
    height,
    width,
    workdir,
    device=None,
    threads=None,
    fp16=False,
    fold_bn=True,
    probe=None,
):
    """An opened Engine of backend ``name`` for ``model`` at ``height`` x ``width``.

    ``probe`` (a ``memory.EngineMemory``) is started just before the engine itself is opened,
    after any export or build, so that its figures are the engine's and not the exporter's.
    """
    start = probe.start if probe is not None else (lambda: None)
    from ..runtime.torch_backend import TorchEngine, _card_for

    card = _card_for(spec, spec.num_classes if spec else 19, height, width, "labels")
    if name == "torch":
        start()
        return TorchEngine(
            model,
            device=device,
            height=height,
            width=width,
            threads=threads,
            fp16=fp16,
            channels_last=True,
            fold_bn=fold_bn,
        )
    onnx_path = os.path.join(workdir, "{}_{}x{}.onnx".format(card["model"]["name"], height, width))
    if not os.path.isfile(onnx_path):
        from ..export import export_onnx, fold_batchnorm

        export_onnx(fold_batchnorm(model), onnx_path, height=height, width=width, card=card)
    if name == "onnxruntime":
        from ..runtime.onnxruntime_backend import OnnxRuntimeEngine

        start()
        return OnnxRuntimeEngine(
            onnx_path, device=device if device != "cpu" else "cpu", threads=threads
        )
    from ..engines import build_tensorrt_engine
    from ..runtime.backend import open_engine

    precision = "fp16" if fp16 else "fp32"
    plan = os.path.join(
        workdir, "{}_{}x{}.{}.plan".format(card["model"]["name"], height, width, precision)
    )
    build_tensorrt_engine(onnx_path, plan, card, precision=precision, log=lambda *a: None)
    start()
    return open_engine(plan)
