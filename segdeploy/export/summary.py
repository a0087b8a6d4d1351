"""What segexport tells the user at the end: parity figures in one line each, and the commands
to run next (as pasted, with this environment's own scripts)."""

import os
import sys


def parity_summary(figures):
    keys = (
        "inputs",
        "label_agreement",
        "max_abs_logit_error",
        "max_rel_logit_error",
        "min_class_iou",
        "disagreements_near_boundary",
    )
    return {k: figures.get(k) for k in keys}


def describe_parity(f):
    near = f.get("disagreements_near_boundary")
    text = "label agreement {:.4%} over {} px".format(f["label_agreement"], f["pixels"])
    if "max_abs_logit_error" in f:
        text += "; logit error max abs {:.2e}, rel {:.2e}".format(
            f["max_abs_logit_error"], f["max_rel_logit_error"]
        )
    if f.get("min_class_iou") is not None:
        text += "; min per-class IoU {:.4f}".format(f["min_class_iou"])
    if near is not None:
        text += "; {:.0%} of {} disagreements within 2 px of a boundary".format(
            near, f["disagreeing_pixels"]
        )
    return text


def _command(script, module):
    """How to run a console script from here: this interpreter's own, else ``python -m``."""
    import shlex

    path = os.path.join(os.path.dirname(sys.executable), script)
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return shlex.quote(path)
    return "{} -m {}".format(shlex.quote(sys.executable), module)


def print_next(engine_path, card, stream):
    """Commands that run as pasted: this environment's scripts, and a frame the first writes."""
    import shlex

    h, w = card["input"]["height"], card["input"]["width"]
    out_dir = os.path.dirname(engine_path) or "."
    frame = os.path.join(out_dir, "frame.png")
    code = (
        "import cv2, segdeploy; from segdeploy.samples import street_scene; "
        "cv2.imwrite({f!r}, street_scene(720, 1280)); "
        "print(segdeploy.Runtime({e!r}).infer({f!r}).shape)".format(f=frame, e=engine_path)
    )
    engine = shlex.quote(engine_path)
    lines = [
        "{} -c {}".format(shlex.quote(sys.executable), shlex.quote(code)),
        "{} --engine {} --source {} --out {}".format(
            _command("segpredict", "segdeploy.runtime.predict"),
            engine,
            shlex.quote(frame),
            shlex.quote(os.path.join(out_dir, "predict")),
        ),
        "{} --engine {} --res {}x{}".format(
            _command("segbench", "segdeploy.bench.cli"), engine, h, w
        ),
    ]
    print("\nNext (each line runs as pasted; the first writes a sample frame):", file=stream)
    for line in lines:
        print("  " + line, file=stream)
    stream.flush()
