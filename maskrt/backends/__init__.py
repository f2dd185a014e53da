"""Backends: one interface (:class:`Backend`), one table (``registry.py``), one module per runtime.

* ``base.py``: the interface and input validation every backend shares.
* ``registry.py``: names, aliases, the default, options; :func:`create_backend`.
* ``ort.py`` (ONNX Runtime, CPU), ``pytorch.py`` (torch CPU / CUDA FP16), ``tensorrt/`` (engine
  build and cache, runtime, the TensorRT version rules).

Backends are given a :class:`~maskrt.graph.Graph`, never a model: exporting is the graph layer's.
"""

from maskrt.backends.base import Backend, BackendUnavailable, check_images
from maskrt.backends.registry import (ALIASES, BACKENDS, DEFAULT_BACKEND, add_backend_arguments,
                                      backend_options, create_backend)

__all__ = ["ALIASES", "BACKENDS", "Backend", "BackendUnavailable", "DEFAULT_BACKEND",
           "add_backend_arguments", "backend_options", "check_images", "create_backend"]
