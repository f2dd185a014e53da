"""The one place that tells NumPy arrays from torch tensors, and host from GPU.

maskrt takes both: NumPy everywhere, torch CUDA tensors where a backend leaves its outputs on the
GPU. Nothing here imports torch: a tensor can only exist if the caller already imported it, so
asking ``sys.modules`` is exact and keeps the default (ONNX Runtime) path free of torch.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from maskrt.image import dtype_error


def is_tensor(x: object) -> bool:
    """``x`` is a torch.Tensor (on any device)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_cuda(x: object) -> bool:
    """``x`` is a torch tensor on a CUDA device."""
    return is_tensor(x) and bool(x.is_cuda)  # type: ignore[attr-defined]


def to_host(x: Any) -> np.ndarray:
    """A NumPy array of ``x``: tensors are copied from their device (a CUDA copy waits for the
    stream that produces them), arrays pass through."""
    if is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def refuse_float_tensor(x: Any, what: str) -> None:
    """Raise :func:`maskrt.image.dtype_error` for a floating-point torch tensor frame: the same
    refusal as a float NumPy frame, before it is copied or cast anywhere."""
    if is_tensor(x) and x.is_floating_point():
        raise dtype_error(what, x.dtype)
