"""ByteTracker: ByteTrack-style multi-object tracking of face boxes, one tracker per source.

Every update associates the frame's detections with the live tracks in passes, each an optimal
assignment (``lap.lapjv``) on the cost ``1 - IoU(predicted box, detection)``, where a pair needs
at least the pass's IoU (and some overlap) to match:

1. Predict every live track to this frame (constant-velocity Kalman, one step per frame index,
   so a gap of g frames predicts g steps). Lost tracks keep moving but stop changing size.
2. Pass 1: detections with ``score >= high_score`` vs the confirmed tracks, tracked and lost
   (``match_iou``).
3. Pass 2: detections with ``score < high_score`` (those below ``low_score`` too, though the
   detector drops them) vs the confirmed tracks seen in the previous update and still
   unmatched (``low_match_iou``): a face that blurs or turns keeps its track, while a weak
   detection never revives a lost one.
4. Pass 3: the detections still unmatched, high and low, vs the tentative tracks
   (``tentative_match_iou``).
4b. Pass 4 (``buffer`` > 0): the tracks and detections still unmatched, on boxes widened by
   ``buffer`` times their size on every side (C-BIoU, Yang et al. 2023), at
   ``tentative_match_iou``; confirmed tracks take only detections ``>= high_score`` here. A
   small face moving more than its own size a frame overlaps its prediction too little for the
   passes above until its track has learnt its velocity, and used to start a new track a frame.
5. Every detection still unmatched starts a tentative track, low-score ones too (the pipeline
   reuses work per track); a track whose best score stays below ``high_score`` is never confirmed.
6. A tentative track is confirmed, and given the next public ``track_id`` (1, 2, 3... per
   tracker, in order of confirmation), once matched in ``min_hits`` frames with a best score
   ``>= high_score``. In the tracker's first update, detections ``>= high_score`` are confirmed
   at once (as ByteTrack does: there is no earlier frame to wait for). With ``steady_hits`` >
   0, a track that never reached ``high_score`` is confirmed too once matched in
   ``steady_hits`` frames in a row with a mean score ``>= steady_score`` (a face the detector
   scores low in every frame: a mask's visor, a face cut by the frame's edge).
7. Unmatched confirmed tracks become lost; a lost track still unmatched more than ``max_lost``
   frames (by frame index) after its last match is removed, and so is a tentative track
   unmatched in an update. Removed tracks are reported once, in ``TrackerUpdate.ended``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lap
import numpy as np

from maskrt.detect.base import box_iou
from maskrt.track.kalman import BoxKalman, to_xyxy
from maskrt.track.settings import TrackSettings

TENTATIVE, TRACKED, LOST, REMOVED = "tentative", "tracked", "lost", "removed"


@dataclass(eq=False)
class Track:
    """One face followed across frames. ``box``/``score`` are the last matched detection's."""

    key: int
    track_id: int | None
    box: np.ndarray
    score: float
    best_score: float
    hits: int
    score_sum: float
    first_frame: int
    last_frame: int
    state: str
    data: Any = None
    _mean: np.ndarray = field(default=None, init=False, repr=False)
    _cov: np.ndarray = field(default=None, init=False, repr=False)
    _predicted: np.ndarray = field(default=None, init=False, repr=False)

    @property
    def confirmed(self) -> bool:
        return self.track_id is not None

    def predicted_box(self) -> np.ndarray:
        """The Kalman prediction for the tracker's current frame (x0, y0, x1, y1), before that
        frame's detection corrected it; a track started in this frame: its box."""
        return self._predicted.copy()


@dataclass
class TrackerUpdate:
    """``tracks[i]``: detection i's track (matched, or new and tentative); ``ended``: the tracks
    removed in this update."""

    tracks: list[Track]
    ended: list[Track]


