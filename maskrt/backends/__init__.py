"""Backends: one interface (:class:`Backend`), chosen by name with :func:`create_backend`."""

from __future__ import annotations

import importlib
from typing import Any

from maskrt.backends.base import Backend, BackendUnavailable, check_images

#: name -> "module:class"; modules are imported only when their backend is created, so a
#: missing optional dependency (tensorrt, a GPU) only matters to those who ask for it.
BACKENDS: dict[str, str] = {
    "onnxruntime": "maskrt.backends.ort_backend:OnnxRuntimeBackend",
    "torch": "maskrt.backends.torch_backend:TorchBackend",
    "tensorrt": "maskrt.backends.tensorrt_backend:TensorRTBackend",
}
ALIASES = {"ort": "onnxruntime", "trt": "tensorrt", "pytorch": "torch"}
DEFAULT_BACKEND = "onnxruntime"


def create_backend(name: str = DEFAULT_BACKEND, model: Any = None, **options: Any) -> Backend:
    """A ready backend. ``model``: None (shipped weights), a MaskNet, or a checkpoint path.

    Options are backend specific (``onnx_path``, ``threads`` for onnxruntime; ``device``,
    ``half``, ``cuda_graphs`` for torch; ``engine_dir``, ``max_batch`` for tensorrt).
    Raises :class:`BackendUnavailable` saying why and what to install when it cannot run here.
    """
    key = ALIASES.get(name, name)
    if key not in BACKENDS:
        raise ValueError(f"backend: expected one of {sorted(BACKENDS)}, got {name!r}")
    module_name, class_name = BACKENDS[key].split(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class(model=model, **options)


__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "DEFAULT_BACKEND", "check_images",
           "create_backend"]
