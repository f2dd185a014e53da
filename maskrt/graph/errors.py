"""The graph layer's errors and warnings, importable without PyTorch.

They live apart from ``model.py`` (which imports torch) so that the command line and the default
ONNX Runtime path can catch them on an install without PyTorch.
"""

from __future__ import annotations

#: What to tell users who need PyTorch on the base install.
TORCH_EXTRA = "pip install 'maskrt[torch]'"


class ModelLoadError(RuntimeError):
    """A checkpoint or pretrained weight file could not be found or read."""


class TorchUnavailable(ModelLoadError, ImportError):
    """PyTorch is needed (a checkpoint, training, export, the torch backend) but not installed.

    Both a ModelLoadError (the command line reports those without a traceback) and an
    ImportError (what callers probing for optional pieces catch).
    """


class UntrainedModelWarning(UserWarning):
    """The model in use was never trained."""


def require_torch(what: str) -> None:
    """Import torch, or raise :class:`TorchUnavailable` saying ``what`` needs it and how to get it."""
    try:
        import torch  # noqa: F401  (the import is the check)
    except ImportError as err:
        raise TorchUnavailable(f"{what} needs PyTorch, which is not installed here: "
                               f"{TORCH_EXTRA}") from err
