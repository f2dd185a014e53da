"""Where records go: JSON lines, a summary, overlay images, annotated videos.

``maskrt score`` uses all of them; each is usable alone with records from a
:class:`~maskrt.pipeline.Pipeline`::

    with Pipeline(engine, sources, explain=True) as pipeline, JsonlSink("out/records.jsonl") as log:
        for record in pipeline:
            log.write(record)
"""

from __future__ import annotations

import json
import os
import re
import time
from array import array
from collections import Counter, defaultdict
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterable

import numpy as np

from maskrt.labels import CLASSES
from maskrt.records import DROPPED, FAILED, SCORED, STATUSES, Record
from maskrt.sources import VIDEO_EXTENSIONS

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(source_id: str, limit: int = 80) -> str:
    """A file-system-safe folder name for a source id (``rtsp://cam:554/x`` -> ``rtsp_cam_554_x``)."""
    name = _UNSAFE.sub("_", source_id).strip("._") or "source"
    return name[-limit:]


class _Closing:
    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class JsonlSink(_Closing):
    """One JSON object per record (the fields of :data:`maskrt.records.JSON_FIELDS`, plus
    ``overlay`` when an overlay file was written for it), one per line, flushed every
    ``flush_every`` records, at least once a second, and on close."""

    def __init__(self, path: str | os.PathLike[str], flush_every: int = 64) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        self._flush_every = flush_every
        self._pending = 0
        self._last_flush = time.monotonic()
        self.count = 0

    def write(self, record: Record, **extra: Any) -> None:
        entry = record.to_dict()
        entry.update({k: v for k, v in extra.items() if v is not None})
        self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.count += 1
        self._pending += 1
        now = time.monotonic()
        if self._pending >= self._flush_every or now - self._last_flush >= 1.0:
            self._file.flush()
            self._pending = 0
            self._last_flush = now

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class OverlaySink(_Closing):
    """Overlay images: ``DIR/<source>/<frame_index>[_<file stem>].jpg`` (one folder per source)."""

    def __init__(self, directory: str | os.PathLike[str], quality: int = 90) -> None:
        self.directory = Path(directory)
        self.quality = quality
        self._made: set[Path] = set()
        self.count = 0

    def write(self, record: Record) -> str | None:
        """Write the record's overlay; returns the path, or None when it has none."""
        import cv2

        if record.overlay is None:
            return None
        folder = self.directory / safe_name(record.source_id)
        if folder not in self._made:
            folder.mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        name = f"{record.frame_index:08d}"
        if record.uri:
            name += "_" + safe_name(Path(record.uri).stem, 60)
        path = folder / f"{name}.jpg"
        if not cv2.imwrite(str(path), record.overlay, [cv2.IMWRITE_JPEG_QUALITY, self.quality]):
            return None
        self.count += 1
        return str(path)


def annotate(image: np.ndarray, record: Record) -> np.ndarray:
    """A copy of ``image`` with the record's decision written in its top-left corner."""
    import cv2

    out = image.copy()
    if record.label is None:
        return out
    p = record.p_with_mask if record.label == CLASSES[0] else record.p_without_mask
    text = f"{record.label} {p:.2f}"
    colour = (0, 160, 0) if record.label == CLASSES[0] else (0, 0, 220)
    scale = max(0.4, min(out.shape[:2]) / 400.0)
    thickness = max(1, int(round(scale * 2)))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    cv2.rectangle(out, (0, 0), (w + 8, h + base + 8), (255, 255, 255), -1)
    cv2.putText(out, text, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness,
                cv2.LINE_AA)
    return out


