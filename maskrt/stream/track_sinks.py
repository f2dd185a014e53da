"""The per-person outputs: ``tracks.jsonl`` (one line per ended track) and ``events.jsonl`` (every
track event as it happens: track_started, decision, track_ended)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from maskrt.stream.records import Record
from maskrt.stream.sinks import Sink
from maskrt.track.source import TRACK_ENDED

#: the fields of a tracks.jsonl line, in this order
TRACK_FIELDS = ("source_id", "uri", "track_id", "first_frame", "last_frame", "first_time",
                "last_time", "track_frames", "classified", "track_label",
                "p_track_without_mask", "best_frame", "best_box")


class TracksSink(Sink):
    """Writes every ended track to ``directory/tracks.jsonl`` and every track event to
    ``directory/events.jsonl``, whole lines with one ``os.write`` each (events are few: a
    handful per person)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self._tracks = os.open(self.directory / "tracks.jsonl", flags, 0o644)
        self._events = os.open(self.directory / "events.jsonl", flags, 0o644)
        self.counts: Counter[str] = Counter()
        self.labels: Counter[str] = Counter()

    def write(self, record: Record, frame: np.ndarray | None = None) -> None:
        pass  # faces go to records.jsonl; this sink takes the events

    def events(self, events: list[dict[str, Any]]) -> None:
        ended = [e for e in events if e["event"] == TRACK_ENDED]
        _write_lines(self._events, events)
        _write_lines(self._tracks, [{k: e.get(k) for k in TRACK_FIELDS} for e in ended])
        self.counts.update(e["event"] for e in events)
        self.labels.update(str(e["track_label"]) for e in ended)

    def close(self) -> dict[str, Any]:
        for fd in (self._tracks, self._events):
            os.close(fd)
        return {"tracks": str(self.directory / "tracks.jsonl"),
                "events": str(self.directory / "events.jsonl"),
                "tracks_ended": self.counts[TRACK_ENDED], "track_labels": dict(self.labels)}


def _write_lines(fd: int, entries: list[dict[str, Any]]) -> None:
    if not entries:
        return
    data = memoryview("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
                      .encode("utf-8"))
    while data:  # a short write continues where it stopped
        data = data[os.write(fd, data):]
