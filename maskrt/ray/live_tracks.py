"""An ingest actor's side of one source: the answers of the Serve deployment put back in the
order the frames were read, each source's faces tracked across its frames, and its records and
track events made as ``maskrt score`` makes them.

Requests run concurrently (``max_in_flight`` per actor), so answers come back in any order;
:class:`SourceOrder` numbers the frames as they are read and makes records only in that order,
so the tracker sees the source's frames in order, as the pipeline's track stage does. The
tracking is ``maskrt score``'s own (:class:`~maskrt.track.source.SourceTracks`: ByteTrack
association, per-person decisions, ``track_started`` / ``decision`` / ``track_ended`` events),
with one difference that the HTTP boundary makes: Serve has classified every face it reports
before the tracker sees it, so there is no reuse (a face is never left unclassified to take
its track's decision: ``classified`` is always true, as with ``maskrt score --reuse off``), and
the tracker sees only the reported faces (``maskrt score``'s tracker also sees the detector's
candidates below ``report_threshold``, which keep a known person's track through a weak frame).
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np

from maskrt.engine import Result
from maskrt.ray.scorer import IMAGE, SIZE, T_READ
from maskrt.stream.records import SCORED, Record, Reduction, placed
from maskrt.stream.sources.base import Frame, Source
from maskrt.stream.work import FrameTask, Region, SourceHandle
from maskrt.track.settings import TrackSettings, check_track_mode
from maskrt.track.source import SourceTracks

#: the fields a whole-frame answer (``regions="frame"``) gives its record
FRAME_FIELDS = ("label", "p_with_mask", "p_without_mask", "region_index", "box", "faces")


class SourceOrder:
    """One source of an ingest actor: frames numbered as read (:meth:`number`), their outcomes
    (:meth:`outcome`: scored with the deployment's answer, dropped, failed) turned into records
    in that order, faces tracked per source (``track``: "auto" tracks videos and live sources,
    "on" every source, "off" none; a folder's videos one by one, as ``maskrt score`` does)."""

    def __init__(self, source: Source, track: Any = "auto",
                 settings: TrackSettings | None = None) -> None:
        self.handle = SourceHandle(source)
        self.mode = check_track_mode(track)
        self.settings = settings or TrackSettings()
        self.lock = threading.Lock()
        self.read = 0  # frames numbered
        self.next = 0  # the number of the next frame to record
        self.pending: dict[int, tuple[Any, ...]] = {}
        self.tracks: SourceTracks | None = None
        self.key: tuple[str, str | None] | None = None
        self.ended = False

    def number(self) -> int:
        """The next frame's number (the reader's, in reading order)."""
        with self.lock:
            self.read += 1
            return self.read - 1

    def outcome(self, n: int, row: dict[str, Any], status: str, reason: str | None,
                answer: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]],
                                                                list[dict[str, Any]]]:
        """Frame ``n`` ended (``row``: :func:`~maskrt.ray.reading.frame_row`'s); returns the
        records (JSON dicts) and track events of every frame now ready, in reading order."""
        records: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        if status != SCORED:  # waiting for its turn, an unscored frame keeps no pixels
            row = {key: value for key, value in row.items() if key != IMAGE}
        with self.lock:
            self.pending[n] = (row, status, reason, answer)
            while self.next in self.pending:
                made, happened = self._records(*self.pending.pop(self.next))
                self.next += 1
                records += made
                events += happened
            events += self._finish()
        return records, events

    def end(self) -> list[dict[str, Any]]:
        """The reader ended: once every frame is recorded, the tracks end (their events)."""
        with self.lock:
            self.ended = True
            return self._finish()

    def _finish(self) -> list[dict[str, Any]]:
        if not self.ended or self.next < self.read or self.tracks is None:
            return []
        tracks, self.tracks = self.tracks, None
        return tracks.finish()

    def _records(self, row: dict[str, Any], status: str, reason: str | None,
                 answer: dict[str, Any] | None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        timestamp = row["source_timestamp"]
        base = Record(source_id=row["source_id"], frame_index=int(row["frame_index"]),
                      source_timestamp=None if timestamp != timestamp else float(timestamp),
                      status=status, reason=reason, uri=row["uri"] or None,
                      latency_ms=max(0.0, (time.time() - row[T_READ]) * 1000.0))
        if status != SCORED or answer is None:
            return [base.to_dict()], []
        faces = answer.get("faces")
        if not isinstance(faces, list):  # regions="frame": the whole frame's one decision
            for key in FRAME_FIELDS:
                setattr(base, key, answer.get(key))
            return [base.to_dict()], []
        return self._faces(base, row, faces)

    def _faces(self, base: Record, row: dict[str, Any], faces: list[dict[str, Any]]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A scored frame's face records (``faces``: the deployment's answer, boxes in the pixels
        of the frame sent, which is ``row``'s decoded frame), tracked when its source is."""
        image = row[IMAGE]
        reduction = Reduction.of(tuple(row[SIZE]), image) if row[SIZE][0] > 0 else None
        frame = Frame(base.frame_index, base.source_timestamp, uri=base.uri)
        task = FrameTask(self.handle, frame, image=image, reduction=reduction)
        task.regions = [Region(tuple(f["box"]), score=f["face_score"],  # type: ignore[arg-type]
                               landmarks=None if f["landmarks"] is None
                               else np.asarray(f["landmarks"], np.float32)) for f in faces]
        events = self._track(task, faces)
        if not faces:
            return [replace(base, faces=0).to_dict()], events
        records = []
        for index, (face, region) in enumerate(zip(faces, task.regions)):
            record = replace(base, region_index=index, faces=len(faces),
                             face_score=face["face_score"], label=face["label"],
                             p_with_mask=face["p_with_mask"], p_without_mask=face["p_without_mask"],
                             classified=True, **placed(region.box, region.landmarks, reduction))
            decision = region.track.data if region.track is not None else None
            if decision is not None:
                record.track_id, record.track_label = region.track_id, decision.label
                record.p_track_without_mask = decision.p_without_mask
                record.track_frames = decision.frames
            records.append(record.to_dict())
        return records, events

    def _track(self, task: FrameTask, faces: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``maskrt score``'s tracking of one scored frame (every face classified); its events."""
        if self.mode == "off" or (self.mode == "auto" and task.sequence_key is None):
            return []
        key = task.sequence_key or (task.source_id, None)
        events: list[dict[str, Any]] = []
        if self.tracks is None or self.key != key:  # first frame, or a folder's next video
            if self.tracks is not None:
                events += self.tracks.finish()
            self.tracks, self.key = SourceTracks(key[0], key[1], self.settings, False), key
        self.tracks.assign(task)
        results = [Result(f["label"], int(f["class_index"]),
                          np.array([f["p_with_mask"], f["p_without_mask"]], np.float32))
                   for f in faces]
        task.tracks = self.tracks
        return events + self.tracks.resolve(task, results, [None] * len(results))
