"""segdeploy: real-time semantic segmentation from a PyTorch checkpoint to a verified deployment.

``import segdeploy`` stays light on purpose: it imports numpy but neither torch, onnx,
onnxruntime, tensorrt, OpenCV nor any CUDA binding, so that the device side (``engines``,
``runtime``, ``bench``) runs on a Jetson with only numpy and OpenCV. Each backend imports its
library when it is first used. Python 3.6 compatible (Jetson TX2, JetPack 4.6).
"""

from ._version import __version__  # noqa: E402
from .errors import SegDeployError  # noqa: E402
from .runtime import Runtime  # noqa: E402  (numpy only until an engine is opened)

__all__ = ["SegDeployError", "Runtime", "__version__"]
