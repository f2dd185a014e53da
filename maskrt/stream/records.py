"""Records: what became of every frame a source yields (ARCHITECTURE.md, "Accounting").

A frame ends in exactly one status - ``scored``, ``dropped`` or ``failed`` - so per source and
overall ``read == scored + dropped + failed`` once nothing is in flight. A scored frame yields one
record per region it was scored in (the whole frame, or each face a detector stage found), with
``region_index`` 0..faces-1 and the region's ``box``; a scored frame with no region yields one
frame-level record with ``faces`` 0 and no label. Dropped and failed frames yield one record each,
with the reason and no region.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCORED = "scored"
DROPPED = "dropped"
FAILED = "failed"
STATUSES = (SCORED, DROPPED, FAILED)

#: The fields written to records.jsonl, in this order (new fields are only ever appended).
JSON_FIELDS = ("source_id", "frame_index", "source_timestamp", "status", "reason", "label",
               "p_with_mask", "p_without_mask", "latency_ms", "uri", "region_index", "box",
               "face_score", "faces", "landmarks", "track_id", "track_label",
               "p_track_without_mask", "track_frames", "classified")


@dataclass
class Record:
    """What became of one frame, or of one region of a scored frame.

    source_timestamp: seconds; the position in the video for video files, the file's mtime (Unix
    time) for files, the wall clock at read (Unix time) for cameras and streams.
    status: ``scored``, ``dropped`` (a live source's full queue, a late or superseded live
    frame, a filter stage, or the frame was still queued when its source was removed or the
    pipeline stopped) or ``failed`` (``reason`` says why).
    latency_ms: from the moment the frame was read to the moment this record was made.
    uri: the file a frame came from (files, folders, drop folders), else None.
    region_index, box: which region of the frame this record scores, and where it is
    ([x0, y0, x1, y1] in the pixels of the image as stored, also when it was decoded reduced
    (over ``max_side``); the whole frame when no stage made regions); None for dropped and
    failed frames and for a scored frame without regions.
    face_score: the detector's confidence for the region, when a detector made it.
    faces: the number of regions the scored frame had (None for dropped and failed frames).
    landmarks: the face's five points (eyes, nose tip, mouth corners) as [x, y], in the same
    pixels as ``box``.
    track_id: the person's id within the source (tracked frames; None while the track is not
    confirmed, and for untracked frames). track_label, p_track_without_mask: the person's
    decision, smoothed over the track's classified faces so far; track_frames: the track's
    records so far. classified: whether this face went through the classifier (False: it took
    its track's decision, and label/p_* are the track's last classification).
    events: track events this frame made (track_started, decision, track_ended), on the
    frame's first record.
    overlay: uint8[H, W, 3] BGR CAM overlay, when the pipeline explains: at the region's size for
    whole-frame regions; with faces, the whole frame with every face's CAM, box and label, on the
    frame's first record only.
    frame: the decoded frame, when the pipeline keeps frames (annotated videos).
    outputs: files that sinks wrote for this record.
    """

    source_id: str
    frame_index: int
    source_timestamp: float | None
    status: str
    reason: str | None = None
    label: str | None = None
    p_with_mask: float | None = None
    p_without_mask: float | None = None
    latency_ms: float = 0.0
    uri: str | None = None
    region_index: int | None = None
    box: list[int] | None = None
    face_score: float | None = None
    faces: int | None = None
    landmarks: list[list[float]] | None = None
    track_id: int | None = None
    track_label: str | None = None
    p_track_without_mask: float | None = None
    track_frames: int | None = None
    classified: bool | None = None
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)
    overlay: np.ndarray | None = field(default=None, repr=False)
    frame: np.ndarray | None = field(default=None, repr=False)
    #: files sinks wrote for this record (e.g. ``{"overlay": path}``), added to its JSON line
    outputs: dict[str, str] = field(default_factory=dict, repr=False)
    #: ``box`` in the pixels of ``frame`` and ``overlay`` (what sinks draw and cut out): the
    #: decoded frame's, which differ from the original's when it was decoded reduced; None: box
    frame_box: list[int] | None = field(default=None, repr=False)

    @property
    def frame_level(self) -> bool:
        """True for the one record that carries the frame's status in the accounting: every
        dropped or failed record, and region 0 (or the region-less record) of a scored frame."""
        return self.status != SCORED or not self.region_index

    def to_dict(self) -> dict[str, Any]:
        """The JSON fields (no arrays), floats rounded for the log."""
        out: dict[str, Any] = {}
        for name in JSON_FIELDS:
            value = getattr(self, name)
            if isinstance(value, float):
                precise = name.startswith("p_") or name in ("source_timestamp", "face_score")
                value = round(value, 6) if precise else round(value, 3)
            out[name] = value
        return out


@dataclass(frozen=True)
class Reduction:
    """A frame decoded smaller than the image as stored (over ``max_side``): ``original`` and
    ``decoded`` sizes as (width, height), the original upright. Maps what was found in the
    decoded frame back to the original's pixels, for records."""

    original: tuple[int, int]
    decoded: tuple[int, int]

    @classmethod
    def of(cls, original: tuple[int, int], image: np.ndarray) -> "Reduction | None":
        """How ``image`` relates to an original of (width, height); None: it is that size."""
        decoded = (int(image.shape[1]), int(image.shape[0]))
        return None if decoded == tuple(original) else cls(tuple(original), decoded)  # type: ignore[arg-type]

    def box(self, box: Any) -> list[int]:
        """[x0, y0, x1, y1] (end-exclusive) -> original pixels, covering the same area: starts
        rounded down, ends up (integer arithmetic: the frame's end is the original's end)."""
        (W, H), (w, h) = self.original, self.decoded
        x0, y0, x1, y1 = (int(v) for v in box)
        return [x0 * W // w, y0 * H // h, -(-x1 * W // w), -(-y1 * H // h)]

    def points(self, points: Any) -> list[list[float]]:
        (W, H), (w, h) = self.original, self.decoded
        return [[float(x) * W / w, float(y) * H / h] for x, y in points]


def placed(box: Any, landmarks: Any, reduction: Reduction | None) -> dict[str, Any]:
    """A region's record fields ``box`` and ``landmarks`` (rounded to 0.1) in the original's
    pixels, and ``frame_box`` in the decoded frame's."""
    frame_box = [int(v) for v in box]
    points = None if landmarks is None else [[float(x), float(y)] for x, y in landmarks]
    box = frame_box if reduction is None else reduction.box(frame_box)
    if reduction is not None and points is not None:
        points = reduction.points(points)
    return {"box": box, "frame_box": frame_box,
            "landmarks": None if points is None else [[round(x, 1), round(y, 1)] for x, y in points]}


def whole_frame(record: Record) -> bool:
    """A scored record whose one region is the whole frame (no detector or region stage ran)."""
    return record.faces == 1 and record.face_score is None and record.landmarks is None


def empty_counts() -> dict[str, int]:
    return {"read": 0, SCORED: 0, DROPPED: 0, FAILED: 0}


def accounting_holds(counts: dict[str, int]) -> bool:
    """``read == scored + dropped + failed``."""
    return counts["read"] == counts[SCORED] + counts[DROPPED] + counts[FAILED]
