"""segeval: what did the engine cost in accuracy? mIoU of engines on a dataset, side by side.

segeval --engine out/regseg.onnx [--engine out/regseg.fp16.onnx ...] --dataset cityscapes
        --root DIR [--split val] [--limit N] [--res 1024x2048] [--json F] [--csv F]
        [--confusion F.png] [--save-predictions DIR] [--workers N]
"""

import os
import sys

from .._cli import QUIET, VERBOSE, add_common_args, make_parser, run_main, verbosity
from .._native import native_stderr_kept
from .._version import __version__
from ..errors import SegDeployError

NOTES = """\
datasets:
  cityscapes  ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png and
              ROOT/gtFine/<split>/<city>/*_gtFine_labelIds.png
              (default split: val)
  camvid      ROOT/<split>/*.png and ROOT/<split>annot/*.png, 11 classes,
              11 = void (SegNet's layout; default split: test)
  folder      ROOT/images/, ROOT/masks/ (label-index PNGs, 255 ignored),
              ROOT/classes.txt (UTF-8, one class name a line)

--save-predictions writes label-id PNGs for Cityscapes; score them with the
official script:
  CITYSCAPES_DATASET=ROOT CITYSCAPES_RESULTS=DIR \\
      python -m cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling
"""

EXAMPLES = (
    "segeval --engine out/regseg.onnx --dataset cityscapes --root data/cityscapes \\",
    "        --limit 100",
    "segeval --engine out/regseg.onnx --engine out/regseg.fp16.onnx \\",
    "        --dataset cityscapes --root data/cityscapes --json eval.json \\",
    "        --csv eval.csv --confusion confusion.png",
)


def parser():
    p = make_parser(
        "segeval",
        "Score engines (mIoU, per-class IoU, accuracies) on Cityscapes, CamVid or a folder of "
        "images and masks; several engines side by side.",
        EXAMPLES,
        NOTES,
    )
    add_common_args(p)
    e = p.add_argument_group("engines")
    e.add_argument(
        "--engine",
        action="append",
        required=True,
        metavar="FILE",
        help="engine file (.onnx, .ort, .plan, ...); repeat to compare engines",
    )
    e.add_argument(
        "--res",
        help="network input HEIGHTxWIDTH for engines with a dynamic size (default: the card's)",
    )
    e.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads per engine")
    e.add_argument(
        "--head",
        choices=("network", "frame"),
        default="network",
        help="for engines exported with --head fused: upsample the logits to the network's "
        "size and nearest-resize the labels to the image (network, default: the labels the "
        "graph gives), or straight to the image's size (frame: as official evaluations do)",
    )
    d = p.add_argument_group("dataset")
    d.add_argument("--dataset", required=True, choices=("cityscapes", "camvid", "folder"))
    d.add_argument("--root", required=True, help="the dataset's directory")
    d.add_argument("--split", help="split to score (cityscapes: val, camvid: test by default)")
    d.add_argument("--classes", help="classes file of a folder dataset (default ROOT/classes.txt)")
    d.add_argument("--limit", type=int, metavar="N", help="score the first N images only")
    d.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="threads that load images and write predictions (default 2; 0: none)",
    )
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", help="everything, confusion matrices included")
    o.add_argument("--csv", metavar="FILE", help="per-class IoU per engine and the summary rows")
    o.add_argument("--confusion", metavar="FILE.png", help="row-normalized confusion matrices")
    o.add_argument(
        "--save-predictions",
        metavar="DIR",
        help="write the label maps as PNGs (Cityscapes: label ids, as the official script "
        "reads them; several engines: one sub-directory each)",
    )
    o.add_argument(
        "--top", type=int, default=5, metavar="K", help="images where engines disagree most"
    )
    o.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    return p


def _output_file(path, flag):
    from .._io import check_writable_dir

    if path is None:
        return None
    if os.path.isdir(path):
        raise SegDeployError("{} {} is a directory; give a file name".format(flag, path))
    check_writable_dir(os.path.dirname(os.path.abspath(path)))
    return path


def run(args, stream=None):
    from .._io import check_writable_dir
    from ..engines.profiles import parse_hw
    from .data import open_dataset
    from .evaluate import compare
    from .report import table, write_confusion_png, write_csv, write_report_json

    stream = stream or sys.stdout
    input_size = parse_hw(args.res) if args.res else None
    for flag, value in (
        ("--json", args.json),
        ("--csv", args.csv),
        ("--confusion", args.confusion),
    ):
        _output_file(value, flag)
    if args.save_predictions:
        check_writable_dir(args.save_predictions)
    if args.threads is not None and args.threads < 1:
        raise SegDeployError("--threads must be at least 1, got {}".format(args.threads))
    dataset = open_dataset(args.dataset, args.root, args.split, args.classes)
    options = {"threads": args.threads} if args.threads else {}
    if args.head != "network":
        options["head"] = args.head
    if getattr(args, "plugin", None):
        options["plugins"] = list(args.plugin)  # loaded because the user named them
    comparison = compare(
        args.engine,
        dataset,
        limit=args.limit,
        workers=args.workers,
        progress=not args.no_progress and verbosity(args) > QUIET,
        save_predictions=args.save_predictions,
        input_size=input_size,
        runtime_options=options,
    )
    for warning in comparison.warnings:
        print("segeval: warning: " + warning, file=sys.stderr)
    print(table(comparison, args.top), file=stream)
    written = []
    if args.json:
        write_report_json(args.json, comparison, {"segdeploy": __version__})
        written.append(args.json)
    if args.csv:
        write_csv(args.csv, comparison)
        written.append(args.csv)
    if args.confusion:
        write_confusion_png(args.confusion, comparison)
        written.append(args.confusion)
    if args.save_predictions:
        written.append(args.save_predictions + os.sep)
    for path in written:
        print("wrote " + path, file=stream)
    return comparison


def main(argv=None):
    args = parser().parse_args(argv)

    def work():  # its result is for callers in Python; the command exits 0
        # OpenCV's and libpng's own lines on a bad image (-v shows them): segeval's say it all
        with native_stderr_kept(show=verbosity(args) >= VERBOSE):
            run(args)

    return run_main("segeval", work, "nothing half-written was left behind")


if __name__ == "__main__":
    sys.exit(main())
