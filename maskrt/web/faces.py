"""The live view's panel of people decided ``without_mask``: a bounded log of entries, each
with a small copy of the face and of its CAM (cut when the entry is made, encoded when a
viewer asks).

A tracked person makes one entry, when their (smoothed) decision first is ``without_mask``;
later frames of the same track only update its probability and last frame. An untracked face
(a photo, ``--track off``) decided ``without_mask`` makes an entry of its own.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskrt.labels import CLASSES
from maskrt.stream.records import SCORED, Record
from maskrt.web.pictures import cut, encode_jpeg

WITHOUT_MASK = CLASSES[1]
#: entries kept (the oldest leave first); what the panel can page through
MAX_ENTRIES = 500


@dataclass
class FaceEntry:
    id: int
    source_id: str
    frame_index: int
    timestamp: float | None  # the record's source_timestamp
    seen: float  # wall clock (Unix time) when the entry was made or last updated
    label: str
    p_without_mask: float | None
    track_id: int | None
    box: list[int] | None
    face: np.ndarray | None = field(default=None, repr=False)
    cam: np.ndarray | None = field(default=None, repr=False)
    jpegs: dict[str, bytes] = field(default_factory=dict, repr=False)
    last_frame: int = 0
    uri: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "source_id": self.source_id, "frame_index": self.frame_index,
                "last_frame": max(self.last_frame, self.frame_index),
                "timestamp": self.timestamp, "seen": round(self.seen, 3), "label": self.label,
                "p_without_mask": None if self.p_without_mask is None
                else round(self.p_without_mask, 4),
                "track_id": self.track_id, "box": self.box, "uri": self.uri,
                "face_url": f"/face/{self.id}.jpg" if self.face is not None else None,
                "cam_url": f"/face/{self.id}_cam.jpg" if self.cam is not None else None}

    def jpeg(self, kind: str) -> bytes | None:
        """The face ("face") or its CAM ("cam") as JPEG, encoded once."""
        image = self.face if kind == "face" else self.cam
        if image is None:
            return None
        if kind not in self.jpegs:
            self.jpegs[kind] = encode_jpeg(image, quality=85)
        return self.jpegs[kind]


def matches(entry: Any, source: str | None = None, label: str | None = None,
            t_from: float | None = None, t_to: float | None = None) -> bool:
    """Whether an entry passes the page's filters: source id, label, and its time (the
    record's source_timestamp: Unix time for cameras and files, seconds into a video;
    else when it was seen) between t_from and t_to."""
    if source and entry.source_id != source:
        return False
    if label and entry.label != label:
        return False
    when = entry.timestamp if entry.timestamp is not None else entry.seen
    if t_from is not None and when < t_from:
        return False
    return t_to is None or when <= t_to


class FaceLog:
    """The entries, newest last; :meth:`note` runs on the consumer thread (dict look-ups and,
    for a new entry, two small strided copies)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: deque[FaceEntry] = deque(maxlen=max_entries)
        self._people: dict[tuple[str, int], FaceEntry] = {}
        self._lock = threading.Lock()
        self._next_id = 1
        self.total = 0  #: entries ever made (people and untracked faces without a mask)
        self._overlays: dict[str, tuple[int, np.ndarray | None]] = {}

    def note(self, record: Record, frame: np.ndarray | None) -> None:
        if record.status != SCORED or record.box is None:
            return
        if record.region_index == 0:  # the frame's overlay (faces + explain) is on region 0
            self._overlays[record.source_id] = (record.frame_index, record.overlay)
        if record.track_id is not None:
            if record.track_label != WITHOUT_MASK:
                return
            key = (record.source_id, record.track_id)
            known = self._people.get(key)
            if known is not None:
                known.p_without_mask = record.p_track_without_mask
                known.last_frame, known.seen = record.frame_index, time.time()
                return
            p = record.p_track_without_mask
        elif record.track_label is None and record.label == WITHOUT_MASK:
            key, p = None, record.p_without_mask
        else:
            return  # with a mask, or a face whose track is not confirmed yet
        entry = self._make(record, frame, p)
        with self._lock:
            entry.id = self._next_id
            self._next_id += 1
            self.total += 1
            if len(self._entries) == self._entries.maxlen:
                old = self._entries[0]
                if old.track_id is not None:
                    self._people.pop((old.source_id, old.track_id), None)
            self._entries.append(entry)
            if key is not None:
                self._people[key] = entry

    def _make(self, record: Record, frame: np.ndarray | None, p: float | None) -> FaceEntry:
        box = record.frame_box or record.box
        index, overlay = self._overlays.get(record.source_id, (-1, None))
        if index != record.frame_index:
            overlay = None
        if overlay is None and record.overlay is not None:  # a whole-frame region's CAM
            overlay = record.overlay
            cam = cut(overlay, [0, 0, overlay.shape[1], overlay.shape[0]])
        else:
            cam = cut(overlay, box)
        return FaceEntry(0, record.source_id, record.frame_index, record.source_timestamp,
                         time.time(), WITHOUT_MASK, p, record.track_id, record.box,
                         face=cut(frame, box), cam=cam, uri=record.uri)

    def since(self, after: int = 0, limit: int = 100, **filters: Any) -> list[FaceEntry]:
        """Entries with an id above ``after`` that pass ``filters`` (see :func:`matches`),
        the newest ``limit``, oldest first."""
        with self._lock:
            found = [e for e in self._entries if e.id > after and matches(e, **filters)]
        return found[-limit:] if limit > 0 else []

    def get(self, entry_id: int) -> FaceEntry | None:
        with self._lock:
            for entry in reversed(self._entries):
                if entry.id == entry_id:
                    return entry
        return None

    @property
    def last_id(self) -> int:
        return self._next_id - 1
