"""Runtime: open an engine file, pre-process a frame, run, post-process (device side).

Importing this package stays as light as ``import segdeploy``: numpy only. OpenCV is imported
when a Runtime is opened, the backend library when its engine is.
"""

from .backend import BACKENDS, Engine, TensorSpec, open_engine
from .runtime import Runtime

__all__ = ["BACKENDS", "Engine", "Runtime", "TensorSpec", "open_engine"]
