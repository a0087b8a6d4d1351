"""Engines: turning an ONNX file into an engine for a target, and the table of devices.

Nothing heavy is imported here: these wrappers import their module (and that module imports
TensorRT) on first call, so ``import segdeploy.engines`` stays numpy-only on a Jetson. Python 3.6
has no module ``__getattr__``, hence plain functions.
"""


def tensorrt_status():
    """(ok, reason): are the tensorrt module and a CUDA device present? Never raises."""
    from .tensorrt_builder import tensorrt_status as status

    return status()


def build_tensorrt_engine(onnx_path, engine_path, card, **options):
    """ONNX -> TensorRT plan + sidecar card; see ``tensorrt_builder.build_tensorrt_engine``."""
    from .tensorrt_builder import build_tensorrt_engine as build

    return build(onnx_path, engine_path, card, **options)


def trtexec_command(onnx_path, engine_path, precision="fp32", **options):
    """The equivalent trtexec line; see ``trtexec.trtexec_command``. Needs no TensorRT."""
    from .trtexec import trtexec_command as command

    return command(onnx_path, engine_path, precision, **options)


def derive_profile(res=None, dynamic=None, stride=1):
    """``--res`` / ``--dynamic`` -> ShapeProfile; see ``profiles.derive_profile``."""
    from .profiles import derive_profile as derive

    return derive(res, dynamic, stride)
