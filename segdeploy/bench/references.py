"""Published speed figures, kept as data and printed beside the user's when model and protocol
match (with the device difference stated: a T4 figure says little about a laptop CPU).

Sources are the papers in /work/shared/papers: RegSeg Tables 8-10 and Sec. 4.7 (T4, PyTorch 1.9,
CUDA 10.2, mixed precision); SwiftNet Table 1 and Sec. 4.2 (GTX 1080 Ti, CUDA 10.0, cuDNN 7.3,
PyTorch 1.0rc1, BatchNorm folded, mean over 1000 passes). Python 3.6 compatible.
"""

from collections import namedtuple

PaperFigure = namedtuple(
    "PaperFigure",
    [
        "model",
        "protocol",
        "dataset",
        "height",
        "width",
        "fps",
        "device",
        "precision",
        "software",
        "source",
    ],
)

FIGURES = (
    PaperFigure(
        "regseg",
        "regseg",
        "cityscapes",
        1024,
        2048,
        30.0,
        "t4",
        "mixed",
        "PyTorch 1.9, CUDA 10.2",
        "RegSeg Table 9 / Sec. 4.7",
    ),
    PaperFigure(
        "regseg",
        "regseg",
        "camvid",
        720,
        960,
        70.0,
        "t4",
        "mixed",
        "PyTorch 1.9, CUDA 10.2",
        "RegSeg Table 8 / Sec. 4.7",
    ),
    PaperFigure(
        "swiftnet_rn18",
        "swiftnet",
        "cityscapes",
        1024,
        2048,
        39.9,
        "gtx1080ti",
        "fp32",
        "PyTorch 1.0rc1, CUDA 10.0, cuDNN 7.3",
        "SwiftNet Table 1 / Sec. 4.2",
    ),
    PaperFigure(
        "swiftnet_rn18",
        "swiftnet",
        "cityscapes",
        512,
        1024,
        134.9,
        "gtx1080ti",
        "fp32",
        "PyTorch 1.0rc1, CUDA 10.0, cuDNN 7.3",
        "SwiftNet Table 1 (half resolution)",
    ),
    PaperFigure(
        "swiftnet_mnv2",
        "swiftnet",
        "cityscapes",
        1024,
        2048,
        27.7,
        "gtx1080ti",
        "fp32",
        "PyTorch 1.0rc1, CUDA 10.0, cuDNN 7.3",
        "SwiftNet Table 1",
    ),
)


def matching(model, protocol=None, height=None, width=None):
    """Figures for ``model`` (and ``protocol`` / resolution when given)."""
    family = str(model).lower()
    out = []
    for fig in FIGURES:
        if fig.model != family:
            continue
        if protocol is not None and fig.protocol != protocol:
            continue
        if height is not None and (fig.height, fig.width) != (int(height), int(width)):
            continue
        out.append(fig)
    return out


def describe(fig, our_device):
    """One line: the paper's figure and how its device differs from ours."""
    return (
        "paper: {} at {}x{}: {:.1f} FPS on {} ({}, {}; {}); measured here on {}: a different "
        "device, compare the protocol, not the number".format(
            fig.model,
            fig.height,
            fig.width,
            fig.fps,
            fig.device,
            fig.precision,
            fig.software,
            fig.source,
            our_device,
        )
    )
