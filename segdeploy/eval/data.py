"""Evaluation datasets: Cityscapes, CamVid (11 classes) and a folder of your own.

Each dataset lists its samples (an image and its label file) and loads one as
``(frame, target)``: the frame as ``cv2.imread`` returns it (H x W x 3 uint8 BGR) and the target
as an (H, W) uint8 map of training ids, ``IGNORE`` (255) where the official evaluation ignores the
pixel. Every malformed dataset (a wrong root, a missing split, images and labels that do not pair
up, label values the dataset does not define) raises ``DatasetError`` with one sentence saying
what is wrong and how to fix it.

Layouts::

    cityscapes  ROOT/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
                ROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    camvid      ROOT/<split>/<name>.png  and  ROOT/<split>annot/<name>.png   (SegNet's layout:
                ids 0..10 in the order of ``segdeploy.datasets.CAMVID``, 11 = void; 255 = void too)
    folder      ROOT/images/[<split>/]<name>.<ext>  and  ROOT/masks/[<split>/]<name>.png,
                ROOT/classes.txt (one class name per line, in label order); 255 = ignored

Cityscapes ground truth holds the 34 *label ids* of the official ``labels.py``; the 19 evaluated
classes get training ids 0..18 and every other id is ignored, exactly as the official script does
(its ``ignoreInEval`` column). Predictions are written back as label ids for the official script.
Python 3.6 compatible; numpy and OpenCV only.
"""

import os

import numpy as np

from .. import datasets as records
from .._deps import require
from ..errors import SegDeployError

IGNORE = 255
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(SegDeployError, ValueError):
    """A dataset that is missing, laid out differently than expected, or holds invalid labels."""


# Cityscapes label id -> training id, for the 34 ids 0..33 of the official labels table
# (cityscapesscripts/helpers/labels.py). 255: not evaluated ("ignoreInEval"). The id -1
# (license plate) never appears in label images.
CITYSCAPES_TRAIN_IDS = (
    (255, 255, 255, 255, 255, 255, 255)  # 0-6: unlabeled, ego vehicle, rectification border,
    # out of roi, static, dynamic, ground
    + (0, 1, 255, 255)  # 7 road, 8 sidewalk, 9 parking, 10 rail track
    + (
        2,
        3,
        4,
        255,
        255,
        255,
    )  # 11 building, 12 wall, 13 fence, 14 guard rail, 15 bridge, 16 tunnel
    + (5, 255, 6, 7)  # 17 pole, 18 polegroup, 19 traffic light, 20 traffic sign
    + (8, 9, 10)  # 21 vegetation, 22 terrain, 23 sky
    + (11, 12, 13, 14, 15)  # 24 person, 25 rider, 26 car, 27 truck, 28 bus
    + (255, 255, 16, 17, 18)  # 29 caravan, 30 trailer, 31 train, 32 motorcycle, 33 bicycle
)
CITYSCAPES_MAX_ID = len(CITYSCAPES_TRAIN_IDS) - 1  # 33


def cityscapes_label_ids():
    """(19,) uint8: the label id of each training id (the inverse map, for predictions)."""
    ids = np.zeros(19, np.uint8)
    for label_id, train_id in enumerate(CITYSCAPES_TRAIN_IDS):
        if train_id != IGNORE:
            ids[train_id] = label_id
    return ids


class Sample(object):
    """One image and its label file; ``name`` identifies it in reports, ``key`` in output paths."""

    __slots__ = ("name", "image", "label", "key")

    def __init__(self, name, image, label, key):
        self.name = name
        self.image = image
        self.label = label
        self.key = key

    def __repr__(self):
        return "Sample({!r})".format(self.name)


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        raise DatasetError("cannot read {}: {}".format(path, exc.strerror or exc)) from None


def _check_root(root, kind, expected):
    if root is None:
        raise DatasetError("give --root, the directory of the {} dataset".format(kind))
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DatasetError(
            "dataset root {} does not exist or is not a directory; pass the folder that "
            "holds {}".format(root, expected)
        )
    return root


