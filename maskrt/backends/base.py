"""The one small interface every backend implements."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Any

import numpy as np

from maskrt.labels import INPUT_SIZE


class BackendUnavailable(RuntimeError):
    """The backend cannot run on this machine; the message says why and what to install."""


class Backend(abc.ABC):
    """Runs the deployed graph: ``uint8[N, 224, 224, 3]`` BGR -> ``(logits, features)``.

    ``logits`` is float32[N, 2] and ``features`` float32 (or float16 for FP16 backends)
    [N, 512, 7, 7]. NumPy in gives NumPy out. GPU backends also take a torch CUDA tensor and
    then return torch CUDA tensors, so features never leave the device.

    A backend owns its resources (sessions, device buffers, streams): use it as a context
    manager or call :meth:`close`.
    """

    #: registry name, e.g. "onnxruntime"
    name: str = ""
    #: "fp32" or "fp16"
    precision: str = "fp32"

    @property
    @abc.abstractmethod
    def fc_weight(self) -> np.ndarray:
        """float32[2, 512]: the classifier weights the CAM uses."""

    @abc.abstractmethod
    def infer(self, images: Any) -> tuple[Any, Any]:
        """images: uint8[N, 224, 224, 3] BGR, C-contiguous -> (logits, features)."""

    def describe(self) -> str:
        """One line naming backend, device and precision, for logs and benchmark tables."""
        return f"{self.name} ({self.precision})"

    def close(self) -> None:
        """Release what the backend holds. Idempotent."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def check_images(images: np.ndarray) -> np.ndarray:
    """Validate a host batch for :meth:`Backend.infer`; returns it C-contiguous."""
    if not isinstance(images, np.ndarray):
        raise ValueError(f"images: expected a numpy uint8 array [N,{INPUT_SIZE},{INPUT_SIZE},3], "
                         f"got {type(images).__name__}")
    expected = (INPUT_SIZE, INPUT_SIZE, 3)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
        raise ValueError(f"images: expected uint8[N,{INPUT_SIZE},{INPUT_SIZE},3], "
                         f"got {images.dtype}{list(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images: expected at least one image, got an empty batch")
    return np.ascontiguousarray(images)
