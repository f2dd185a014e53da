"""Where the CAM weights come from: the deployed graph's classifier (``fc``) layer, read once.

For a GAP + FC network the CAM of class c is ``sum_k W[c, k] * F[k, y, x]`` (ARCHITECTURE.md,
"CAM and overlay"), so the weights are the ``fc`` weight matrix of the very graph that produced
the features. This object is made once per graph by the graph layer and shared by every backend
and by the CUDA path (which keeps one device copy per GPU instead of uploading per batch).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from maskrt.labels import CLASSES, FEATURE_CHANNELS


class CamWeights:
    """float32[C, 512] classifier weights, on the host and, on demand, on CUDA devices."""

    def __init__(self, host: np.ndarray, *, origin: str = "") -> None:
        host = np.ascontiguousarray(host, dtype=np.float32)
        if host.ndim != 2 or host.shape != (len(CLASSES), FEATURE_CHANNELS):
            raise ValueError(f"CAM weights: expected float32[{len(CLASSES)}, {FEATURE_CHANNELS}], "
                             f"got {host.dtype}{list(host.shape)} ({origin or 'given array'})")
        host.setflags(write=False)
        self.host = host
        self.origin = origin
        self._on_device: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_onnx(cls, path: str | os.PathLike[str]) -> "CamWeights":
        """The weight of the Gemm that produces ``logits`` in a maskrt ONNX graph.

        Read by the graph layer's small protobuf reader, not the ``onnx`` package, which the
        base install does without; a weight stored as float16 behind a Cast is read too.
        """
        from maskrt.graph.export import OUTPUT_NAMES
        from maskrt.graph.onnx_proto import OnnxFormatError, gemm_weight

        try:
            weight = gemm_weight(path, OUTPUT_NAMES[0])
        except OnnxFormatError as err:
            raise ValueError(f"{path}: {err}") from err
        return cls(weight, origin=f"fc of {Path(path).name}")

    @classmethod
    def from_module(cls, net: Any) -> "CamWeights":
        """The ``fc.weight`` of a MaskNet (a torch module)."""
        return cls(net.fc_weight.detach().float().cpu().numpy(), origin="fc of the torch model")

    def on(self, device: Any) -> Any:
        """The weights as a float32 torch tensor on ``device``, uploaded once per device."""
        import torch

        key = str(device)
        with self._lock:
            tensor = self._on_device.get(key)
            if tensor is None:
                tensor = torch.tensor(self.host, device=device)  # a copy: host is read-only
                self._on_device[key] = tensor
        return tensor

    def __repr__(self) -> str:
        return f"CamWeights({self.host.shape[0]}x{self.host.shape[1]}, {self.origin})"
