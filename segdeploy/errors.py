"""One exception family for user mistakes.

Every CLI catches ``SegDeployError``, prints its one-line message and exits with status 2.
Anything else is a bug in segdeploy and keeps its traceback.
"""


class SegDeployError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it."""

    exit_code = 2


class UnknownModelError(SegDeployError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(SegDeployError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


class ResolutionError(SegDeployError, ValueError):
    """An input size the model cannot take."""


class MissingDependencyError(SegDeployError, ImportError):
    """An optional library that the requested feature needs is not installed."""


class ExportError(SegDeployError):
    """Export to ONNX failed, or the output location cannot be written."""


class VerificationError(SegDeployError):
    """An exported graph disagrees with the PyTorch model beyond the tolerance."""


class EngineError(SegDeployError):
    """An engine file that cannot be built, opened or run here."""


class EngineMismatchError(EngineError):
    """An engine built for another GPU or library version than the one present."""


class FrameError(SegDeployError, ValueError):
    """A frame passed to ``Runtime.infer`` that is not what the runtime expects."""


class OutputError(SegDeployError):
    """An output file or directory that cannot be written (full disk, read-only, a directory)."""


class ManifestError(EngineError):
    """An artifact whose content disagrees with the manifest (``report.json``) beside it."""
