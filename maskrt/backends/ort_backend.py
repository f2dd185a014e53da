"""ONNX Runtime on the CPU: the embedded default backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from maskrt.backends.base import Backend, BackendUnavailable, check_images
from maskrt.export import INPUT_NAME, OUTPUT_NAMES


class OnnxRuntimeBackend(Backend):
    """Runs the exported graph with ONNX Runtime's CPU provider, full graph optimisation.

    ``onnx_path`` overrides the graph (default: the model exported once into the cache);
    ``threads`` is the intra-op thread count (default: every core of the machine).
    """

    name = "onnxruntime"
    precision = "fp32"

    def __init__(self, model: Any = None, *, onnx_path: str | os.PathLike[str] | None = None,
                 threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendUnavailable("the onnxruntime backend needs ONNX Runtime: "
                                     "pip install onnxruntime") from err
        self.onnx_path = Path(onnx_path) if onnx_path else _export_cached(model)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.threads = threads or os.cpu_count() or 1
        options.intra_op_num_threads = self.threads
        self._session = ort.InferenceSession(str(self.onnx_path), options,
                                             providers=["CPUExecutionProvider"])
        self._fc_weight = fc_weight_from_onnx(self.onnx_path)

    @property
    def fc_weight(self) -> np.ndarray:
        return self._fc_weight

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._session is None:
            raise RuntimeError("onnxruntime backend: used after close()")
        logits, features = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: check_images(images)})
        return logits, features

    def describe(self) -> str:
        return f"onnxruntime {_ort_version()} CPU ({self.threads} threads, fp32)"

    def close(self) -> None:
        self._session = None


def _ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


def _export_cached(model: Any) -> Path:
    from maskrt.model import load_model
    from maskrt.onnx_cache import onnx_for_model

    return onnx_for_model(load_model(model))


def fc_weight_from_onnx(path: Path) -> np.ndarray:
    """float32[2, 512] weight of the Gemm that produces ``logits``."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    initializers = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Gemm" and OUTPUT_NAMES[0] in node.output:
            weight = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            return np.ascontiguousarray(weight if trans_b else weight.T)
    raise ValueError(f"{path}: expected a Gemm producing '{OUTPUT_NAMES[0]}' (a maskrt graph)")
