"""The resumable ``last.pt``: a maskrt checkpoint plus the training state ``--resume`` needs.

``best.pt`` is a plain maskrt checkpoint (:func:`maskrt.graph.model.save_checkpoint`); ``last.pt``
adds, under :data:`TRAIN_STATE`, the recipe, the optimiser state, the history, the best epoch so
far and torch's RNG state, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from maskrt.graph.model import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    MaskNet,
    ModelLoadError,
)
from maskrt.labels import CLASSES

TRAIN_STATE = "train_state"


def save_last(model: MaskNet, path: Path, meta: dict[str, Any], train_state: dict[str, Any]) -> None:
    """Write ``last.pt`` atomically: a checkpoint with ``train_state`` beside the weights."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "classes": list(CLASSES),
                "state_dict": state, "meta": meta, TRAIN_STATE: train_state}, tmp)
    os.replace(tmp, path)  # never leave a half-written last.pt behind


def load_last(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The contents of a ``last.pt`` written by :func:`save_last`, or a :class:`ModelLoadError`
    saying why ``path`` cannot be resumed from."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"--resume: checkpoint not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT or TRAIN_STATE not in obj:
        raise ModelLoadError(f"--resume: {path} is not a last.pt written by maskrt train "
                             "(it has no optimiser state)")
    return obj


def model_from_last(checkpoint: dict[str, Any]) -> MaskNet:
    """The FP32 MaskNet stored in a loaded ``last.pt``."""
    model = MaskNet()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in checkpoint["state_dict"].items()})
    return model
