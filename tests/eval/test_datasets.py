"""Datasets: the Cityscapes id table, the layouts, and one clear error per malformed dataset."""

import os

import numpy as np
import pytest
from eval_support import write_png

from segdeploy.eval.data import (
    CITYSCAPES_TRAIN_IDS,
    DatasetError,
    cityscapes_label_ids,
    open_dataset,
)


def test_cityscapes_table_is_the_official_one():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    official = {
        label.id: (255 if label.ignoreInEval else label.trainId)
        for label in labels.labels
        if label.id >= 0
    }
    assert dict(enumerate(CITYSCAPES_TRAIN_IDS)) == official
    names = [labels.id2label[int(i)].name for i in cityscapes_label_ids()]
    from segdeploy.datasets import CITYSCAPES

    assert tuple(names) == CITYSCAPES.class_names


def _cityscapes(root, stems=("aachen_000000_000019",), split="val", label_value=7):
    for stem in stems:
        city = stem.split("_")[0]
        image = np.full((8, 16, 3), 100, np.uint8)
        write_png(os.path.join(root, "leftImg8bit", split, city, stem + "_leftImg8bit.png"), image)
        label = np.arange(8 * 16).reshape(8, 16) % 34
        label[0, 0] = label_value
        write_png(
            os.path.join(root, "gtFine", split, city, stem + "_gtFine_labelIds.png"),
            label.astype(np.uint8),
        )
    return str(root)


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    root = _cityscapes(tmp_path)
    dataset = open_dataset("cityscapes", root)
    assert dataset.split == "val" and len(dataset) == 1
    frame, target = dataset.load(dataset.samples[0])
    assert frame.shape == (8, 16, 3) and target.shape == (8, 16) and target.dtype == np.uint8
    ids = (np.arange(8 * 16).reshape(8, 16) % 34).astype(np.uint8)
    ids[0, 0] = 7
    assert (target == np.array(CITYSCAPES_TRAIN_IDS, np.uint8)[ids]).all()
    assert set(np.unique(target)) == set(range(19)) | {255}
    # predictions go back to label ids, under <city>/ as the official script searches them
    sample = dataset.samples[0]
    assert dataset.prediction_path(sample) == os.path.join(
        "aachen", "aachen_000000_000019_pred_labelIds.png"
    )
    assert (dataset.prediction_image(np.array([[0, 18]], np.uint8)) == [[7, 33]]).all()


def test_camvid_and_folder_layouts(tmp_path):
    for i in range(2):
        write_png(
            str(tmp_path / "cv" / "test" / "f{}.png".format(i)), np.zeros((4, 6, 3), np.uint8)
        )
        mask = np.array([[0, 10, 11, 255, 3, 3]] * 4, np.uint8)
        write_png(str(tmp_path / "cv" / "testannot" / "f{}.png".format(i)), mask)
    camvid = open_dataset("camvid", str(tmp_path / "cv"))
    assert camvid.num_classes == 11 and len(camvid) == 2
    assert camvid.load(camvid.samples[0])[1][0].tolist() == [0, 10, 255, 255, 3, 3]

    root = tmp_path / "mine"
    write_png(str(root / "images" / "a" / "x.jpg"), np.zeros((4, 6, 3), np.uint8))
    write_png(str(root / "masks" / "a" / "x.png"), np.array([[0, 1, 2, 255, 1, 0]] * 4, np.uint8))
    (root / "classes.txt").write_text("# mine\nbackground\nroad\n\ncar\n")
    folder = open_dataset("folder", str(root))
    assert folder.class_names == ("background", "road", "car") and len(folder) == 1
    assert folder.samples[0].name == os.path.join("a", "x")
    assert folder.load(folder.samples[0])[1][0].tolist() == [0, 1, 2, 255, 1, 0]


