"""Deterministic weights and inputs for golden-output tests.

Golden files hold the official implementation's outputs under weights that do not depend on
torch's random number generator (which changes between versions): every tensor of the state_dict
is filled from a closed-form function of its key and element index. ``scripts/make_golden.py``
applies this recipe to the official model (from a checkout the user points it to) and saves the
outputs; the tests apply it to ours and compare, without needing the official code.
"""

import math
import zlib

import numpy as np


def _pattern(key: str, n: int) -> np.ndarray:
    seed = zlib.crc32(key.encode("utf-8")) % 1000
    i = np.arange(n, dtype=np.float64)
    return np.sin(0.7 * i + seed) * np.cos(0.013 * i * (1 + seed % 7))


def _low_variance_channels(n: int) -> np.ndarray:
    """Every fourth channel: the ones given a near-zero running variance."""
    return np.arange(n) % 4 == 1


def deterministic_state(model) -> dict:
    """A state_dict of ``model``'s shapes with reproducible, well-conditioned values.

    Conv/linear weights are scaled by 1/sqrt(fan_in) so activations stay O(1) through deep nets.
    BatchNorm statistics are non-trivial so folding is exercised, and every fourth channel has a
    running variance of ~3e-4 (its gain scaled down to keep the output O(1)): there the BN eps
    matters, so an implementation with another eps (1e-3 instead of 1e-5) changes the logits by
    10-30 % instead of the 1e-6 that variances near 1 would show.
    """
    import torch

    model_state = model.state_dict()
    state = {}
    for key, tensor in model_state.items():
        if not tensor.is_floating_point():
            state[key] = tensor.clone()
            continue
        p = _pattern(key, tensor.numel()).reshape(tuple(tensor.shape))
        prefix = key.rsplit(".", 1)[0] + "."
        is_bn = prefix + "running_var" in model_state
        if key.endswith("running_var"):
            low = _low_variance_channels(tensor.numel())
            values = np.where(low, 1e-4 * (3.0 + 2.0 * p), 1.0 + 0.5 * p)
        elif key.endswith("running_mean") or key.endswith(".bias"):
            values = 0.2 * p
        elif tensor.dim() == 1:  # BN / norm weights
            values = 1.0 + 0.25 * p
            if is_bn:
                values = np.where(_low_variance_channels(tensor.numel()), 0.01 * values, values)
        elif tensor.dim() == 0:
            values = p
        else:
            fan_in = tensor[0].numel()
            values = p * math.sqrt(3.0 / fan_in)
        state[key] = torch.as_tensor(values, dtype=tensor.dtype)
    return state


def vary_weights_(model):
    """Give ``model`` He-initialized convolutions and random BatchNorm statistics, in place.

    With a model's default initialization every pixel gets the same class, so any agreement
    check passes trivially; with these weights labels vary from pixel to pixel (the accuracy
    tests assert how many classes appear). Draws from torch's global generator: seed it first
    for reproducible weights. Returns ``model``.
    """
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model


def probe_input(shape, scale: float = 1.0) -> np.ndarray:
    """A reproducible float32 input of ``shape`` with values in [-scale, scale]."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.float64)
    return (scale * np.sin(0.37 * i) * np.cos(0.011 * i)).reshape(shape).astype(np.float32)
