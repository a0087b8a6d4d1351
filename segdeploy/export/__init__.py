"""export: BatchNorm folding, ONNX export, graph clean-up and parity verification (host side).

Importing this package imports nothing heavy; each function imports torch/onnx when called.
"""


def fold_batchnorm(model):
    """Eval-mode copy of ``model`` with BatchNorms folded into their convs (see ``export.fold``)."""
    from .fold import fold_batchnorm as _fold

    return _fold(model)
