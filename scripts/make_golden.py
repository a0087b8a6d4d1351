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


# Official SwiftNet configs (configs/rn18_single_scale.py, configs/rn18_pyramid.py)
SWIFTNET_MEAN = [73.15, 82.90, 72.3]
SWIFTNET_STD = [47.67, 48.49, 47.73]


def official_swiftnet(official_dir, pyramid):
    """SemsegModel around the official ResNet-18 as its configs build it (orsic/swiftnet).

    The official modules import ``lib.cylib`` (a Cython evaluation helper) at import time; build
    it, or put a stub ``lib/cylib.py`` on PYTHONPATH: the models do not use it.
    """
    import torch

    sys.path.insert(0, official_dir)
    from models.semseg import SemsegModel  # official module

    if pyramid:
        from models.resnet.resnet_pyramid import resnet18  # official module

        backbone = resnet18(
            pretrained=False,
            pyramid_levels=3,
            k_upsample=3,
            scale=1,
            mean=SWIFTNET_MEAN,
            std=SWIFTNET_STD,
            k_bneck=1,
            output_stride=4,
            efficient=True,
        )
        kwargs = {"k": 1, "bias": True}
    else:
        from models.resnet.resnet_single_scale import resnet18  # official module

        backbone = resnet18(
            pretrained=False, efficient=False, mean=SWIFTNET_MEAN, std=SWIFTNET_STD, scale=1
        )
        kwargs = {}

    class Official(SemsegModel):
        def forward(self, x):
            # official call convention; its forward normalises the image in place, so copy it
            return super().forward(x.clone(), None, x.shape[-2:])[0]

        def load_state_dict(self, state, strict=True):
            # The pyramid's _load_from_state_dict hooks report bogus missing/unexpected keys
            # (the official config loads with strict=False); check the load by value instead.
            if not pyramid:
                return super().load_state_dict(state, strict=strict)
            super().load_state_dict(state, strict=False)
            mine = self.state_dict()
            assert list(mine) == list(state)
            assert all(torch.equal(mine[k], v) for k, v in state.items())
            return None

    return Official(backbone, 19, **kwargs)


def official_deeplab(official_dir, name, output_stride):
    """``network.modeling.<name>`` of VainF/DeepLabV3Plus-Pytorch, no ImageNet download."""
    sys.path.insert(0, official_dir)
    import network  # official package

    builder = getattr(network.modeling, name)
    return builder(num_classes=19, output_stride=output_stride, pretrained_backbone=False)


def _namespace(name, path):
    """Register package ``name`` at ``path`` without running its ``__init__`` (which imports
    training-only dependencies: datasets, quantization, torchvision)."""
    import types

    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module


def official_ti_lite(official_dir, builder_name):
    """TI's pixel2pixel model (TexasInstruments/edgeai-torchvision, ``references/edgeailite``)
    on the ``xnn`` layers of TexasInstruments/edgeai-modeloptimization (``torchmodelopt/``).

    ``official_dir`` holds both checkouts' trees side by side (``references/`` and
    ``torchmodelopt/``). Only the model modules are imported: the packages' ``__init__`` files
    pull in datasets, quantization and torchvision, none of which the models use.
    """
    import torch

    xvision = os.path.join(official_dir, "references", "edgeailite", "edgeai_xvision")
    _namespace(
        "edgeai_torchmodelopt", os.path.join(official_dir, "torchmodelopt", "edgeai_torchmodelopt")
    )
    _namespace("edgeai_xvision", xvision)
    _namespace("edgeai_xvision.xvision", os.path.join(xvision, "xvision"))
    _namespace("edgeai_xvision.xvision.models", os.path.join(xvision, "xvision", "models"))
    import importlib

    xnn = importlib.import_module("edgeai_torchmodelopt.xnn")
    pixel2pixel = importlib.import_module("edgeai_xvision.xvision.models.pixel2pixel")
    config = xnn.utils.ConfigNode()
    config.output_channels = [19]
    config.output_type = ["logits"]  # not "segmentation": that appends an argmax in eval mode
    model, _ = getattr(pixel2pixel, builder_name)(config)

    class Official(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):  # Pixel2PixelNet takes and returns lists
            return self.net([x])[0]

        def state_dict(self, *args, **kwargs):
            return self.net.state_dict(*args, **kwargs)

        def load_state_dict(self, state, strict=True):
            return self.net.load_state_dict(state, strict=strict)

    return Official()


