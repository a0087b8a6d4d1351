"""What ``head="frame"`` changes in segeval's mIoU: a trained model, images larger than the network.

    PYTHONPATH=$PWD python scripts/head_frame_miou.py [--model regseg_tiny] [--net 128x256]
        [--image 256x512] [--train-steps 150] [--images 16] [--threads 2] [--json F]

The model is trained (``bench_precision.train_on_scenes``) on synthetic street scenes at the
network size, exported with its head fused, and scored by segeval on a folder dataset of other
scenes drawn at the image size with their drawn labels as ground truth, twice in one comparison:

- network: the fused head at the network's size, then the labels nearest-resized to the image
  (the labels the graph head gives; segeval's default);
- frame: the logits upsampled straight to the image's size (``Runtime(head="frame")``,
  ``segeval --head frame``), as MMSegmentation's and the papers' evaluations resize logits to
  the original image before the argmax.
"""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def write_dataset(root, count, height, width, seed=20000):
    import cv2

    from segdeploy.bench.frames import street_scene
    from segdeploy.datasets import CITYSCAPES

    for sub in ("images", "masks"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for i in range(count):
        frame, labels = street_scene(height, width, seed + i, True)
        cv2.imwrite(os.path.join(root, "images", "s{:03d}.png".format(i)), frame)
        cv2.imwrite(os.path.join(root, "masks", "s{:03d}.png".format(i)), labels)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("\n".join(CITYSCAPES.class_names) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="regseg_tiny")
    parser.add_argument("--net", default="128x256")
    parser.add_argument("--image", default="256x512")
    parser.add_argument("--train-steps", type=int, default=150)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    net_h, net_w = (int(v) for v in args.net.split("x"))
    img_h, img_w = (int(v) for v in args.image.split("x"))

    import onnx
    import torch
    from bench_precision import train_on_scenes

    from segdeploy import Runtime, models
    from segdeploy.card import read_onnx_card as read_card
    from segdeploy.eval import compare, open_dataset
    from segdeploy.export import export_onnx, fold_batchnorm, make_card
    from segdeploy.export.head import cut_head
    from segdeploy.export.onnx_export import save_model, set_card

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = train_on_scenes(models.build(args.model), args.train_steps, net_h, net_w)
    spec = models.get_spec(args.model)
    with tempfile.TemporaryDirectory(prefix="head-frame-") as work:
        path = os.path.join(work, "model.onnx")
        card = make_card(spec, spec.num_classes, net_h, net_w)
        export_onnx(fold_batchnorm(model), path, height=net_h, width=net_w, card=card)
        proto = onnx.load(path)
        cut, fused_card = cut_head(proto, read_card(proto))
        set_card(cut, fused_card)
        save_model(cut, path)
        root = os.path.join(work, "data")
        write_dataset(root, args.images, img_h, img_w)
        dataset = open_dataset("folder", root)
        runtimes = [Runtime(path, head=h, threads=args.threads) for h in ("network", "frame")]
        try:
            result = compare(runtimes, dataset, progress=False)
        finally:
            for rt in runtimes:
                rt.close()
    network, frame = result.reports
    summary = {
        "model": args.model,
        "train_steps": args.train_steps,
        "network": [net_h, net_w],
        "image": [img_h, img_w],
        "images": args.images,
        "miou_network": network.miou,
        "miou_frame": frame.miou,
        "miou_difference_points": 100 * (frame.miou - network.miou),
        "pixel_accuracy_network": network.pixel_accuracy,
        "pixel_accuracy_frame": frame.pixel_accuracy,
        "agreement": result.pairs[0].agreement if getattr(result, "pairs", None) else None,
        "command": " ".join(["scripts/head_frame_miou.py"] + list(argv or sys.argv[1:])),
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        from segdeploy._io import write_json

        write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
