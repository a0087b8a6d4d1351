"""The model zoo (host side; imports torch).

from segdeploy import models
model = models.build("regseg", num_classes=19)
models.load_checkpoint(model, "cityscapes.pth")
"""

from . import (  # noqa: F401  (registers)
    bisenetv2,
    ddrnet,
    deeplabv3plus,
    fchardnet,
    lraspp,
    pidnet,
    regseg,
    stdc,
    swiftnet,
    ti_lite,
)
from .backbone_weights import load_backbone_weights
from .checkpoint import load_checkpoint, read_checkpoint
from .registry import ModelSpec, build, get_spec, list_models, register_model

__all__ = [
    "ModelSpec",
    "build",
    "get_spec",
    "list_models",
    "load_backbone_weights",
    "load_checkpoint",
    "read_checkpoint",
    "register_model",
]
