"""Import optional dependencies on first use, with an install hint when they are missing."""

import importlib

# module name -> (pip extra that provides it, extra hint)
_EXTRAS = {
    "torch": ("export", None),
    "onnx": ("export", None),
    "onnxruntime": ("export", None),
    "onnxslim": ("export", None),
    "tensorrt": (
        "tensorrt",
        "pip install 'segdeploy[tensorrt]' (CUDA 13 driver, R580+; 'segdeploy[tensorrt-cu12]' "
        "for a CUDA 12 driver), or on Jetson use JetPack's python3-libnvinfer",
    ),
    "pycuda": ("gpu", "on Jetson: pip3 install pycuda"),
    "cuda": ("gpu", None),
    "cv2": ("", "pip install opencv-python-headless"),
    "matplotlib": ("plot", None),
    "tritonclient": ("serve", None),
}


def require(module, feature=None):
    """Import ``module`` or raise MissingDependencyError saying how to install it."""
    from .errors import MissingDependencyError

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra, hint = _EXTRAS.get(top, ("", None))
        if hint is None:
            hint = "pip install 'segdeploy[{}]'".format(extra) if extra else "pip install " + top
        what = " for {}".format(feature) if feature else ""
        raise MissingDependencyError(
            "{} is not installed ({}){}; install it with: {}".format(top, exc, what, hint)
        ) from None
