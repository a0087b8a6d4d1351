"""Make the model card (``segdeploy.card``) for an export from the zoo's ModelSpec."""

import datetime
import platform

from .. import datasets
from .._version import __version__
from ..card import SCHEMA


def make_card(
    spec,
    num_classes,
    height,
    width,
    output="labels",
    profile=None,
    opset=13,
    checkpoint_sha256=None,
    input_name="image",
):
    """The card of an export of ``spec`` (a ModelSpec or a duck-typed stand-in)."""
    import onnx
    import torch

    # The palette and class names follow the head's size: a Cityscapes-trained model fine-tuned
    # on CamVid has 11 classes and wants CamVid's names.
    dataset = datasets.for_num_classes(num_classes)
    if dataset is not None:
        class_names, palette, dataset_name = dataset.class_names, dataset.palette, dataset.name
    else:
        class_names = ["class_{}".format(i) for i in range(num_classes)]
        palette, dataset_name = datasets.generic_palette(num_classes), None
    return {
        "schema": SCHEMA,
        "model": {
            "name": spec.name,
            "family": spec.family,
            "num_classes": int(num_classes),
            "dataset": dataset_name,
            "class_names": list(class_names),
            "palette": [list(c) for c in palette],
        },
        "input": {
            "name": input_name,
            "layout": "NCHW",
            "channel_order": spec.channel_order,
            "dtype": "float32",
            "scale": spec.input_scale,
            "mean": list(spec.mean),
            "std": list(spec.std),
            "height": int(height),
            "width": int(width),
            "dynamic": profile.as_card() if profile is not None else None,
            "stride": int(spec.stride),
        },
        "output": {
            "name": output,
            "kind": output,
            "dtype": "int64" if output == "labels" else "float32",
            "resolution": "input",
        },
        "provenance": {
            "checkpoint_sha256": checkpoint_sha256,
            "random_weights": checkpoint_sha256 is None,
            "segdeploy": __version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "python": platform.python_version(),
            "opset": int(opset),
            "exporter": "torch.onnx (TorchScript)",
            "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
        },
        "parity": {},
    }
