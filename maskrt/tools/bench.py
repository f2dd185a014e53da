"""``maskrt bench``: trtexec-style throughput and latency of a backend, per batch size.

Warm-up iterations first, then timed ones; each iteration is one batch through
``Engine.infer`` (+ ``Engine.results_from`` with overlays when ``--explain``). Reports images/s
(batch / median latency) and p50/p95/p99 latency per batch size, with the machine and backend.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from maskrt.labels import INPUT_SIZE


def parse_batches(text: str) -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]``: the ``--batch`` type of ``maskrt bench`` and the benchmarks."""
    try:
        batches = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes like 1,8,32, "
                                         f"got {text!r}") from err
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"expected batch sizes >= 1, got {text!r}")
    return batches


def machine_info() -> dict[str, Any]:
    """CPU model, core count, OS and library versions, for benchmark headers."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version(), "load_1min": round(load, 2)}


def sample_batch(batch: int, size: int = INPUT_SIZE) -> np.ndarray:
    """uint8[batch, size, size, 3]: the shipped sample faces, resized and repeated."""
    from maskrt.image import decode_image, resize_to_input
    from maskrt.samples import SAMPLES_DIR

    faces = [resize_to_input(decode_image(p), size) for p in sorted(SAMPLES_DIR.glob("*.jpg"))]
    return np.stack([faces[i % len(faces)] for i in range(batch)])


def time_calls(fn: Any, *, iterations: int, warmup: int) -> np.ndarray:
    """Seconds per call of ``fn()`` over ``iterations`` timed calls after ``warmup`` untimed."""
    for _ in range(warmup):
        fn()
    seconds = np.empty(iterations)
    for i in range(iterations):
        start = time.perf_counter()
        fn()
        seconds[i] = time.perf_counter() - start
    return seconds


def time_interleaved(fns: dict[str, Any], *, iterations: int, warmup: int) -> dict[str, np.ndarray]:
    """Like :func:`time_calls` for several functions, run in turn within each iteration, so that
    drifts of a shared machine's speed hit every one of them alike (fair A/B ratios)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    seconds = {name: np.empty(iterations) for name in fns}
    for i in range(iterations):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            seconds[name][i] = time.perf_counter() - start
    return seconds


def summarise(seconds: np.ndarray, batch: int) -> dict[str, float]:
    """Median-based throughput and latency percentiles (ms) of per-batch timings."""
    p50, p95, p99 = np.percentile(seconds, [50, 95, 99]) * 1e3
    q1, q3 = np.percentile(seconds, [25, 75]) * 1e3
    return {"batch": batch, "images_per_s": batch / float(np.median(seconds)),
            "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "iqr_ms": q3 - q1,
            "iterations": len(seconds)}


def bench_engine(engine: Any, batch: int, *, explain: bool, iterations: int,
                 warmup: int) -> dict[str, float]:
    """Time one batch size on ``engine``; explain draws 224x224 overlays of the same batch."""
    return bench_modes(engine, batch, iterations=iterations, warmup=warmup,
                       modes=("classify+explain",) if explain else ("classify",))[0]


def bench_modes(engine: Any, batch: int, *, iterations: int, warmup: int,
                modes: tuple[str, ...] = ("classify", "classify+explain")) -> list[dict[str, Any]]:
    """Time classify-only and/or classify+explain on one batch size, interleaved."""
    images = sample_batch(batch)
    frames = list(images)

    def classify() -> None:
        engine.results_from(engine.infer(images)[0])

    def classify_and_explain() -> None:
        logits, features = engine.infer(images)
        engine.results_from(logits, features, frames)

    runs = {"classify": classify, "classify+explain": classify_and_explain}
    seconds = time_interleaved({mode: runs[mode] for mode in modes}, iterations=iterations,
                               warmup=warmup)
    return [{"mode": mode, **summarise(seconds[mode], batch)} for mode in modes]


def write_results(path: str | os.PathLike[str] | None, results: Any) -> None:
    """Write a benchmark's results as JSON (folders made as needed) and say so; None: nothing."""
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {path}")
