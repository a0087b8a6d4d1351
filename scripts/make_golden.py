#!/usr/bin/env python3
"""Regenerate the golden outputs in tests/models/golden/ from the official implementations.

    python scripts/make_golden.py regseg --official-dir /path/to/RolandGao/RegSeg

The official code is imported from the directory you point to (it is never copied into this
repository). Each model's weights come from ``segdeploy.models.golden.deterministic_state``, so
the tests can rebuild the same weights for our implementation and compare outputs.
"""

import argparse
import os
import sys

import numpy as np

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "..", "tests", "models", "golden")
INPUT_SHAPE = (1, 3, 64, 128)


def official_regseg(official_dir, num_classes):
    """RegSeg(name="exp48_decoder26") from the official blocks.py, without its training deps."""
    sys.path.insert(0, official_dir)
    import blocks  # official module
    import torch.nn.functional as F
    from torch import nn

    class Official(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = blocks.ConvBnAct(3, 32, 3, 2, 1)
            self.body = blocks.RegSegBody([[1], [1, 2]] + 4 * [[1, 4]] + 7 * [[1, 14]])
            self.decoder = blocks.Exp2_Decoder26(num_classes, self.body.channels())

        def forward(self, x):  # RegSeg.forward of model.py
            size = x.shape[-2:]
            y = self.decoder(self.body(self.stem(x)))
            return F.interpolate(y, size=size, mode="bilinear", align_corners=False)

    return Official()


# zoo name -> (builder of the official model, kwargs for ours)
OFFICIAL = {
    "regseg": (lambda d: official_regseg(d, 19), {}),
    "regseg_camvid": (lambda d: official_regseg(d, 11), {"num_classes": 11}),
}


def golden_name(name):
    return os.path.join(GOLDEN_DIR, name + ".npz")


def make(name, official_dir):
    import torch

    from segdeploy.models.golden import deterministic_state, probe_input

    build_official, _ = OFFICIAL[name]
    model = build_official(official_dir).eval()
    state = deterministic_state(model)
    model.load_state_dict(state, strict=True)
    x = probe_input(INPUT_SHAPE)
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    np.savez_compressed(
        golden_name(name),
        keys=np.array(list(state)),
        shapes=np.array([",".join(map(str, t.shape)) for t in state.values()]),
        input_shape=np.array(INPUT_SHAPE),
        logits_sub=logits[:, :, ::4, ::4].astype(np.float32),
        labels=logits.argmax(1).astype(np.uint8),
        logits_mean=np.float64(logits.mean()),
        logits_absmean=np.float64(np.abs(logits).mean()),
    )
    print("wrote {} ({} keys, logits {})".format(golden_name(name), len(state), logits.shape))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", choices=sorted(OFFICIAL))
    parser.add_argument(
        "--official-dir", required=True, help="checkout of the official repository of these models"
    )
    args = parser.parse_args(argv)
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    for name in args.models:
        make(name, os.path.abspath(args.official_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
