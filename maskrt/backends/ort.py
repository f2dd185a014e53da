"""ONNX Runtime on the CPU: the embedded default backend."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from maskrt.backends.base import Backend, BackendUnavailable
from maskrt.graph.export import INPUT_NAME, OUTPUT_NAMES


class OnnxRuntimeBackend(Backend):
    """Runs the graph's ONNX file with ONNX Runtime's CPU provider, full graph optimisation.

    threads: intra-op thread count (default: every core of the machine).
    precision: "int8" (the graph's statically quantized twin, :mod:`maskrt.graph.quantize`;
    outputs stay float32), "fp32" (the graph as exported), or "auto" (default): int8 when the
    graph has a current twin (the shipped graph has: same labels as FP32 on every val face, about
    twice the speed on VNNI CPUs), else fp32.
    """

    name = "onnxruntime"

    def __init__(self, graph: Any, *, threads: int | None = None, precision: str = "auto") -> None:
        super().__init__(graph)
        if precision not in ("auto", "fp32", "int8"):
            raise ValueError(f"onnxruntime backend: precision: expected 'auto', 'fp32' or 'int8', "
                             f"got {precision!r}")
        if precision == "auto":  # the INT8 twin when it is current (looked up once)
            twin, problem = graph.int8_twin()
            precision, self.onnx_path = ("fp32", graph.onnx_path()) if problem else ("int8", twin)
        else:
            self.onnx_path = graph.int8_onnx_path() if precision == "int8" else graph.onnx_path()
        self.precision = precision
        self._session, self.threads = cpu_session(self.onnx_path, threads, "onnxruntime backend")

    def _infer_host(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        return logits, features

    def describe(self) -> str:
        return f"onnxruntime {_version()} CPU ({self.threads} threads, {self.precision})"

    def close(self) -> None:
        self._session = None
        super().close()


def cpu_session(path: str | os.PathLike[str], threads: int | None, what: str, *,
                spin: bool = True) -> tuple[Any, int]:
    """An ONNX Runtime CPU session of ``path`` with full graph optimisation and ``threads``
    intra-op threads (default: every core); shared by every graph maskrt runs on ONNX Runtime."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise BackendUnavailable(f"{what} needs ONNX Runtime: pip install onnxruntime") from err
    if threads is not None and threads < 1:
        raise ValueError(f"{what}: threads: expected >= 1, got {threads}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = threads or os.cpu_count() or 1
    options.intra_op_num_threads = threads
    if not spin:  # idle intra-op threads sleep instead of spinning (sessions that share cores)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, threads


def _version() -> str:
    import onnxruntime as ort

    return ort.__version__