def _check_split(base, split, what, root):
    path = os.path.join(base, split)
    if not os.path.isdir(path):
        found = [d for d in _listdir(base) if os.path.isdir(os.path.join(base, d))]
        raise DatasetError(
            "no split {!r} in {} ({}); pick one of: {}".format(
                split, root, what, ", ".join(found) if found else "none found"
            )
        )
    return path


class EvalDataset(object):
    """Base class: ``samples``, ``load(sample)``, and how predictions are written."""

    name = "dataset"

    def __init__(self, record, root, split):
        self.record = record
        self.root = root
        self.split = split
        self.class_names = tuple(record.class_names)
        self.num_classes = len(self.class_names)
        self.palette = tuple(record.palette)
        self.samples = []
        self._cv2 = require("cv2", "segeval")
        lut = np.full(256, IGNORE, np.uint8)
        self._lut = lut

    def __len__(self):
        return len(self.samples)

    def __repr__(self):
        return "{}({}{}, {} images)".format(
            type(self).__name__,
            self.root,
            "" if self.split is None else " split {!r}".format(self.split),
            len(self.samples),
        )

    def read_image(self, path):
        frame = self._cv2.imread(path, self._cv2.IMREAD_COLOR)
        if frame is None:
            raise DatasetError("cannot read image {}: not an image OpenCV can decode".format(path))
        return frame

    def read_label(self, path):
        label = self._cv2.imread(path, self._cv2.IMREAD_UNCHANGED)
        if label is None:
            raise DatasetError(
                "cannot read label file {}: not an image OpenCV can decode".format(path)
            )
        if label.ndim != 2 or label.dtype != np.uint8:
            raise DatasetError(
                "label file {} is a {} image of shape {}; segeval needs single-channel "
                "8-bit label-index PNGs (not colour masks)".format(
                    path, label.dtype, tuple(label.shape)
                )
            )
        return label

    def check_values(self, label, path):
        """Raise DatasetError when ``label`` holds values the dataset does not define."""
        valid = self._valid
        present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
        bad = [int(v) for v in present if not valid[v]]
        if bad:
            raise DatasetError(
                "label file {} holds value(s) {} outside the {} dataset's range ({}); is "
                "this the right --dataset?".format(
                    path, ", ".join(str(v) for v in bad[:8]), self.name, self.value_range
                )
            )

    def load(self, sample):
        """-> (frame, target): BGR uint8 image and (H, W) uint8 training ids, 255 ignored."""
        frame = self.read_image(sample.image)
        label = self.read_label(sample.label)
        self.check_values(label, sample.label)
        return frame, self._lut[label]

    # --- predictions ------------------------------------------------------------------------
    def prediction_path(self, sample):
        """Relative path of the prediction PNG of ``sample``."""
        return sample.key + ".png"

    def prediction_image(self, labels):
        """Training-id label map -> what the prediction PNG holds."""
        return labels


