"""Helpers shared by the runtime tests: a tiny RegSeg with varied outputs, exported with its card.

Imported by the runtime and bench tests; it defines no tests itself.
"""

import numpy as np


def tiny_model(seed=0, num_classes=19, name="regseg_tiny"):
    """A zoo model (regseg_tiny by default) with random conv weights and BatchNorm statistics,
    so labels vary per pixel."""
    import torch

    from segdeploy import models
    from segdeploy.models.golden import vary_weights_

    torch.manual_seed(seed)
    return vary_weights_(models.build(name, num_classes=num_classes).eval())


def tiny_card(height=64, width=128, num_classes=19, palette=None):
    from segdeploy import models
    from segdeploy.runtime.torch_backend import _card_for

    card = _card_for(models.get_spec("regseg_tiny"), num_classes, height, width, "labels")
    if palette is not None:
        card["model"]["palette"] = [list(c) for c in palette]
    return card


def export_tiny(path, height=64, width=128, num_classes=19, palette=None, seed=0):
    """Write the tiny model + argmax as ONNX with its card in the metadata; returns the model."""
    from segdeploy.export import export_onnx

    model = tiny_model(seed, num_classes)
    card = tiny_card(height, width, num_classes, palette)
    export_onnx(model, str(path), height=height, width=width, card=card)
    return model


def smooth_frame(height, width, seed=0):
    """A uint8 BGR frame with structure at several scales (labels then vary across it)."""
    from segdeploy.bench.harness import sample_frame

    return sample_frame(height, width, seed)


def reference_labels(model, frame_bgr, height, width, name="regseg_tiny"):
    """What the runtime must compute, written the long way with torch and OpenCV."""
    import cv2
    import torch

    from segdeploy import models

    spec = models.get_spec(name)
    rgb = cv2.resize(frame_bgr, (width, height), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    scaled = rgb.astype(np.float32) * np.float32(spec.input_scale)
    x = (scaled - np.float32(spec.mean)) / np.float32(spec.std)
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None])))
    labels = logits.argmax(1)[0].numpy().astype(np.uint8)
    return cv2.resize(
        labels, (frame_bgr.shape[1], frame_bgr.shape[0]), interpolation=cv2.INTER_NEAREST
    )


def needs_compiled_head():
    """Skip unless the compiled head builds here (a C++ compiler is at hand)."""
    import pytest

    from segdeploy.errors import MissingDependencyError
    from segdeploy.plugins.host_build import HostBuildError
    from segdeploy.plugins.seghead import host

    try:
        host.load()
    except (HostBuildError, MissingDependencyError, OSError) as exc:
        pytest.skip("the compiled fused head needs a C++ compiler: {}".format(exc))
