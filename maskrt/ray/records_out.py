"""The driver's side of offline scoring on Ray: records written as they come (JSONL or Parquet),
each frame counted once, and the summary built with :func:`maskrt.stream.summary.build_summary`
(the same shape as ``maskrt score``'s)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from maskrt.labels import CLASSES
from maskrt.stream.accounting import MAX_REASONS
from maskrt.stream.records import FAILED, SCORED, STATUSES
from maskrt.stream.summary import build_summary


class RecordWriter:
    """``records.jsonl`` (one JSON object per line, the fields of ``maskrt score``'s records, in
    their order) or ``records.parquet`` (the same fields as columns) in ``out``."""

    def __init__(self, out: Path, format: str) -> None:
        self.format = format
        self.path = out / f"records.{format}"
        self._parquet: Any = None
        self._jsonl: Any = None
        if format == "parquet":
            import pyarrow.parquet as pq

            from maskrt.ray.scorer import record_schema

            self._parquet = pq.ParquetWriter(str(self.path), record_schema())
        else:
            self._jsonl = open(self.path, "w", encoding="utf-8")

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self._parquet is not None:
            import pyarrow as pa

            self._parquet.write_table(pa.Table.from_pylist(rows, schema=self._parquet.schema))
        else:
            self._jsonl.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            self._jsonl.flush()

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


class _SourceCounts:
    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.labels: Counter[str] = Counter()
        self.last_error: str | None = None


class RecordCounts:
    """Frames per source and status, labels, reasons and latencies, counted as the pipeline's
    ledger counts them: a frame's status, reason and latency once (its frame-level row: a
    dropped or failed row, or region 0 of a scored frame, or its row with ``faces`` 0), the
    label of every face; each row (source, frame, region) kept once."""

    def __init__(self, source_ids: list[str]) -> None:
        self.sources = {source_id: _SourceCounts() for source_id in source_ids}
        self.latencies: list[float] = []
        self.duplicates = 0
        #: faces that went through the classifier, and those that took their track's decision
        self.classified = self.reused = 0
        self._seen: set[tuple[str, int, Any]] = set()

    def add(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Count ``rows``; returns those not seen before (a row's second copy, from a retried
        task whose first output had arrived, is not kept)."""
        fresh = []
        for row in rows:
            key = (row["source_id"], row["frame_index"], row["region_index"])
            if key in self._seen:
                self.duplicates += 1
                continue
            self._seen.add(key)
            fresh.append(row)
            counts = self.sources.setdefault(row["source_id"], _SourceCounts())
            if row["label"] is not None and row["status"] == SCORED:
                counts.labels[row["label"]] += 1
            if row["region_index"] is not None:
                self.classified += bool(row["classified"])
                self.reused += row["classified"] is False
            if row["status"] == SCORED and row["region_index"]:
                continue  # a frame's second face onwards: the frame is counted with region 0
            counts.statuses[row["status"]] += 1
            reason = row["reason"]
            if reason is not None and (len(counts.reasons) < MAX_REASONS or reason in counts.reasons):
                counts.reasons[reason] += 1
            if row["status"] == SCORED:
                self.latencies.append(float(row["latency_ms"]))
            elif row["status"] == FAILED:
                counts.last_error = reason
        return fresh

    def __len__(self) -> int:
        """Rows kept so far (one per face of a scored frame)."""
        return len(self._seen)

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter({status: 0 for status in STATUSES})
        for counts in self.sources.values():
            total.update(counts.statuses)
        return total

    def summary(self, units_read: dict[int, tuple[str, int]], kinds: dict[str, str],
                connections: dict[str, dict[str, Any]] | None = None, *,
                elapsed_s: float, **extra: Any) -> dict[str, Any]:
        """The summary: ``read`` per source from the read tasks' counts (``units_read``: unit ->
        (source, frames); empty after an interrupted run, when the rows stand for it).
        ``connections``: per live source its reconnects, connect_failures and waiting_s (0 for
        sources not in it: files read by tasks)."""
        read: Counter[str] = Counter()
        for source_id, frames in units_read.values():
            read[source_id] += frames
        per: dict[str, Any] = {}
        for source_id, counts in self.sources.items():
            rows = sum(counts.statuses.values())
            n = read[source_id] if units_read else rows
            in_flight = n - rows
            per[source_id] = {
                "read": n, **{s: counts.statuses[s] for s in STATUSES}, "in_flight": in_flight,
                "kind": kinds.get(source_id, "unknown"),
                "state": "finished" if in_flight == 0 else "incomplete",
                "reconnects": 0, "connect_failures": 0, "waiting_s": 0.0,
                **(connections or {}).get(source_id, {}),
                "last_error": counts.last_error, "reasons": dict(counts.reasons.most_common()),
                "labels": {c: counts.labels[c] for c in CLASSES}}
        total = {k: sum(p[k] for p in per.values()) for k in ("read", *STATUSES, "in_flight")}
        counters = {"total": total, "sources": per, "elapsed_s": elapsed_s,
                    "flowing_s": elapsed_s}
        if self.classified or self.reused:  # rows that say (the Serve path's do not)
            counters.update(classified=self.classified, reused=self.reused)
        return build_summary(counters, np.asarray(self.latencies, dtype=np.float64),
                             duplicate_rows=self.duplicates, **extra)