class Cityscapes(EvalDataset):
    name = "cityscapes"
    value_range = "label ids 0..{}".format(CITYSCAPES_MAX_ID)

    def __init__(self, root, split="val"):
        root = _check_root(root, "Cityscapes", "leftImg8bit/ and gtFine/")
        EvalDataset.__init__(self, records.CITYSCAPES, root, split)
        images_dir = os.path.join(root, "leftImg8bit")
        labels_dir = os.path.join(root, "gtFine")
        for path in (images_dir, labels_dir):
            if not os.path.isdir(path):
                raise DatasetError(
                    "{} is not a Cityscapes root: it has no {}/ folder (expected "
                    "leftImg8bit/<split>/<city>/ and gtFine/<split>/<city>/)".format(
                        root, os.path.basename(path)
                    )
                )
        images_split = _check_split(images_dir, split, "leftImg8bit/", root)
        labels_split = _check_split(labels_dir, split, "gtFine/", root)
        images, labels = {}, {}
        for city in _listdir(images_split):
            city_dir = os.path.join(images_split, city)
            if os.path.isdir(city_dir):
                for f in _listdir(city_dir):
                    if f.endswith("_leftImg8bit.png"):
                        images[os.path.join(city, f[: -len("_leftImg8bit.png")])] = city_dir
        for city in _listdir(labels_split):
            city_dir = os.path.join(labels_split, city)
            if os.path.isdir(city_dir):
                for f in _listdir(city_dir):
                    if f.endswith("_gtFine_labelIds.png"):
                        labels[os.path.join(city, f[: -len("_gtFine_labelIds.png")])] = city_dir
        if not images:
            raise DatasetError(
                "no *_leftImg8bit.png images under {}; is --root the Cityscapes folder "
                "that holds leftImg8bit/{}/<city>/?".format(images_split, split)
            )
        _pair_up(
            images,
            labels,
            lambda k: os.path.join(images_split, k + "_leftImg8bit.png"),
            lambda k: os.path.join(labels_split, k + "_gtFine_labelIds.png"),
        )
        for key in sorted(images):
            self.samples.append(
                Sample(
                    name=os.path.basename(key),
                    image=os.path.join(images_split, key + "_leftImg8bit.png"),
                    label=os.path.join(labels_split, key + "_gtFine_labelIds.png"),
                    key=key,
                )
            )
        self._lut[: len(CITYSCAPES_TRAIN_IDS)] = CITYSCAPES_TRAIN_IDS
        self._valid = np.zeros(256, np.bool_)
        self._valid[: CITYSCAPES_MAX_ID + 1] = True
        # trainId -> labelId for predictions; 0 (unlabeled) for anything else.
        self._to_label_ids = np.zeros(256, np.uint8)
        self._to_label_ids[:19] = cityscapes_label_ids()

    def prediction_path(self, sample):
        # <city>/<city>_<seq>_<frame>_pred_labelIds.png: the official script finds a prediction
        # by the pattern <city>_<seq>_<frame>*.png anywhere under its results folder.
        return sample.key + "_pred_labelIds.png"

    def prediction_image(self, labels):
        return self._to_label_ids[labels]


def _pair_up(images, labels, image_path, label_path):
    """Raise DatasetError unless the keys of ``images`` and ``labels`` are the same set."""
    for have, other, kind, path, expected in (
        (images, labels, "images", image_path, label_path),
        (labels, images, "label files", label_path, image_path),
    ):
        orphans = sorted(set(have) - set(other))
        if orphans:
            raise DatasetError(
                "{} of {} {} have no partner (first: {}, expected {}); every image needs "
                "its label file and every label file its image".format(
                    len(orphans), len(have), kind, path(orphans[0]), expected(orphans[0])
                )
            )


def _paired_samples(images_dir, images, labels_dir, labels):
    """Samples, sorted by key, for ``images`` and ``labels`` ({key: file name} in ``images_dir``
    and ``labels_dir``, label files ``<key>.png``); DatasetError unless they pair up."""
    _pair_up(
        images,
        labels,
        lambda k: os.path.join(images_dir, images.get(k, k + ".png")),
        lambda k: os.path.join(labels_dir, k + ".png"),
    )
    return [
        Sample(
            name=key,
            image=os.path.join(images_dir, images[key]),
            label=os.path.join(labels_dir, labels[key]),
            key=key,
        )
        for key in sorted(images)
    ]


class CamVid(EvalDataset):
    name = "camvid"
    value_range = "ids 0..10, 11 or 255 for void"

    def __init__(self, root, split="test"):
        root = _check_root(
            root, "CamVid", "train/, trainannot/, val/, valannot/, test/, testannot/"
        )
        EvalDataset.__init__(self, records.CAMVID, root, split)
        images_dir = os.path.join(root, split)
        labels_dir = os.path.join(root, split + "annot")
        if not os.path.isdir(images_dir) or not os.path.isdir(labels_dir):
            found = [
                d
                for d in _listdir(root)
                if os.path.isdir(os.path.join(root, d))
                and os.path.isdir(os.path.join(root, d + "annot"))
            ]
            raise DatasetError(
                "no split {!r} in CamVid root {} (expected {}/ and {}annot/); splits found: "
                "{}".format(split, root, split, split, ", ".join(found) or "none")
            )
        images = _stems(images_dir)
        labels = {k: v for k, v in _stems(labels_dir).items() if v.endswith(".png")}
        if not images:
            raise DatasetError("no images in {}".format(images_dir))
        self.samples.extend(_paired_samples(images_dir, images, labels_dir, labels))
        self._lut[:11] = np.arange(11)
        self._valid = np.zeros(256, np.bool_)
        self._valid[:12] = True
        self._valid[IGNORE] = True


