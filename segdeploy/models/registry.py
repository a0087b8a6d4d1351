"""The model registry: one decorated builder per model variant.

    @register_model("regseg", stride=16, dataset="cityscapes", ...)
    def regseg(*, num_classes=19): ...

``build(name, **kwargs)`` calls the builder; ``list_models()`` lists the names. Registering a name
twice is a programming error and raises; an unknown name raises ``UnknownModelError`` naming the
known models and the closest match.
"""

import difflib
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

from ..errors import SegDeployError, UnknownModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """What the toolchain needs to know about a model beyond its nn.Module.

    Pre-processing is ``(pixel * input_scale - mean) / std`` on ``channel_order`` channels; a model
    that normalizes inside its graph declares ``input_scale=1`` and zero mean / unit std.
    ``dynamic_shapes`` says whether an ONNX graph with dynamic height/width computes what the
    model computes at every size. ``paper`` holds the published figures (params, multiply-adds,
    resolution, source) so reports can show them beside ours.
    """

    name: str
    builder: Callable
    family: str
    stride: int
    dataset: str = "cityscapes"
    num_classes: int = 19
    channel_order: str = "RGB"
    input_scale: float = 1.0 / 255.0
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    tiny: bool = False
    # False when the graph cannot follow the input size: an export with dynamic height/width
    # would freeze size-dependent structure (e.g. a pooling grid) at the export size.
    dynamic_shapes: bool = True
    description: str = ""
    paper: Dict[str, object] = field(default_factory=dict)
    # State-dict key prefixes of training-only heads (auxiliary, boundary, detail heads) that the
    # official checkpoints carry and the deployment form does not build: loading drops them with
    # one line naming them; any other unexpected key is still an error.
    training_only: Tuple[str, ...] = ()


_REGISTRY: Dict[str, ModelSpec] = {}


def register_model(name: str, *, family: str, stride: int, **spec_fields):
    """Decorator registering ``builder`` under ``name``; raises if the name is taken."""

    def decorator(builder: Callable) -> Callable:
        if name in _REGISTRY:
            raise SegDeployError(
                "model {!r} is registered twice (by {} and {})".format(
                    name, _REGISTRY[name].builder.__module__, builder.__module__
                )
            )
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            family=family,
            stride=stride,
            description=doc[0] if doc else "",
            **spec_fields,
        )
        return builder

    return decorator


def list_models(include_tiny: bool = True):
    """Registered model names, sorted."""
    return sorted(n for n, s in _REGISTRY.items() if include_tiny or not s.tiny)


def closest_model(name: str) -> Optional[str]:
    matches = difflib.get_close_matches(name, list(_REGISTRY), n=1, cutoff=0.5)
    return matches[0] if matches else None


def get_spec(name: str) -> ModelSpec:
    """The ``ModelSpec`` of a registered model."""
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = closest_model(name)
        raise UnknownModelError(
            "unknown model {!r}{}; known models: {}".format(
                name,
                " (did you mean {!r}?)".format(hint) if hint else "",
                ", ".join(list_models()),
            )
        ) from None


def build(name: str, **kwargs):
    """Build the registered model ``name`` in eval mode; kwargs go to its builder."""
    spec = get_spec(name)
    kwargs.setdefault("num_classes", spec.num_classes)
    try:
        model = spec.builder(**kwargs)
    except TypeError as exc:
        raise SegDeployError("cannot build {!r} with {}: {}".format(name, kwargs, exc)) from None
    model.segdeploy_spec = spec
    return model.eval()
