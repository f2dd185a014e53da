"""The units of work that flow through the pipeline's stages: a frame, and the regions in it.

A :class:`FrameTask` is one frame read from a source, carrying its identity (source id, frame
index, timestamp, uri) from the reader to its records. Stages decode it, may give it regions
(a detector: one per face; a stage may also leave none), and prepare one network input per
region; the infer stage batches regions across frames and sources. A frame without regions set by
any stage is scored as one region: the whole frame.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskrt.stream.sources.base import VIDEO_EXTENSIONS, Frame, Source

#: source kinds whose frames are a sequence (a camera's or a video's, not photos)
SEQUENCE_KINDS = ("video", "stream", "camera")

#: Reasons of the frames the pipeline itself drops.
REASON_QUEUE_FULL = "live queue full: dropped the oldest frame"
REASON_STOPPED = "pipeline stopped before the frame was scored"
REASON_REMOVED = "source removed before the frame was scored"
#: the key of ``FrameTask.extra`` by which the face stage leaves a frame to the tracker's
#: predictions (``detect_every``)
SKIPPED_DETECTION = "skipped_detection"
#: the records' reason on a frame whose faces the tracker predicted: the detector skipped it
#: (detect_every and the live cadences), or the motion gate found it still
REASON_PREDICTED = "faces predicted by the tracker (the detector skipped this frame)"
REASON_STILL = ("faces predicted by the tracker (the frame barely moved since the last one the "
                "detector saw)")
#: the key of ``FrameTask.extra`` that hands the tracks of a folder's previous video to the
#: explain stage with the next video's first frame (they end once that frame is recorded)
RETIRED_TRACKS = "retired_tracks"
REASON_LATE = "live frame older than max_latency_ms: dropped before scoring"
REASON_WOULD_BE_LATE = ("live frame that would be older than max_latency_ms when the classifier "
                        "returns (at its recent pace): dropped before scoring")
REASON_SUPERSEDED = "live frame superseded by a newer one of its source while queued (the " \
    "pipeline is behind the camera)"
#: the reason of a tracked face left unclassified (TrackSettings.classify_low)
REASON_NOT_CLASSIFIED = "not classified: an unconfirmed detection below the track's high_score"
#: a face of a track never classified, left for a later frame by a live frame's cap
REASON_DEFERRED = ("not classified yet: a live frame sends a few faces to the classifier, the "
                   "others go in later frames (live_classify_max, live_classify_fresh)")


class SourceHandle:
    """A source inside a pipeline: its reader thread's stop flag and why its frames are dropped."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.id = source.id
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.removed = False
        self.reader_done = False
        #: the reason recorded for this source's frames dropped from now on
        self.discard_reason = REASON_STOPPED
        #: a live source's frames older than this (s since read) are dropped, not scored
        self.max_latency_s: float | None = None