class VideoSink(_Closing):
    """Annotated videos, one per source given to it: ``DIR/<source>_annotated.avi`` (MJPG), each scored
    frame (its overlay when the pipeline explains, else the frame itself, which needs
    ``Pipeline(keep_frames=True)``) with its label written on it. Dropped and failed frames have
    no picture and are left out; ``fps`` per source comes from the source (default 25)."""

    def __init__(self, directory: str | os.PathLike[str], source_ids: Iterable[str],
                 fps_of: Callable[[str], float | None] = lambda source_id: None) -> None:
        self.directory = Path(directory)
        self.source_ids = set(source_ids)
        self.fps_of = fps_of
        self._writers: dict[str, Any] = {}
        self._sizes: dict[str, tuple[int, int]] = {}
        self.paths: dict[str, str] = {}

    def write(self, record: Record) -> bool:
        import cv2

        if record.source_id not in self.source_ids or record.status != SCORED:
            return False
        image = record.overlay if record.overlay is not None else record.frame
        if image is None:
            return False
        writer = self._writers.get(record.source_id)
        if writer is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            root, ext = os.path.splitext(safe_name(record.source_id))
            path = self.directory / f"{root if ext.lower() in VIDEO_EXTENSIONS else root + ext}" \
                f"_annotated.avi"
            size = (image.shape[1], image.shape[0])
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"),
                                     float(self.fps_of(record.source_id) or 25.0), size)
            if not writer.isOpened():
                self.source_ids.discard(record.source_id)
                return False
            self._writers[record.source_id] = writer
            self._sizes[record.source_id] = size
            self.paths[record.source_id] = str(path)
        size = self._sizes[record.source_id]
        if (image.shape[1], image.shape[0]) != size:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        writer.write(annotate(image, record))
        return True

    def close(self) -> None:
        for writer in self._writers.values():
            writer.release()
        self._writers.clear()


def percentiles(values: Any, qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float | None]:
    """{"p50": ..., "p95": ..., "p99": ...} of ``values`` (None when empty)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return {f"p{q:g}": None for q in qs}
    return {f"p{q:g}": round(float(v), 3) for q, v in zip(qs, np.percentile(data, qs))}


class SummarySink:
    """Counts per status, label and source, and the latency of scored frames, from the records
    it is given; :meth:`build` adds the pipeline's counters (states, reconnects, reasons) and
    checks the accounting identity."""

    def __init__(self) -> None:
        self.per_source: dict[str, Counter[str]] = defaultdict(Counter)
        self.labels: Counter[str] = Counter()
        self.latencies = array("d")

    def write(self, record: Record) -> None:
        counts = self.per_source[record.source_id]
        counts["read"] += 1
        counts[record.status] += 1
        if record.status == SCORED:
            self.latencies.append(record.latency_ms)
            if record.label is not None:
                self.labels[record.label] += 1
                counts[record.label] += 1

    def build(self, counters: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        pipeline_sources = (counters or {}).get("sources", {})
        totals = {"read": 0, **{s: 0 for s in STATUSES}}
        sources: dict[str, Any] = {}
        ok = True
        for source_id in list(dict.fromkeys([*pipeline_sources, *self.per_source])):
            seen = self.per_source.get(source_id, Counter())
            entry: dict[str, Any] = {"read": seen["read"], SCORED: seen[SCORED],
                                     DROPPED: seen[DROPPED], FAILED: seen[FAILED],
                                     "labels": {c: seen[c] for c in CLASSES}}
            live = pipeline_sources.get(source_id)
            if live is not None:
                entry.update({k: live[k] for k in ("kind", "state", "reconnects",
                                                   "connect_failures", "last_error", "reasons")})
                entry["read_by_pipeline"] = live["read"]
                ok &= live["read"] == seen["read"] and live["in_flight"] == 0
            ok &= seen["read"] == seen[SCORED] + seen[DROPPED] + seen[FAILED]
            for key in totals:
                totals[key] += entry[key]
            sources[source_id] = entry
        elapsed = float(extra.pop("elapsed_s", None) or (counters or {}).get("elapsed_s") or 0.0)
        latency = percentiles(self.latencies)
        if len(self.latencies):
            data = np.asarray(self.latencies)
            latency.update(mean=round(float(data.mean()), 3), max=round(float(data.max()), 3))
        summary: dict[str, Any] = {
            "counts": totals,
            "accounting_ok": bool(ok),
            "labels": {c: self.labels[c] for c in CLASSES},
            "elapsed_s": round(elapsed, 3),
            "throughput_fps": round(totals[SCORED] / elapsed, 3) if elapsed > 0 else None,
            "latency_ms": latency,
            "sources": sources,
        }
        if counters:
            summary["batches"] = counters.get("batches")
            summary["mean_batch_size"] = round(float(counters.get("mean_batch_size") or 0.0), 3)
        summary.update(extra)
        return summary

    def write_json(self, path: str | os.PathLike[str], summary: dict[str, Any]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path
