"""Helpers for the segeval tests: engines whose labels vary, and datasets written on the spot.

Nothing is downloaded: images are synthetic frames, label files are derived from an engine's
own predictions and then perturbed (other classes, ignored ids), so every class score is a
fraction strictly between the trivial 0 and 1 and a wrong mapping shows.
"""

import os

import numpy as np

CITIES = ("aachen", "bochum", "zurich")
NET_HW = (64, 128)  # the engines' input size
LABEL_HW = (96, 192)  # the dataset's size: predictions are brought back to it


def fanin_model(seed=2, num_classes=19):
    """regseg_tiny with fan-in scaled (He) conv weights and spread BatchNorm statistics.

    Default weights label every pixel alike; these give 5-9 classes per frame (seed 2).
    """
    import torch

    from segdeploy import models

    torch.manual_seed(seed)
    model = models.build("regseg_tiny", num_classes=num_classes).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


def export_engines(out):
    """segexport --fp16 of the fan-in model at 64x128 -> (FP32 .onnx, FP16-typed .onnx)."""
    import torch

    from segdeploy.export.cli import main as segexport

    out = str(out)
    checkpoint = os.path.join(out, "tiny.pth")
    torch.save(fanin_model().state_dict(), checkpoint)
    argv = ["--model", "regseg_tiny", "--checkpoint", checkpoint, "--res", "64x128"]
    argv += ["--fp16", "--out", out, "--verify-inputs", "1"]
    assert segexport(argv) == 0
    return os.path.join(out, "regseg_tiny.onnx"), os.path.join(out, "regseg_tiny.fp16.onnx")


def export_camvid_engine(path):
    """An 11-class tiny model as ONNX with its card (labels output)."""
    from segdeploy import models
    from segdeploy.export import export_onnx
    from segdeploy.runtime.torch_backend import _card_for

    card = _card_for(models.get_spec("regseg_tiny"), 11, NET_HW[0], NET_HW[1], "labels")
    model = fanin_model(seed=2, num_classes=11)
    export_onnx(model, str(path), height=NET_HW[0], width=NET_HW[1], card=card)
    return str(path)


def frame(seed, hw=LABEL_HW):
    from segdeploy.bench.harness import sample_frame

    return sample_frame(hw[0], hw[1], seed)


def perturb(train_ids, rng, num_classes, ignore_values):
    """Replace random rectangles of a training-id map by other classes or ignored values."""
    labels = train_ids.copy()
    h, w = labels.shape
    for _ in range(12):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        dy, dx = rng.integers(4, h // 3), rng.integers(4, w // 3)
        if rng.random() < 0.3:
            value = rng.choice(ignore_values)
        else:
            value = rng.integers(0, num_classes)
        labels[y : y + dy, x : x + dx] = value
    return labels


def write_png(path, image):
    import cv2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, image), path


def make_cityscapes(root, runtime, split="val", per_city=2, seed=0):
    """A Cityscapes-layout dataset: leftImg8bit images and gtFine labelIds + instanceIds PNGs.

    Returns the number of images. Ground truth: the engine's prediction as label ids, with
    rectangles of other label ids (evaluated ones and ignored ones such as 0, 4, 9, 29) pasted
    over it.
    """
    from segdeploy.eval.data import cityscapes_label_ids

    rng = np.random.default_rng(seed)
    to_label_id = cityscapes_label_ids()
    n = 0
    for city in CITIES:
        for i in range(per_city):
            stem = "{}_{:06d}_{:06d}".format(city, i, 19)
            image = frame(seed * 100 + n)
            label_ids = to_label_id[runtime.infer(image)]
            h, w = label_ids.shape
            for _ in range(12):
                y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
                dy, dx = rng.integers(4, h // 3), rng.integers(4, w // 3)
                label_ids[y : y + dy, x : x + dx] = rng.integers(0, 34)
            instance_ids = label_ids.astype(np.uint16)
            has_instances = label_ids >= 24  # person .. bicycle (and caravan, trailer)
            instance_ids[has_instances] = label_ids[has_instances].astype(np.uint16) * 1000 + (
                np.arange(w)[None, :] // 48
            ).repeat(h, 0)[has_instances].astype(np.uint16)
            image_dir = os.path.join(root, "leftImg8bit", split, city)
            label_dir = os.path.join(root, "gtFine", split, city)
            write_png(os.path.join(image_dir, stem + "_leftImg8bit.png"), image)
            write_png(os.path.join(label_dir, stem + "_gtFine_labelIds.png"), label_ids)
            write_png(os.path.join(label_dir, stem + "_gtFine_instanceIds.png"), instance_ids)
            n += 1
    return n


def make_folder(root, runtime, class_names, count=4, seed=0, split=None):
    """ROOT/images/*.jpg, ROOT/masks/*.png and ROOT/classes.txt from the engine's predictions."""
    rng = np.random.default_rng(seed)
    sub = (split,) if split else ()
    for i in range(count):
        image = frame(50 + i)
        mask = perturb(runtime.infer(image), rng, len(class_names), [255])
        write_png(os.path.join(root, "images", *sub, "img{}.jpg".format(i)), image)
        write_png(os.path.join(root, "masks", *sub, "img{}.png".format(i)), mask)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("# one class per line\n" + "\n".join(class_names) + "\n")


def make_camvid(root, runtime, split="test", count=3, seed=0):
    """SegNet's CamVid layout: ROOT/<split>/*.png and ROOT/<split>annot/*.png, 11 = void."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        image = frame(70 + i, (72, 96))
        mask = perturb(runtime.infer(image), rng, 11, [11, 255])
        name = "0001TP_{:06d}.png".format(i * 30)
        write_png(os.path.join(root, split, name), image)
        write_png(os.path.join(root, split + "annot", name), mask)