@dataclass
class Region:
    """One part of a frame to score: ``box`` = [x0, y0, x1, y1] in frame pixels (end-exclusive).

    score: the confidence of the stage that found it (a face detector), None for the whole frame.
    landmarks: float [5, 2] points in frame pixels, when a detector gives them.
    crop_box: the part of the frame that is classified and explained, when it differs from
    ``box`` (a face box widened for context); inside the frame, non-empty.
    input: its uint8[224, 224, 3] network input, set by the prepare stage.
    classify: whether it goes through the classifier (False: a tracked face that takes its
    track's decision). track, track_id: its track (set by the track stage) and the track's
    public id when the frame was tracked (None while the track is not confirmed). deferred: a
    face the classifier would have had, left for a later frame (a live frame's cap,
    ``live_classify_max`` or ``live_classify_fresh``).
    logits, features: its classification when it came with the detection (a served faces
    pipeline: the server classified it; features only when asked): float32[2] and
    [512, 7, 7]; such a region is not sent to the classifier again.
    """

    box: tuple[int, int, int, int]
    score: float | None = None
    landmarks: np.ndarray | None = field(default=None, repr=False)
    crop_box: tuple[int, int, int, int] | None = None
    input: np.ndarray | None = field(default=None, repr=False)
    classify: bool = True
    track: Any = field(default=None, repr=False)
    track_id: int | None = None
    deferred: bool = False
    logits: np.ndarray | None = field(default=None, repr=False)
    features: Any = field(default=None, repr=False)

    @property
    def served(self) -> bool:
        """Whether it is classified with its detection (its ``logits`` came with it)."""
        return self.classify and self.logits is not None

    @property
    def needs_classifier(self) -> bool:
        """Whether the classifier stage runs on it: classified, and not served."""
        return self.classify and self.logits is None

    @property
    def area(self) -> tuple[int, int, int, int]:
        """What is classified: ``crop_box``, else ``box``."""
        return self.crop_box or self.box

    def crop(self, image: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.area
        return image[y0:y1, x0:x1]


@dataclass
class FrameTask:
    """One frame on its way through the stages.

    image: the decoded uint8[H, W, 3] BGR frame (set by the decode stage).
    regions: None until a stage sets them (then the whole frame is the one region); [] is a
    frame with nothing to score, recorded as scored with ``faces`` 0.
    unreported: the face stage's candidates below ``report_threshold``: never classified or
    recorded, but the tracker sees them (a confirmed track's face among them joins ``regions``).
    extra: free room for user stages to pass data along.
    """

    handle: SourceHandle
    frame: Frame
    image: np.ndarray | None = field(default=None, repr=False)
    regions: list[Region] | None = None
    unreported: list[Region] = field(default_factory=list)
    #: a remark for the frame's records (e.g. that faces were capped)
    note: str | None = None
    #: True when no stage set regions and the whole frame is the one region
    whole_frame: bool = False
    t_prepared: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: the source's tracks (:class:`maskrt.track.source.SourceTracks`) when the frame is tracked
    tracks: Any = field(default=None, repr=False)
    #: set by the decode stage when ``image`` is smaller than the image as stored (over
    #: max_side): its records' boxes and landmarks are scaled back to the original's pixels
    reduction: Any = None

    @property
    def source_id(self) -> str:
        return self.handle.id

    @property
    def sequence_key(self) -> tuple[str, str | None] | None:
        """Which sequence the frame belongs to: (source id, None) for videos and live sources,
        (source id, file uri) for a video inside a folder source; None for a photo."""
        if self.handle.source.kind in SEQUENCE_KINDS:
            return self.source_id, None
        uri = self.frame.uri
        in_video = uri is not None and Path(uri).suffix.lower() in VIDEO_EXTENSIONS
        return (self.source_id, uri) if in_video else None

    @property
    def to_classify(self) -> list[Region]:
        """The regions that go through the classifier, in order (not those served with their
        classification)."""
        return [r for r in self.regions or () if r.needs_classifier]

    def replaces(self, queued: "FrameTask") -> bool:
        """Whether this frame makes ``queued`` pointless before any costly work was spent on
        it: both from one live source with a max latency (the queue in front of the detector
        keeps an untracked live camera's newest frame only; see TrackStage.before_detector)."""
        return queued.handle is self.handle and self.handle.max_latency_s is not None

    def supersedes(self, queued: "FrameTask") -> bool:
        """Whether this frame makes ``queued`` pointless after work was spent on it: both from
        one live source, and ``queued`` has used half its source's max latency waiting (a
        burst of work, such as the new faces of a cut, is absorbed; a pipeline that stays
        behind the camera scores the newest frames)."""
        limit = self.handle.max_latency_s
        return (queued.handle is self.handle and limit is not None
                and self.frame.t_read - queued.frame.t_read > limit / 2)

    def queue_weight(self) -> int:
        """A prepared frame's weight in the queue before inference: the faces it sends to the
        classifier (at least 1: its image)."""
        return max(1, len(self.to_classify))

    def release(self) -> None:
        """The frame will not be scored (dropped or failed): classifications its tracked faces
        asked for will not come."""
        if self.tracks is not None:
            self.tracks.cancel(self)

    def late(self, now: float) -> bool:
        """A live frame that can no longer be scored within its source's max latency."""
        limit = self.handle.max_latency_s
        return limit is not None and now - self.frame.t_read > limit

    def would_end_late(self, region_s: float | None, before: int, now: float) -> bool:
        """Whether a live frame that has waited half its max latency already would come back
        from the backend past it, its faces going after ``before`` others at ``region_s``
        seconds a region (the backend's recent pace; None: not known yet). A younger frame is
        never dropped this way: one of many new faces (a cut) would be dropped again and again,
        its people never classified."""
        limit = self.handle.max_latency_s
        if limit is None or region_s is None:
            return False
        age = now - self.frame.t_read
        return age > limit / 2 and age + region_s * (before + len(self.to_classify)) > limit

    def whole_frame_region(self) -> Region:
        h, w = self.image.shape[:2]  # type: ignore[union-attr]
        return Region((0, 0, w, h))


def unclassified_reason(region: Region, decision: Any) -> str:
    """Why a face's record has no label: left for a later frame, never to be classified (a
    low-score detection), or its track's classification is still on its way."""
    if region.deferred:
        return REASON_DEFERRED
    if decision is not None and decision.requested == 0:
        return REASON_NOT_CLASSIFIED
    return "reused its track's decision, which has no classification yet"