def _bad_cases(tmp_path):
    """(name, dataset, root, split, words the message must contain), one per malformed dataset."""
    cases = []
    cases.append(("no root", "cityscapes", str(tmp_path / "nowhere"), None, ["does not exist"]))
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append(("not cityscapes", "cityscapes", str(empty), None, ["no leftImg8bit/"]))
    root = _cityscapes(tmp_path / "train_only", split="train")
    cases.append(("missing split", "cityscapes", root, None, ["no split 'val'", "train"]))
    root = _cityscapes(tmp_path / "unmatched", stems=("aachen_000000_000019", "bonn_000001_000019"))
    os.remove(os.path.join(root, "gtFine", "val", "bonn", "bonn_000001_000019_gtFine_labelIds.png"))
    cases.append(("image without label", "cityscapes", root, None, ["1 of 2 images", "bonn"]))
    root = _cityscapes(tmp_path / "orphan_label")
    os.remove(
        os.path.join(root, "leftImg8bit", "val", "aachen", "aachen_000000_000019_leftImg8bit.png")
    )
    write_png(
        os.path.join(root, "leftImg8bit", "val", "aachen", "aachen_000001_000019_leftImg8bit.png"),
        np.zeros((8, 16, 3), np.uint8),
    )
    cases.append(("label without image", "cityscapes", root, None, ["have no partner"]))
    root = _cityscapes(tmp_path / "range", label_value=200)
    cases.append(("label out of range", "cityscapes", root, None, ["200", "0..33"]))
    cv = tmp_path / "cv"
    write_png(str(cv / "test" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    write_png(str(cv / "testannot" / "a.png"), np.full((4, 4), 12, np.uint8))
    cases.append(("camvid out of range", "camvid", str(cv), None, ["12", "void"]))
    cases.append(("camvid missing split", "camvid", str(cv), "val", ["no split 'val'", "test"]))
    mine = tmp_path / "mine"
    write_png(str(mine / "images" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    write_png(str(mine / "masks" / "a.png"), np.zeros((4, 4), np.uint8))
    cases.append(("no classes file", "folder", str(mine), None, ["classes.txt"]))
    colour = tmp_path / "colour"
    write_png(str(colour / "images" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    write_png(str(colour / "masks" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    (colour / "classes.txt").write_text(NINETEEN)
    cases.append(("colour masks", "folder", str(colour), None, ["single-channel"]))
    folder = tmp_path / "folder_range"
    write_png(str(folder / "images" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    write_png(str(folder / "masks" / "a.png"), np.full((4, 4), 19, np.uint8))
    (folder / "classes.txt").write_text(NINETEEN)
    cases.append(("folder out of range", "folder", str(folder), None, ["value(s) 19", "0..18"]))
    return cases


NINETEEN = "".join("class{}\n".format(i) for i in range(19))

BAD = [
    "no root",
    "not cityscapes",
    "missing split",
    "image without label",
    "label without image",
    "label out of range",
    "camvid out of range",
    "camvid missing split",
    "no classes file",
    "colour masks",
    "folder out of range",
]


@pytest.mark.parametrize("case", BAD)
def test_every_bad_dataset_is_one_clear_line(tmp_path, capsys, engines, camvid_engine, case):
    """Through the CLI: exit 2, one line on stderr, nothing on stdout, no traceback.

    Real engines of the dataset's class count, so that label values (checked as each image
    loads, in a worker thread) are what fails, not the engine.
    """
    from segdeploy.eval.cli import main as segeval

    cases = {c[0]: c[1:] for c in _bad_cases(tmp_path)}
    name, root, split, words = cases[case]
    engine = camvid_engine if name == "camvid" else engines[0]
    argv = ["--engine", engine, "--dataset", name, "--root", root, "--no-progress"]
    if split:
        argv += ["--split", split]
    code = segeval(argv)
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segeval: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert out == ""
    with pytest.raises(DatasetError):  # the Python API raises the same, opening or loading
        dataset = open_dataset(name, root, split)
        for sample in dataset.samples:
            dataset.load(sample)
