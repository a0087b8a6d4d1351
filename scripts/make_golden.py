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


class _EvalForm(object):
    """Mixin for official models trained with training-only heads: the forward of the official
    evaluation (main output of the ``augment=True`` model, resized to the input as its eval code
    does), the state_dict of the deployment form (``augment=False``), and the training-only keys
    the released checkpoints carry besides (kept in the golden file for the loading tests)."""

    def deployment_state_dict(self):
        return self.deployment.state_dict()

    def training_only_state(self):
        deploy = self.deployment.state_dict()
        return {k: v for k, v in self.net.state_dict().items() if k not in deploy}


def _official_eval_model(train_net, deploy_net, output_index, align_corners):
    """``train_net`` (augment=True) evaluated as the official eval code does; ``deploy_net``
    (augment=False) must agree with it."""
    import torch
    import torch.nn.functional as F

    class Official(_EvalForm, torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = train_net
            self.deployment = deploy_net

        def forward(self, x):
            out = self.net(x)[output_index]
            alone = self.deployment(x)
            assert torch.equal(out, alone), "augment=False differs from the eval output"
            return F.interpolate(
                out, size=x.shape[-2:], mode="bilinear", align_corners=align_corners
            )

        def state_dict(self, *args, **kwargs):
            return self.deployment.state_dict(*args, **kwargs)

        def load_state_dict(self, state, strict=True):
            full = dict(self.training_only_state())
            full.update(state)
            self.net.load_state_dict(full, strict=strict)
            return self.deployment.load_state_dict(state, strict=strict)

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


def official_ddrnet(official_dir, slim):
    """``DualResNet`` of ydhongHIT/DDRNet ``segmentation/DDRNet_23[_slim].py``, as HRNet's eval
    runs it: main output (index 0 of augment=True), bilinear resize with align_corners=False (the
    README: "Keep align_corners=False in all places")."""
    import importlib

    import torch

    sys.path.insert(0, os.path.join(official_dir, "segmentation"))
    module = importlib.import_module("DDRNet_23_slim" if slim else "DDRNet_23")
    module.BatchNorm2d = torch.nn.BatchNorm2d  # SyncBatchNorm needs a process group; same keys
    planes, head = (32, 64) if slim else (64, 128)

    def net(augment):
        return module.DualResNet(
            module.BasicBlock,
            [2, 2, 2, 2],
            num_classes=19,
            planes=planes,
            spp_planes=128,
            head_planes=head,
            augment=augment,
        )

    return _official_eval_model(net(True), net(False), 0, False)


def official_pidnet(official_dir, variant):
    """``PIDNet`` of XuJiacong/PIDNet as ``tools/eval.py`` runs it: the augment=True model,
    ``TEST.OUTPUT_INDEX: 1``, resized with ``align_corners=MODEL.ALIGN_CORNERS`` (True)."""
    sys.path.insert(0, official_dir)
    from models import pidnet  # official module

    train = pidnet.PIDNet(**PIDNET_ARGS[variant], num_classes=19, augment=True)
    return _official_eval_model(train, pidnet.get_pred_model("pidnet_" + variant, 19), 1, True)


PIDNET_ARGS = {
    "s": {"m": 2, "n": 3, "planes": 32, "ppm_planes": 96, "head_planes": 128},
    "m": {"m": 2, "n": 3, "planes": 64, "ppm_planes": 96, "head_planes": 128},
    "l": {"m": 3, "n": 4, "planes": 64, "ppm_planes": 112, "head_planes": 256},
}

COMPLEXITY_HW = (1024, 2048)


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
    "ddrnet23_slim": (lambda d: official_ddrnet(d, slim=True), {}),
    "ddrnet23": (lambda d: official_ddrnet(d, slim=False), {}),
    "pidnet_s": (lambda d: official_pidnet(d, "s"), {}),
    "pidnet_m": (lambda d: official_pidnet(d, "m"), {}),
    "pidnet_l": (lambda d: official_pidnet(d, "l"), {}),
    "stdc1_seg": (lambda d: official_stdc(d, "STDCNet813"), {}),
    "stdc2_seg": (lambda d: official_stdc(d, "STDCNet1446"), {}),
    "bisenetv2": (official_bisenetv2, {}),
    "fchardnet70": (official_fchardnet, {}),
}
# models whose golden file also holds outputs at a second input size (``*_2`` arrays): the
# rivals of issue 24, compared at two sizes (they exercise the size-dependent resizes)
SECOND_INPUT_SHAPE = {
    "ddrnet23_slim": (1, 3, 96, 160),
    "ddrnet23": (1, 3, 96, 160),
    "pidnet_s": (1, 3, 96, 160),
    "pidnet_m": (1, 3, 96, 160),
    "pidnet_l": (1, 3, 96, 160),
    "stdc1_seg": (1, 3, 96, 160),
    "stdc2_seg": (1, 3, 96, 160),
    "bisenetv2": (1, 3, 96, 160),
    "fchardnet70": (1, 3, 96, 160),
}


def golden_name(name):
    return os.path.join(GOLDEN_DIR, name + ".npz")


def _outputs(model, shape, suffix=""):
    import torch

    from segdeploy.models.golden import probe_input

    x = probe_input(shape)
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    return logits, {
        "input_shape" + suffix: np.array(shape),
        "logits_sub" + suffix: logits[:, :, ::4, ::4].astype(np.float32),
        "labels" + suffix: logits.argmax(1).astype(np.uint8),
    }


def make(name, official_dir):
    from segdeploy.models.golden import deterministic_state

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
        logits, outputs = _outputs(model, shape, suffix)
        arrays.update(outputs)
        arrays["logits_mean" + suffix] = np.float64(logits.mean())
        arrays["logits_absmean" + suffix] = np.float64(np.abs(logits).mean())
    if isinstance(model, _EvalForm):
        from segdeploy.bench.counting import complexity

        extra = model.training_only_state()
        arrays["training_only_keys"] = np.array(list(extra))
        arrays["training_only_shapes"] = np.array(
            [",".join(map(str, t.shape)) for t in extra.values()]
        )
        # the official deployment form counted with the project's counter
        count = complexity(model.deployment, COMPLEXITY_HW)
        arrays["official_params"] = np.int64(count.params)
        arrays["official_macs"] = np.int64(count.macs)
        arrays["complexity_hw"] = np.array(COMPLEXITY_HW)
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
