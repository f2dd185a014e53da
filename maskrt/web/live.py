"""What the live view serves about a running pipeline: its sources (tiles), the summary, the
faces without a mask and the pictures. The web server asks; everything it asks of the pipeline
(``counters()``, ``summary()``: a walk over the ledger under its lock) is cached for
``refresh_s`` and shared by every viewer, so twenty browsers cost the pipeline what one does.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from maskrt.stream.records import SCORED, Record
from maskrt.web.faces import FaceLog
from maskrt.web.pictures import PictureBoard

#: recent latencies kept per source for the tile's figure
LATENCY_WINDOW = 64


class Cached:
    """A value computed at most once per ``ttl`` seconds, whoever asks."""

    def __init__(self, compute: Callable[[], Any], ttl: float) -> None:
        self._compute = compute
        self._ttl = ttl
        self._value: Any = None
        self._made = -1e18
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            now = time.monotonic()
            if now - self._made >= self._ttl:
                self._value = self._compute()
                self._made = now
            return self._value

    def expire(self) -> None:
        with self._lock:
            self._made = -1e18


def tile(source_id: str, index: int, counters: dict[str, Any]) -> dict[str, Any]:
    """The JSON of a source's tile from its counters (the pipeline's or a summary's)."""
    reasons = counters.get("reasons") or {}
    return {"id": source_id, "index": index, "kind": counters.get("kind"),
            "live": counters.get("live"), "state": counters.get("state"),
            "fps": round(float(counters.get("fps") or 0.0), 2),
            **{k: counters.get(k, 0) for k in ("read", "scored", "dropped", "failed")},
            "in_flight": counters.get("in_flight", 0),
            "reconnects": counters.get("reconnects") or 0,
            "last_error": counters.get("last_error"),
            "reasons": dict(list(reasons.items())[:5]),
            "labels": counters.get("labels") or {}}


class LiveData:
    """The web server's view of a pipeline (given with :meth:`attach`, when it opens)."""

    mode = "live"

    def __init__(self, fps: float = 5.0, refresh_s: float = 0.5,
                 settings: dict[str, Any] | None = None) -> None:
        self.pictures = PictureBoard(fps)
        self.faces = FaceLog()
        self.settings = settings
        self.pipeline: Any = None
        self.closed = False
        self.final_summary: dict[str, Any] | None = None
        self._latencies: dict[str, deque[float]] = {}
        self._order: dict[str, int] = {}
        self._sources = Cached(self._compute_sources, refresh_s)
        self._summary = Cached(self._compute_summary, max(refresh_s, 1.0))
        self.started = time.time()

    def attach(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        for source_id in getattr(pipeline, "source_ids", ()):
            self._order.setdefault(source_id, len(self._order))

    def note(self, record: Record, frame: np.ndarray | None) -> None:
        """A record given to the sink (consumer thread): references and small copies only."""
        if record.source_id not in self._order:
            self._order[record.source_id] = len(self._order)
        if record.status == SCORED and record.frame_level:
            latencies = self._latencies.get(record.source_id)
            if latencies is None:
                latencies = self._latencies.setdefault(record.source_id,
                                                       deque(maxlen=LATENCY_WINDOW))
            latencies.append(record.latency_ms)
        self.pictures.note(record, frame)
        self.faces.note(record, frame)

    def close(self, summary: dict[str, Any] | None) -> None:
        self.final_summary = summary
        self.closed = True
        self._sources.expire()
        self._summary.expire()

    # ------------------------------------------------------------ what the server asks

    def sources(self) -> list[dict[str, Any]]:
        return self._sources.get()

    def _compute_sources(self) -> list[dict[str, Any]]:
        if self.pipeline is None:
            return []
        counters = self.pipeline.counters()["sources"]
        for source_id in counters:
            self._order.setdefault(source_id, len(self._order))
        tiles = []
        for source_id, entry in counters.items():
            data = tile(source_id, self._order[source_id], entry)
            recent = list(self._latencies.get(source_id, ()))
            data["latency_ms"] = {
                "last": round(recent[-1], 1) if recent else None,
                "p50": round(float(np.median(recent)), 1) if recent else None}
            data["seq"] = self.pictures.seq(source_id)
            tiles.append(data)
        return sorted(tiles, key=lambda t: t["index"])

    def summary(self) -> dict[str, Any]:
        return self._summary.get()

    def _compute_summary(self) -> dict[str, Any]:
        sink = self._summary_sink()
        summary = getattr(sink, "summary", None) or self.final_summary  # summary.json's, last
        if summary is None and self.pipeline is not None:
            summary = self.pipeline.summary(**self._extra())
        return {"mode": self.mode, "finished": self.closed, "started": self.started,
                "people_without_mask": self.faces.total, "settings": self._settings(summary),
                "summary": summary or {}}

    def _summary_sink(self) -> Any:
        from maskrt.stream.sinks import SummarySink

        for sink in getattr(self.pipeline, "sinks", ()):
            if isinstance(sink, SummarySink):
                return sink
        return None

    def _extra(self) -> dict[str, Any]:
        """What the run's summary sink adds (backend, model, settings), when it has one."""
        extra = getattr(self._summary_sink(), "extra", None)
        return {k: v for k, v in (extra or {}).items() if k != "elapsed_s"}

    def _settings(self, summary: dict[str, Any] | None) -> dict[str, Any]:
        settings = dict((summary or {}).get("settings") or {})
        settings.update(self.settings or {})
        for key in ("backend", "model", "specs"):
            if summary and key in summary:
                settings[key] = summary[key]
        if self.pipeline is not None and "batch_size" not in settings:
            settings.update(batch_size=getattr(self.pipeline, "batch_size", None),
                            explain=getattr(self.pipeline, "explain", None))
        return settings

    def faces_since(self, after: int, limit: int, **filters: Any) -> dict[str, Any]:
        entries = self.faces.since(after, limit, **filters)
        return {"faces": [e.to_json() for e in entries], "last_id": self.faces.last_id,
                "total": self.faces.total}

    def frame(self, source_id: str) -> tuple[int, bytes] | None:
        encoded = self.pictures.jpeg(source_id)
        return None if encoded is None else (encoded.seq, encoded.jpeg)

    def face_image(self, entry_id: int, kind: str) -> bytes | None:
        entry = self.faces.get(entry_id)
        return None if entry is None else entry.jpeg(kind)
