"""Class names and palettes of the datasets the zoo's checkpoints were trained on.

Pure data, importable on the device side (Python 3.6, no torch). Palettes are RGB triples in the
order of the training label ids; the Cityscapes colours are those of the official cityscapesScripts
``labels.py`` for the 19 evaluation classes, the CamVid colours those of the 11-class SegNet split.
"""

from collections import namedtuple

Dataset = namedtuple("Dataset", ["name", "class_names", "palette", "ignore_index"])

CITYSCAPES = Dataset(
    name="cityscapes",
    class_names=(
        "road",
        "sidewalk",
        "building",
        "wall",
        "fence",
        "pole",
        "traffic light",
        "traffic sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ),
    palette=(
        (128, 64, 128),
        (244, 35, 232),
        (70, 70, 70),
        (102, 102, 156),
        (190, 153, 153),
        (153, 153, 153),
        (250, 170, 30),
        (220, 220, 0),
        (107, 142, 35),
        (152, 251, 152),
        (70, 130, 180),
        (220, 20, 60),
        (255, 0, 0),
        (0, 0, 142),
        (0, 0, 70),
        (0, 60, 100),
        (0, 80, 100),
        (0, 0, 230),
        (119, 11, 32),
    ),
    ignore_index=255,
)

CAMVID = Dataset(
    name="camvid",
    class_names=(
        "sky",
        "building",
        "pole",
        "road",
        "sidewalk",
        "tree",
        "sign/symbol",
        "fence",
        "car",
        "pedestrian",
        "bicyclist",
    ),
    palette=(
        (128, 128, 128),
        (128, 0, 0),
        (192, 192, 128),
        (128, 64, 128),
        (0, 0, 192),
        (128, 128, 0),
        (192, 128, 128),
        (64, 64, 128),
        (64, 0, 128),
        (64, 64, 0),
        (0, 128, 192),
    ),
    ignore_index=255,
)


def get(name):
    """The dataset record called ``name`` (``cityscapes``, ``camvid``)."""
    from .errors import SegDeployError

    try:
        return _BY_NAME[name]
    except KeyError:
        raise SegDeployError(
            "unknown dataset {!r}; known: {}".format(name, ", ".join(sorted(_BY_NAME)))
        ) from None


def for_num_classes(num_classes):
    """The dataset a head of ``num_classes`` most likely belongs to, or None."""
    return _BY_CLASSES.get(num_classes)


def generic_palette(num_classes):
    """A deterministic, well-spread palette for class counts no dataset record covers."""
    colours = []
    for i in range(num_classes):
        # Bit-reversal over the three channels, as PASCAL VOC's colour map does.
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


# The 20 PASCAL VOC classes and background: torchvision's segmentation models are trained on the
# COCO train subset that has them ("COCO-21"); their colours are VOC's own bit-reversal map.
VOC = Dataset(
    name="voc",
    class_names=(
        "background",
        "aeroplane",
        "bicycle",
        "bird",
        "boat",
        "bottle",
        "bus",
        "car",
        "cat",
        "chair",
        "cow",
        "diningtable",
        "dog",
        "horse",
        "motorbike",
        "person",
        "pottedplant",
        "sheep",
        "sofa",
        "train",
        "tvmonitor",
    ),
    palette=generic_palette(21),
    ignore_index=255,
)

_BY_NAME = {d.name: d for d in (CITYSCAPES, CAMVID, VOC)}
_BY_CLASSES = {len(d.class_names): d for d in (CITYSCAPES, CAMVID, VOC)}
