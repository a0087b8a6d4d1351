"""export: BatchNorm folding, ONNX export, graph clean-up and parity verification (host side).

Importing this package imports nothing heavy; each function imports torch/onnx when called.
"""


def fold_batchnorm(model):
    """Eval-mode copy of ``model`` with BatchNorms folded into their convs (see ``models.fold``)."""
    from ..models.fold import fold_batchnorm as _fold

    return _fold(model)


def export_onnx(model, path, **kwargs):
    """Export ``model`` to a cleaned ONNX file; see ``export.onnx_export.export_onnx``."""
    from .onnx_export import export_onnx as _export

    return _export(model, path, **kwargs)


def make_card(spec, num_classes, height, width, output="labels", **kwargs):
    """The model card of an export of ``spec``; see ``models.modelcard.make_card``."""
    from ..models.modelcard import make_card as _make

    return _make(spec, num_classes, height, width, output, **kwargs)
