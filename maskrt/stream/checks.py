"""Checks of the pipeline's settings (kept apart so pipeline.py stays the composition root)."""

from __future__ import annotations

from typing import Any, Sequence


def check_settings(batch_size: int, max_wait_ms: float, preprocess_threads: int,
                   queue_size: int | None, max_side: int, output_capacity: int,
                   max_latency_ms: float | None = None, stages: Sequence[Any] = (),
                   max_pixels: int | None = None) -> None:
    for name, value, low in (("batch_size", batch_size, 1), ("max_wait_ms", max_wait_ms, 0),
                             ("preprocess_threads", preprocess_threads, 1),
                             ("max_side", max_side, 224), ("output_capacity", output_capacity, 1)):
        if value < low:
            raise ValueError(f"{name}: expected >= {low}, got {value}")
    if queue_size is not None and queue_size < 1:
        raise ValueError(f"queue_size: expected >= 1, got {queue_size}")
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels: expected >= 1 or None, got {max_pixels}")
    if max_latency_ms is not None and max_latency_ms <= 0:
        raise ValueError(f"max_latency_ms: expected > 0 or None, got {max_latency_ms}")
    for stage in stages:
        if not callable(getattr(stage, "process", None)):
            raise TypeError(f"stages: expected objects with process(task), got {stage!r}")