def assign(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Row/column pairs of the assignment that maximises the total IoU, keeping only pairs
    that overlap with at least ``min_iou``."""
    if iou.size == 0:
        return []  # lap wants at least one row and one column
    # A pair at exactly min_iou costs as much as leaving both sides unassigned (cost_limit / 2
    # each), so the limit is nudged up and the pairs checked below.
    _, rows_to_cols, _ = lap.lapjv(1.0 - iou, extend_cost=True, cost_limit=1.0 - min_iou + 1e-9)
    return [(r, int(c)) for r, c in enumerate(rows_to_cols)
            if c >= 0 and iou[r, c] >= min_iou and iou[r, c] > 0.0]


def widened(boxes: np.ndarray, buffer: float) -> np.ndarray:
    """``[N, 4]`` boxes grown by ``buffer`` times their width and height on each side (C-BIoU's
    buffered boxes: a face that moved more than its size still overlaps where it was)."""
    if buffer <= 0.0:
        return boxes
    pad = (boxes[:, 2:] - boxes[:, :2]) * buffer
    return np.concatenate([boxes[:, :2] - pad, boxes[:, 2:] + pad], axis=1)


def _check_input(boxes: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if boxes.size == 0 and boxes.ndim <= 2:
        boxes = boxes.reshape(0, 4)  # [] and np.empty((0,)) mean "no faces"
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"ByteTracker.update: boxes: expected shape [N, 4], got "
                         f"{list(boxes.shape)}")
    if scores.shape != (len(boxes),):
        raise ValueError(f"ByteTracker.update: scores: expected shape [{len(boxes)}] (one per "
                         f"box), got {list(scores.shape)}")
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError("ByteTracker.update: expected finite boxes and scores, got NaN or inf")
    return boxes, scores


class ByteTracker:
    """Follows faces across the frames of one source (see the module docstring)."""

    def __init__(self, settings: TrackSettings | None = None) -> None:
        self.settings = settings if settings is not None else TrackSettings()
        self._kalman = BoxKalman()
        self._tracks: list[Track] = []  # live: tentative, tracked and lost, in creation order
        self._frame: int | None = None  # the last update's frame index
        self._next_key = 1
        self._next_id = 1

    @property
    def active(self) -> list[Track]:
        """The confirmed tracks still alive (tracked or lost)."""
        return [t for t in self._tracks if t.confirmed]

    def update(self, boxes: np.ndarray, scores: np.ndarray, frame_index: int,
               camera_motion: np.ndarray | None = None) -> TrackerUpdate:
        """Associate one frame's detections (``[N, 4]`` x0, y0, x1, y1 and ``[N]`` scores).
        camera_motion: the 2x3 affine from the previous frame's pixels to this one's, when the
        camera moved (:class:`~maskrt.track.motion.CameraMotion`); the tracks move with it."""
        boxes, scores = _check_input(boxes, scores)
        frame_index = int(frame_index)
        if self._frame is not None and frame_index <= self._frame:
            raise ValueError(f"ByteTracker.update: frame_index: expected > {self._frame} (the "
                             f"previous update's), got {frame_index}")
        first = self._frame is None
        self._predict(0 if first else frame_index - self._frame, camera_motion)
        self._frame = frame_index
        matched = self._associate(boxes, scores)
        tracks = self._apply(matched, boxes, scores, frame_index, first)
        return TrackerUpdate(tracks=tracks, ended=self._age(set(tracks), frame_index))

    def coast(self, frame_index: int, camera_motion: np.ndarray | None = None) -> list[Track]:
        """A frame that was not searched for faces: every track is predicted to it (moved with
        the camera) and the confirmed tracks seen at the last detection are returned, their
        ``predicted_box()`` where the face should be now. Nothing is matched, aged or ended."""
        frame_index = int(frame_index)
        if self._frame is not None and frame_index <= self._frame:
            raise ValueError(f"ByteTracker.coast: frame_index: expected > {self._frame} (the "
                             f"previous update's), got {frame_index}")
        if self._frame is None:
            return []
        self._predict(frame_index - self._frame, camera_motion)
        self._frame = frame_index
        return [t for t in self._tracks if t.state == TRACKED]

    def finish(self) -> list[Track]:
        """End every remaining track (the source ended); the next update starts afresh, ids
        continuing."""
        ended = self._tracks
        for track in ended:
            track.state = REMOVED
        self._tracks, self._frame = [], None
        return ended

    def _predict(self, steps: int, camera_motion: np.ndarray | None = None) -> None:
        """Move every live track's state ``steps`` frames on (into this frame's pixels first
        when the camera moved), all tracks in one call."""
        if not self._tracks:
            return
        mean = np.stack([t._mean for t in self._tracks])
        cov = np.stack([t._cov for t in self._tracks])
        if camera_motion is not None:
            mean, cov = self._kalman.warp(mean, cov, np.asarray(camera_motion, np.float64))
        # An unseen face's size velocity, extrapolated over an occlusion, would shrink or blow
        # up its box; its position keeps moving so it can be found where it went.
        mean[np.array([t.state == LOST for t in self._tracks]), 6:] = 0.0
        mean, cov = self._kalman.predict(mean, cov, steps)
        predicted = to_xyxy(mean)
        for i, track in enumerate(self._tracks):
            track._mean, track._cov, track._predicted = mean[i], cov[i], predicted[i]

    def _associate(self, boxes: np.ndarray, scores: np.ndarray) -> dict[int, Track]:
        """Detection index -> matched track, over the three passes."""
        s = self.settings
        high = scores >= s.high_score
        matched: dict[int, Track] = {}
        confirmed = [t for t in self._tracks if t.confirmed]
        self._match(confirmed, np.flatnonzero(high), boxes, s.match_iou, matched)
        seen_last = [t for t in confirmed if t.state == TRACKED and t not in matched.values()]
        self._match(seen_last, np.flatnonzero(~high), boxes, s.low_match_iou, matched)
        rest = np.array([i for i in range(len(boxes)) if i not in matched], dtype=np.intp)
        tentative = [t for t in self._tracks if not t.confirmed]
        self._match(tentative, rest, boxes, s.tentative_match_iou, matched)
        if s.buffer > 0.0:  # pass 4: what is left, on widened boxes
            taken = set(matched.values())
            left = [t for t in self._tracks if t not in taken]
            rest = np.array([i for i in range(len(boxes)) if i not in matched], dtype=np.intp)
            self._match([t for t in left if t.confirmed], rest[high[rest]], boxes,
                        s.tentative_match_iou, matched, s.buffer)
            rest = np.array([i for i in rest if i not in matched], dtype=np.intp)
            self._match([t for t in left if not t.confirmed], rest, boxes,
                        s.tentative_match_iou, matched, s.buffer)
        return matched

    @staticmethod
    def _match(tracks: list[Track], dets: np.ndarray, boxes: np.ndarray, min_iou: float,
               matched: dict[int, Track], buffer: float = 0.0) -> None:
        """Assign ``tracks`` to the detections ``dets`` (indices into ``boxes``), into
        ``matched``; on boxes widened by ``buffer`` times their size on every side."""
        if not tracks or len(dets) == 0:
            return
        predicted = widened(np.stack([t._predicted for t in tracks]), buffer)
        for r, c in assign(box_iou(predicted, widened(boxes[dets], buffer)), min_iou):
            matched[int(dets[c])] = tracks[r]

    def _apply(self, matched: dict[int, Track], boxes: np.ndarray, scores: np.ndarray,
               frame_index: int, first: bool) -> list[Track]:
        """Correct the matched tracks, start tracks for the rest; detection i's track at i."""
        if matched:
            done = list(matched.items())
            mean = np.stack([t._mean for _, t in done])
            cov = np.stack([t._cov for _, t in done])
            mean, cov = self._kalman.update(mean, cov, boxes[[i for i, _ in done]])
            for k, (i, track) in enumerate(done):
                track._mean, track._cov = mean[k], cov[k]
                self._record(track, boxes[i], float(scores[i]), frame_index)
        new = [i for i in range(len(boxes)) if i not in matched]
        created = dict(zip(new, self._start(boxes[new], scores[new], frame_index)))
        tracks = [matched[i] if i in matched else created[i] for i in range(len(boxes))]
        # Detection order, so that ids given in one frame follow the detector's order.
        return [self._maybe_confirm(track, first) for track in tracks]

    @staticmethod
    def _record(track: Track, box: np.ndarray, score: float, frame_index: int) -> None:
        track.box, track.score = box.copy(), score
        track.best_score = max(track.best_score, score)
        track.hits += 1
        track.score_sum += score
        track.last_frame = frame_index
        if track.confirmed:
            track.state = TRACKED

    def _start(self, boxes: np.ndarray, scores: np.ndarray, frame_index: int) -> list[Track]:
        """New tentative tracks, one per detection."""
        mean, cov = self._kalman.initiate(boxes)
        created = []
        for k, (box, score) in enumerate(zip(boxes, scores)):
            track = Track(key=self._next_key, track_id=None, box=box.copy(), score=float(score),
                          best_score=float(score), hits=1, score_sum=float(score),
                          first_frame=frame_index, last_frame=frame_index, state=TENTATIVE)
            track._mean, track._cov, track._predicted = mean[k], cov[k], box.copy()
            self._next_key += 1
            created.append(track)
        self._tracks.extend(created)
        return created

    def _maybe_confirm(self, track: Track, first: bool) -> Track:
        """Confirm ``track`` when it has earned it; returns the track its detection belongs to
        now: a lost track it revives, else itself."""
        if track.confirmed:
            return track
        s = self.settings
        strong = track.best_score >= s.high_score and (first or track.hits >= s.min_hits)
        steady = (0 < s.steady_hits <= track.hits
                  and track.score_sum >= s.steady_score * track.hits)
        if not (strong or steady):
            return track
        lost = self._lost_under(track)
        if lost is not None:
            return self._revive(lost, track)
        track.track_id, track.state = self._next_id, TRACKED
        self._next_id += 1
        return track

    def _lost_under(self, track: Track) -> Track | None:
        """The lost confirmed track whose predicted box overlaps ``track``'s box most (IoU >=
        ``match_iou``), if any: a person back after an occlusion whose first detections were
        too weak for pass 1, who should not get a second id."""
        lost = [t for t in self._tracks if t.state == LOST]
        if not lost:
            return None
        iou = box_iou(track.box[None], np.stack([t._predicted for t in lost]))[0]
        best = int(np.argmax(iou))
        return lost[best] if iou[best] >= self.settings.match_iou else None

    @staticmethod
    def _revive(lost: Track, tentative: Track) -> Track:
        """``lost`` takes over ``tentative``'s detections and state; ``tentative``, never
        confirmed, is removed (and reported ended) in this update."""
        lost.box, lost.score = tentative.box.copy(), tentative.score
        lost.best_score = max(lost.best_score, tentative.best_score)
        lost.hits += tentative.hits
        lost.score_sum += tentative.score_sum
        lost.last_frame, lost.state = tentative.last_frame, TRACKED
        lost._mean, lost._cov = tentative._mean, tentative._cov
        lost._predicted = tentative._predicted
        tentative.state = REMOVED
        return lost

    def _age(self, matched: set[Track], frame_index: int) -> list[Track]:
        """Unmatched tracks: tracked ones become lost; lost ones past max_lost and unmatched
        tentative ones are removed and returned."""
        ended = [t for t in self._tracks if t.state == REMOVED]  # absorbed by a revived track
        for track in self._tracks:
            if track in matched or track.first_frame == frame_index or track.state == REMOVED:
                continue
            if track.state == TRACKED:
                track.state = LOST
            if track.state == TENTATIVE or frame_index - track.last_frame > self.settings.max_lost:
                track.state = REMOVED
                ended.append(track)
        self._tracks = [t for t in self._tracks if t.state != REMOVED]
        return ended