def official_lraspp(official_dir, num_classes):
    """torchvision's ``lraspp_mobilenet_v3_large`` from ``official_dir`` (a folder holding the
    ``torchvision`` package: its repository checkout or an unpacked wheel). Its compiled ops are
    not needed: the modules that register them are replaced by empty ones."""
    import types

    sys.path.insert(0, official_dir)
    for name in ("_meta_registrations", "_autograd_registrations"):
        sys.modules["torchvision." + name] = types.ModuleType("torchvision." + name)
    import torch
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large  # official module

    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)

    class Official(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return self.net(x)["out"]

        def state_dict(self, *args, **kwargs):
            return self.net.state_dict(*args, **kwargs)

        def load_state_dict(self, state, strict=True):
            return self.net.load_state_dict(state, strict=strict)

    return Official()


def _only_first_output(net):
    """Wrap an official model whose forward returns a tuple (logits first)."""
    import torch

    class Official(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)[0]

        def state_dict(self, *args, **kwargs):
            return self.net.state_dict(*args, **kwargs)

        def load_state_dict(self, state, strict=True):
            return self.net.load_state_dict(state, strict=strict)

    return Official()


def official_stdc(official_dir, backbone):
    """``BiSeNet(backbone, 19)`` of MichaelFan01/STDC-Seg ``models/model_stages.py``, every head
    built (the released checkpoints' keys), on the CPU.

    Its head normalizes with InPlaceABNSync (a compiled CUDA extension): replaced by a module
    with InPlaceABN's parameters and buffers (no ``num_batches_tracked``) computing the same eval
    forward; ``import torchvision`` (unused by the model) is satisfied by an empty module.
    """
    import types

    import torch
    import torch.nn.functional as F

    class InPlaceABNSync(torch.nn.Module):
        def __init__(self, num_features, activation="leaky_relu", eps=1e-5, momentum=0.1):
            super().__init__()
            assert activation == "none", "the STDC head uses InPlaceABN without activation"
            self.eps, self.momentum = eps, momentum
            self.weight = torch.nn.Parameter(torch.ones(num_features))
            self.bias = torch.nn.Parameter(torch.zeros(num_features))
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))

        def forward(self, x):
            return F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                self.training,
                self.momentum,
                self.eps,
            )

    sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
    _namespace("modules", os.path.join(official_dir, "modules"))
    bn = types.ModuleType("modules.bn")
    bn.InPlaceABNSync = InPlaceABNSync
    sys.modules["modules.bn"] = bn
    sys.path.insert(0, official_dir)
    from models.model_stages import BiSeNet  # official module

    return _only_first_output(BiSeNet(backbone, 19))


def official_bisenetv2(official_dir):
    """``BiSeNetV2(19)`` of CoinCheung/BiSeNet ``lib/models/bisenetv2.py`` with its booster
    heads built (``aux_mode='train'``: the released checkpoint's keys); logits are its first
    output. Its ImageNet-backbone download is skipped (the weights are replaced anyway)."""
    import importlib

    _namespace("lib", os.path.join(official_dir, "lib"))
    _namespace("lib.models", os.path.join(official_dir, "lib", "models"))
    module = importlib.import_module("lib.models.bisenetv2")
    module.BiSeNetV2.load_pretrain = lambda self: None
    return _only_first_output(module.BiSeNetV2(19, aux_mode="train"))


def official_fchardnet(official_dir):
    """``hardnet(19)`` of PingoLH/FCHarDNet ``ptsemseg/models/hardnet.py``; the CatConv2d CUDA
    extension it imports (used only by ``v2_transform``) is stubbed."""
    import importlib
    import types

    _namespace("ptsemseg", os.path.join(official_dir, "ptsemseg"))
    _namespace("ptsemseg.models", os.path.join(official_dir, "ptsemseg", "models"))
    _namespace("CatConv2d", os.path.join(official_dir, "CatConv2d"))
    stub = types.ModuleType("CatConv2d.catconv2d")
    stub.CatConv2d = None
    sys.modules["CatConv2d.catconv2d"] = stub
    return importlib.import_module("ptsemseg.models.hardnet").hardnet(19)


