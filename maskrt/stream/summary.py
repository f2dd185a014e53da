"""The summary of a run (``summary.json``), built from the pipeline's counters - never recounted
from records - and written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from maskrt.labels import CLASSES
from maskrt.stream.records import STATUSES

#: per-source counters copied into the summary
_SOURCE_FIELDS = ("kind", "state", "reconnects", "connect_failures", "waiting_s", "last_error",
                  "reasons", "labels")


def percentiles(values: Any, qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float | None]:
    """{"p50": ..., "p95": ..., "p99": ...} of ``values`` (None when empty)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return {f"p{q:g}": None for q in qs}
    return {f"p{q:g}": round(float(v), 3) for q, v in zip(qs, np.percentile(data, qs))}


def build_summary(counters: dict[str, Any], latencies_ms: np.ndarray, **extra: Any) -> dict[str, Any]:
    """Counts per status and source, labels, throughput, latency of scored frames, batching, and
    whether ``read == scored + dropped + failed`` held with nothing in flight."""
    totals = {k: counters["total"][k] for k in ("read", *STATUSES)}
    sources: dict[str, Any] = {}
    labels = {c: 0 for c in CLASSES}
    ok = counters["total"]["in_flight"] == 0
    for source_id, live in counters["sources"].items():
        entry = {k: live[k] for k in ("read", *STATUSES)}
        entry.update({k: live[k] for k in _SOURCE_FIELDS})
        entry["read_by_pipeline"] = live["read"]  # kept for readers of older summaries
        # Files a folder left out as not media: never read, so outside the identity below.
        entry["skipped_files"] = live.get("skipped_files", 0)
        ok &= live["in_flight"] == 0 and live["read"] == sum(live[s] for s in STATUSES)
        for name, count in live["labels"].items():
            labels[name] += count
        sources[source_id] = entry
    ok &= totals["read"] == sum(totals[s] for s in STATUSES)
    elapsed = float(extra.pop("elapsed_s", None) or counters.get("elapsed_s") or 0.0)
    # Throughput over the time frames flowed: waiting on a dead camera after the files were
    # done must not dilute it (that time is reported as idle_s, and per source as waiting_s).
    flowing = min(float(counters.get("flowing_s") or 0.0), elapsed) or elapsed
    latency = percentiles(latencies_ms)
    if len(latencies_ms):
        latency.update(mean=round(float(latencies_ms.mean()), 3),
                       max=round(float(latencies_ms.max()), 3))
    summary: dict[str, Any] = {
        "counts": totals,
        "accounting_ok": bool(ok),
        "labels": labels,
        "elapsed_s": round(elapsed, 3),
        "flowing_s": round(flowing, 3),
        "idle_s": round(elapsed - flowing, 3),
        "throughput_fps": round(totals["scored"] / flowing, 3) if flowing > 0 else None,
        "wall_throughput_fps": round(totals["scored"] / elapsed, 3) if elapsed > 0 else None,
        "latency_ms": latency,
        "sources": sources,
        "skipped_files": sum(entry["skipped_files"] for entry in sources.values()),
        "batches": counters.get("batches"),
        "mean_batch_size": round(float(counters.get("mean_batch_size") or 0.0), 3),
        "max_batch_size": counters.get("largest_batch"),
        "classified_faces": counters.get("classified"),
        "reused_faces": counters.get("reused"),
    }
    summary.update(extra)
    if "stopped_by" in summary and summary["stopped_by"] is None \
            and counters.get("frame_limit_reached"):
        # The frame limit ends a run from inside the pipeline; the consumer may see the end of
        # the stream before it looks at the limit, so the counters settle it.
        summary["stopped_by"] = "frames"
    return summary


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as JSON to a temporary file beside ``path``, then rename it into place, so
    a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path