def _stems(directory):
    """{name without suffix: file name} of the image files in ``directory``."""
    found = {}
    for f in _listdir(directory):
        stem, ext = os.path.splitext(f)
        if ext.lower() in IMAGE_SUFFIXES and os.path.isfile(os.path.join(directory, f)):
            found[stem] = f
    return found


def read_classes(path):
    """Class names from a classes file: one per line, blank lines and ``#`` comments skipped."""
    from .._io import read_text

    lines = read_text(path, "the classes file", DatasetError).splitlines()
    names = [line.strip() for line in lines]
    names = [n for n in names if n and not n.startswith("#")]
    if not names or len(names) > 255:
        raise DatasetError(
            "the classes file {} must name 1 to 255 classes, one per line; it names {}".format(
                path, len(names)
            )
        )
    return tuple(names)


class Folder(EvalDataset):
    """``ROOT/images``, ``ROOT/masks`` (same relative names, ``.png``) and ``ROOT/classes.txt``."""

    name = "folder"

    def __init__(self, root, split=None, classes=None):
        root = _check_root(root, "folder", "images/, masks/ and classes.txt")
        classes = classes or os.path.join(root, "classes.txt")
        names = read_classes(classes)
        known = records.for_num_classes(len(names))
        palette = (
            known.palette
            if known is not None and tuple(known.class_names) == names
            else records.generic_palette(len(names))
        )
        record = records.Dataset("folder", names, palette, IGNORE)
        EvalDataset.__init__(self, record, root, split)
        images_dir = os.path.join(root, "images")
        labels_dir = os.path.join(root, "masks")
        for path in (images_dir, labels_dir):
            if not os.path.isdir(path):
                raise DatasetError(
                    "{} has no {}/ folder; a folder dataset is ROOT/images/, ROOT/masks/ "
                    "(label-index PNGs of the same names) and ROOT/classes.txt".format(
                        root, os.path.basename(path)
                    )
                )
        if split:
            images_dir = _check_split(images_dir, split, "images/", root)
            labels_dir = _check_split(labels_dir, split, "masks/", root)
        images = _walk(images_dir, IMAGE_SUFFIXES)
        labels = _walk(labels_dir, (".png",))
        if not images:
            raise DatasetError(
                "no images ({}) under {}".format(" ".join(IMAGE_SUFFIXES), images_dir)
            )
        self.samples.extend(_paired_samples(images_dir, images, labels_dir, labels))
        k = len(names)
        self.value_range = "0..{} for its {} classes, 255 ignored".format(k - 1, k)
        self._lut[:k] = np.arange(k)
        self._valid = np.zeros(256, np.bool_)
        self._valid[:k] = True
        self._valid[IGNORE] = True


def _walk(directory, suffixes):
    """{relative path without suffix: relative path} of the files under ``directory``."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for f in sorted(filenames):
            stem, ext = os.path.splitext(f)
            if ext.lower() in suffixes:
                rel = os.path.relpath(os.path.join(dirpath, f), directory)
                found[os.path.splitext(rel)[0]] = rel
    return found


DATASETS = {"cityscapes": Cityscapes, "camvid": CamVid, "folder": Folder}
DEFAULT_SPLITS = {"cityscapes": "val", "camvid": "test", "folder": None}


def open_dataset(name, root, split=None, classes=None):
    """The dataset ``name`` (cityscapes, camvid, folder) at ``root``; split: its default if None."""
    if name not in DATASETS:
        raise DatasetError(
            "unknown dataset {!r}; pick one of: {}".format(name, ", ".join(sorted(DATASETS)))
        )
    if split is None:
        split = DEFAULT_SPLITS[name]
    if name == "folder":
        return Folder(root, split, classes)
    if classes is not None:
        raise DatasetError("--classes is for --dataset folder; {} has its own".format(name))
    return DATASETS[name](root, split)