# zoo name -> (builder of the official model, kwargs for ours); a golden name that is not a zoo
# name is "<zoo name>_<variant>" (the tests know the mapping)
OFFICIAL = {
    "regseg": (lambda d: official_regseg(d, 19), {}),
    "regseg_camvid": (lambda d: official_regseg(d, 11), {"num_classes": 11}),
    "swiftnet_rn18": (lambda d: official_swiftnet(d, pyramid=False), {}),
    "swiftnet_rn18_pyramid": (lambda d: official_swiftnet(d, pyramid=True), {}),
    "deeplabv3plus_resnet50": (
        lambda d: official_deeplab(d, "deeplabv3plus_resnet50", 16),
        {"output_stride": 16},
    ),
    "deeplabv3plus_resnet50_os8": (
        lambda d: official_deeplab(d, "deeplabv3plus_resnet50", 8),
        {"output_stride": 8},
    ),
    "deeplabv3plus_resnet101": (
        lambda d: official_deeplab(d, "deeplabv3plus_resnet101", 16),
        {"output_stride": 16},
    ),
    "deeplabv3plus_mobilenet": (
        lambda d: official_deeplab(d, "deeplabv3plus_mobilenet", 16),
        {"output_stride": 16},
    ),
    "deeplabv3plus_mobilenet_os8": (
        lambda d: official_deeplab(d, "deeplabv3plus_mobilenet", 8),
        {"output_stride": 8},
    ),
    "ti_deeplabv3lite_mnv2": (
        lambda d: official_ti_lite(d, "deeplabv3plus_mobilenetv2_tv_edgeailite"),
        {},
    ),
    "ti_unetlite_mnv2": (lambda d: official_ti_lite(d, "unet_aspp_mobilenetv2_tv_edgeailite"), {}),
    "ti_fpnlite_mnv2": (lambda d: official_ti_lite(d, "fpn_aspp_mobilenetv2_tv_edgeailite"), {}),
    "lraspp_mobilenet_v3_large": (lambda d: official_lraspp(d, 21), {}),
    "stdc1_seg": (lambda d: official_stdc(d, "STDCNet813"), {}),
    "stdc2_seg": (lambda d: official_stdc(d, "STDCNet1446"), {}),
    "bisenetv2": (official_bisenetv2, {}),
    "fchardnet70": (official_fchardnet, {}),
}
# models whose golden file also holds outputs at a second input size (``*_2`` arrays): the
# rivals of issue 24, compared at two sizes
SECOND_INPUT_SHAPE = {
    "stdc1_seg": (1, 3, 96, 160),
    "stdc2_seg": (1, 3, 96, 160),
    "bisenetv2": (1, 3, 96, 160),
    "fchardnet70": (1, 3, 96, 160),
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
    arrays = {
        "keys": np.array(list(state)),
        "shapes": np.array([",".join(map(str, t.shape)) for t in state.values()]),
    }
    shapes = [("", INPUT_SHAPE)]
    if name in SECOND_INPUT_SHAPE:
        shapes.append(("_2", SECOND_INPUT_SHAPE[name]))
    for suffix, shape in shapes:
        x = probe_input(shape)
        with torch.no_grad():
            logits = model(torch.from_numpy(x)).numpy()
        arrays.update(
            {
                "input_shape" + suffix: np.array(shape),
                "logits_sub" + suffix: logits[:, :, ::4, ::4].astype(np.float32),
                "labels" + suffix: logits.argmax(1).astype(np.uint8),
                "logits_mean" + suffix: np.float64(logits.mean()),
                "logits_absmean" + suffix: np.float64(np.abs(logits).mean()),
            }
        )
    np.savez_compressed(golden_name(name), **arrays)
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
