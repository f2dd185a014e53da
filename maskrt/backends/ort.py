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
    graph has a current twin (the shipped graph has: same labels as FP32 on every val face) and
    the CPU has 8-bit dot-product instructions (:func:`int8_pays`), else fp32.
    """

    name = "onnxruntime"

    def __init__(self, graph: Any, *, threads: int | None = None, precision: str = "auto") -> None:
        super().__init__(graph)
        if precision not in ("auto", "fp32", "int8"):
            raise ValueError(f"onnxruntime backend: precision: expected 'auto', 'fp32' or 'int8', "
                             f"got {precision!r}")
        if precision == "auto":  # the INT8 twin when it is current and pays on this CPU
            twin, problem = graph.int8_twin()
            use_int8 = problem is None and int8_pays()
            precision, self.onnx_path = ("int8", twin) if use_int8 else ("fp32", graph.onnx_path())
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


#: CPU flags (Linux /proc/cpuinfo) of 8-bit dot-product instructions: x86 VNNI (AVX-512 or
#: AVX) and AMX, Arm's dot product
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})


def int8_pays(cpuinfo: str | None = None) -> bool:
    """Whether the INT8 graph runs faster than FP32 on this CPU (``cpuinfo``: the text of
    /proc/cpuinfo; default: read it). ONNX Runtime's INT8 convolutions gain on CPUs with 8-bit
    dot-product instructions and lose without them: INT8 0.5x the latency of FP32 with AVX-512
    VNNI (2-core AMD EPYC, 2026-11-28), 1.2x it without (2-core AMD EPYC with AVX2 only,
    2026-12-03: 56 against 47 ms at batch 1, 433 against 347-379 ms at batch 8). Where the
    flags cannot be read (not Linux), INT8, as before."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return True
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):
            return not INT8_DOT_FLAGS.isdisjoint(value.split())
    return True


def cpu_session(path: str | os.PathLike[str], threads: int | None,
                what: str) -> tuple[Any, int]:
    """An ONNX Runtime CPU session of ``path`` with full graph optimisation and ``threads``
    intra-op threads (default: every core); shared by every graph maskrt runs on ONNX Runtime.

    Idle intra-op threads sleep instead of spin-waiting: the classifier and the detector share
    the cores, each running in bursts, and one's spinning threads took the cores the other
    needed (2-core AMD EPYC, 2026-12-03, two val clips: 6.0-6.1 frames/s against 5.8 with the
    classifier spinning; classify-only latency the same, 56.5 ms at batch 1 either way)."""
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
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, threads


def _version() -> str:
    import onnxruntime as ort

    return ort.__version__
