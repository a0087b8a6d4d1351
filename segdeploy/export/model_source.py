"""Where segexport's model comes from: a zoo name with its checkpoint, or the user's own
``file.py:factory`` (imported and run as Python, as ``python file.py`` would)."""

import importlib.util
import os

from ..errors import SegDeployError


def user_model_spec(name, num_classes, stride, builder=None):
    """The ModelSpec of a bring-your-own model: ImageNet normalization of 0..1 RGB, no paper."""
    from ..models.registry import ModelSpec

    return ModelSpec(
        name=name,
        builder=builder,
        family="user",
        stride=int(stride),
        dataset=None,
        num_classes=num_classes,
    )


def _first_line(exc):
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return "{}: {}".format(type(exc).__name__, line[:200]) if line else type(exc).__name__


def load_user_model(reference, stride, factory_args=None):
    """``path/to/file.py:factory`` -> (nn.Module, spec); ``factory_args``: --factory-args.

    This IMPORTS AND RUNS the file, like ``python file.py`` would: the user asked for exactly
    that by naming it (``--help`` and the README say so). Its failures are one line each.
    """
    path, _, factory = reference.rpartition(":")
    if not os.path.isfile(path):
        from .._io import missing_file

        raise SegDeployError("--model {}: {}".format(reference, missing_file(path, "file")))
    module_spec = importlib.util.spec_from_file_location("segexport_user_model", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        raise SegDeployError(
            "--model {}: importing {} failed: {}".format(reference, path, _first_line(exc))
        ) from None
    fn = getattr(module, factory, None)
    if fn is None or not callable(fn):
        raise SegDeployError("--model {}: {} has no callable {!r}".format(reference, path, factory))
    from .user_model import call_factory, parse_factory_args

    model = call_factory(fn, reference, parse_factory_args(factory_args))
    num_classes = getattr(model, "num_classes", None)
    if not (isinstance(num_classes, int) and not isinstance(num_classes, bool)):
        num_classes = None  # an attribute of another meaning: count from the output instead
    stride_attr = getattr(model, "output_stride", None)
    if not (isinstance(stride_attr, int) and stride_attr >= 1):
        stride_attr = None
    name = os.path.splitext(os.path.basename(path))[0]
    stride = stride or stride_attr or 32
    return model, user_model_spec(name, num_classes, stride, fn)


def build_model(args):
    """The PyTorch model, its spec and the checkpoint's SHA-256 (None for random weights)."""
    from .. import models

    if args.model and ".py:" in args.model:
        model, spec = load_user_model(args.model, args.stride, getattr(args, "factory_args", None))
        if args.checkpoint:
            models.load_checkpoint(model, args.checkpoint, args.unsafe_pickle)
    else:
        spec = models.get_spec(args.model)
        kwargs = {"num_classes": args.num_classes} if args.num_classes else {}
        model = models.build(args.model, **kwargs)
        if args.checkpoint:
            models.load_checkpoint(model, args.checkpoint, args.unsafe_pickle)
    sha = getattr(model, "segdeploy_checkpoint_sha256", None)
    return model.eval(), spec, sha
