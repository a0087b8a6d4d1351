"""segdeploy: real-time semantic segmentation from a PyTorch checkpoint to a verified deployment.

``import segdeploy`` stays light on purpose: it imports neither torch, onnx, onnxruntime, tensorrt
nor any CUDA binding, so that the device side (``engines``, ``runtime``, ``bench``) runs on a
Jetson with only numpy and OpenCV. Each backend imports its library when it is first used.
"""

__version__ = "0.1.0"

from .errors import SegDeployError  # noqa: E402


def __getattr__(name):
    # Lazy so that ``import segdeploy`` never pulls in the runtime backends (PEP 562).
    if name == "Runtime":
        from .runtime import Runtime

        return Runtime
    raise AttributeError("module 'segdeploy' has no attribute {!r}".format(name))


__all__ = ["SegDeployError", "Runtime", "__version__"]
