"""The one small interface every backend implements, and the input validation they share."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Any

import numpy as np

from maskrt.cam.weights import CamWeights
from maskrt.devices import is_tensor
from maskrt.labels import INPUT_SIZE


class BackendUnavailable(RuntimeError):
    """The backend cannot run on this machine; the message says why and what to install."""


class Backend(abc.ABC):
    """Runs the deployed graph: ``uint8[N, 224, 224, 3]`` BGR -> ``(logits, features)``.

    ``logits`` is float32[N, 2] and ``features`` float32 (or float16 for FP16 backends)
    [N, 512, 7, 7]. NumPy in gives NumPy out. GPU backends also take a torch CUDA tensor and
    then return torch CUDA tensors, so features never leave the device.

    :meth:`infer` validates the batch once, here, then calls :meth:`_infer_host` (NumPy) or
    :meth:`_infer_device` (a torch tensor). A backend owns its resources (sessions, device
    buffers, streams): use it as a context manager or call :meth:`close`.
    """

    #: registry name, e.g. "onnxruntime"
    name: str = ""
    #: "fp32" or "fp16"
    precision: str = "fp32"
    #: the device tensors must be on for :meth:`_infer_device` (a torch.device), None: host only
    device: Any = None

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.closed = False

    @property
    def cam_weights(self) -> CamWeights:
        """The classifier weights the CAM uses: the graph's, read once, shared by every backend."""
        return self.graph.cam_weights

    @property
    def fc_weight(self) -> np.ndarray:
        """float32[2, 512] on the host (``cam_weights.host``)."""
        return self.cam_weights.host

    def infer(self, images: Any) -> tuple[Any, Any]:
        """images: uint8[N, 224, 224, 3] BGR, NumPy or (GPU backends) a torch tensor on the
        backend's device -> (logits, features)."""
        if self.closed:
            raise RuntimeError(f"{self.name} backend: used after close()")
        if is_tensor(images):
            return self._infer_device(check_device_batch(images, self.device))
        return self._infer_host(check_images(images))

    @abc.abstractmethod
    def _infer_host(self, images: np.ndarray) -> tuple[Any, Any]:
        """A validated, C-contiguous NumPy batch -> (logits, features)."""

    def _infer_device(self, images: Any) -> tuple[Any, Any]:
        raise ValueError(f"images: the {self.name} backend takes NumPy arrays, got a torch "
                         f"tensor on {images.device}")

    def describe(self) -> str:
        """One line naming backend, device and precision, for logs and benchmark tables."""
        return f"{self.name} ({self.precision})"

    def close(self) -> None:
        """Release what the backend holds. Idempotent."""
        self.closed = True

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


def check_device_batch(images: Any, device: Any) -> Any:
    """Validate a torch batch: uint8[N, 224, 224, 3], N >= 1, on ``device``; returns it
    contiguous (ValueError naming what came otherwise)."""
    import torch

    expected = (INPUT_SIZE, INPUT_SIZE, 3)
    if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"images: expected uint8[N,{INPUT_SIZE},{INPUT_SIZE},3], got "
                         f"{images.dtype}{list(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images: expected at least one image, got an empty batch")
    if device is not None and images.device != device:
        raise ValueError(f"images: expected a tensor on {device}, got {images.device}")
    return images.contiguous()
