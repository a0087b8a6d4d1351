"""bench: the timing harness, its protocols, complexity counting, reports (device side).

Import-light: nothing here imports torch or a backend until it is used.
"""


def complexity(model, input_hw, in_channels=3):
    """Params and multiply-adds of ``model`` at ``input_hw``; see ``bench.counting``."""
    from .counting import complexity as _complexity

    return _complexity(model, input_hw, in_channels)
