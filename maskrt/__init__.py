"""maskrt: face-mask classification with class activation maps, as fast as the hardware allows.

Public API (imported lazily, so ``import maskrt`` stays cheap and a missing optional piece only
matters to code that uses it):

* :class:`Engine`, :class:`Result` - classify and explain frames the host already decoded.
* :func:`cam_overlay`, :func:`cam_reference` - the fused CAM + overlay kernel and its reference.
* :func:`export_onnx`, :func:`build_model`, :func:`load_model` - the network and its graph.
* :func:`create_backend` - onnxruntime / torch / tensorrt behind one interface; :class:`Graph` -
  the graph backends load.
* :class:`Pipeline`, :class:`Stage`, :class:`Sink` - streaming many sources, and its seams.

The package's layers (ARCHITECTURE.md): ``graph/`` -> ``backends/`` -> ``cam/`` -> ``engine.py``
-> ``stream/``; ``image.py`` decodes, ``train/`` trains and evaluates, ``cli/`` has one module
per verb, ``tools/`` benchmarks and checks.
"""

from __future__ import annotations

import importlib
from typing import Any

from maskrt.labels import CLASSES

__version__ = "0.1.0"

_EXPORTS = {
    "Engine": "maskrt.engine",
    "Result": "maskrt.engine",
    "cam_overlay": "maskrt.cam",
    "cam_reference": "maskrt.cam",
    "export_onnx": "maskrt.graph.export",
    "build_model": "maskrt.graph.model",
    "load_model": "maskrt.graph.model",
    "create_backend": "maskrt.backends",
    "Pipeline": "maskrt.stream.pipeline",
    "Stage": "maskrt.stream.stages",
    "Sink": "maskrt.stream.sinks",
    "Graph": "maskrt.graph.loader",
}

__all__ = ["CLASSES", "__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'maskrt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
