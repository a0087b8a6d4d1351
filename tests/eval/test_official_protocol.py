"""segeval's mIoU equals the official cityscapesscripts evaluation on the same predictions."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from segdeploy.eval.cli import main as segeval

pytest.importorskip("cityscapesscripts", reason="cityscapesscripts is a test dependency")


def _official(dataset_root, results, export_dir):
    env = dict(os.environ)
    env.update(
        CITYSCAPES_DATASET=dataset_root,
        CITYSCAPES_RESULTS=results,
        CITYSCAPES_EXPORT_DIR=export_dir,
    )
    module = "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling"
    # The official script runs unmodified; it still calls np.in1d, which numpy 2.4 removed. The
    # alias is restored to np.isin (what numpy made in1d an alias of; the script reshapes the
    # result itself) so the script runs on the numpy a fresh install gets.
    run = (
        "import runpy, numpy; numpy.in1d = getattr(numpy, 'in1d', None) or numpy.isin; "
        "runpy.run_module({!r}, run_name='__main__', alter_sys=True)".format(module)
    )
    done = subprocess.run(
        [sys.executable, "-c", run], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with open(os.path.join(export_dir, "resultPixelLevelSemanticLabeling.json")) as f:
        return json.load(f)


def test_miou_equals_cityscapesscripts(tmp_path, engines, cityscapes):
    root, count = cityscapes
    results = tmp_path / "predictions"
    out_json = tmp_path / "eval.json"
    argv = ["--engine", engines[0], "--dataset", "cityscapes", "--root", root]
    argv += ["--save-predictions", str(results), "--json", str(out_json), "--no-progress"]
    assert segeval(argv) == 0
    saved = sorted(p.name for p in results.rglob("*.png"))
    assert len(saved) == count and saved[0].endswith("_pred_labelIds.png")
    ours = json.loads(out_json.read_text())["engines"][0]
    export_dir = tmp_path / "official"
    export_dir.mkdir()
    official = _official(root, str(results), str(export_dir))

    assert abs(ours["miou"] - official["averageScoreClasses"]) < 1e-6
    # Class by class too: the 19 evaluated classes have the same IoU (or both none).
    theirs = official["classScores"]
    scored = 0
    for name, iou in ours["class_iou"].items():
        if iou is None:
            assert theirs[name] != theirs[name], name  # NaN there as well
        else:
            assert abs(iou - theirs[name]) < 1e-6, name
            scored += 0 < iou < 1
    # The comparison means something only if many classes have a non-trivial score.
    assert scored >= 8, ours["class_iou"]
    # The same pixels were counted: the official matrix restricted to evaluated ids.
    matrix = np.array(official["confMatrix"])
    label_ids = [official["labels"][n] for n in ours["class_iou"]]
    assert (matrix[np.ix_(label_ids, label_ids)] == np.array(ours["confusion"])).all()
