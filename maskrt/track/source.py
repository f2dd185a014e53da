"""The tracks of one source: its tracker, its people's decisions and the events they make.

One :class:`SourceTracks` per source (per video file inside a folder source), handed that
source's frames in order twice: by the track stage (:meth:`assign`: who is who, and which faces
go to the classifier) and by the explain stage (:meth:`resolve`: the decisions after this frame's
classifications, and the events). Both run in frame order, one thread each; the lock guards the
tracker and the decisions between them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Sequence

import numpy as np

from maskrt.stream.work import REASON_PREDICTED, REASON_STILL, Region
from maskrt.track.bytetrack import ByteTracker, Track
from maskrt.track.decision import TrackDecision
from maskrt.track.motion import CameraMotion
from maskrt.track.settings import TrackSettings

log = logging.getLogger(__name__)

#: the longest the track stage waits for a classification the uncertain rule reads
SETTLE_TIMEOUT_S = 30.0

#: the kinds of track events
TRACK_STARTED, DECISION, TRACK_ENDED = "track_started", "decision", "track_ended"


def shorter_side(box: Sequence[float]) -> float:
    return float(min(box[2] - box[0], box[3] - box[1]))


class SourceTracks:
    """Tracker, decisions and events of one source (``source_id``; ``uri``: the video inside a
    folder source, else None). reuse: let tracked faces take their track's decision."""

    def __init__(self, source_id: str, uri: str | None, settings: TrackSettings,
                 reuse: bool) -> None:
        self.source_id = source_id
        self.uri = uri
        self.settings = settings
        self.reuse = reuse
        self.tracker = ByteTracker(settings)
        self.motion = CameraMotion() if settings.camera_motion else None
        self.lock = threading.Lock()
        #: notified when classifications settle (see TrackDecision.unsettled)
        self._settled = threading.Condition(self.lock)
        self._waited_too_long = False
        #: (frame index, track) of tracks the tracker ended, announced once that frame's
        #: records are made (so their decision includes every classification before it)
        self._ended: deque[tuple[int, Track]] = deque()

    # ------------------------------------------------------------------ track stage

    def assign(self, task: Any, classify_max: int | None = None) -> None:
        """Give each region of ``task`` its track (``region.track``, ``region.track_id``) and
        decide whether it is classified (``region.classify``; at most ``classify_max`` of them,
        see :meth:`_capped`). The tracker also sees the candidates below the report threshold
        (``task.unreported``): those on a confirmed track (a known person whose face scored
        low in this frame) join ``task.regions``, after the reported ones; the others stay
        unreported and unclassified."""
        regions = list(task.regions)
        # a task without unreported candidates (not a FrameTask) tracks its regions alone
        candidates = regions + list(getattr(task, "unreported", None) or ())
        boxes = np.array([r.box for r in candidates], dtype=np.float64).reshape(-1, 4)
        scores = np.array([1.0 if r.score is None else r.score for r in candidates])
        index = task.frame.index
        # Estimated on every frame, faces or not, so the next frame's motion is known.
        motion = self.motion.estimate(task.image) if self.motion is not None else None
        with self.lock:
            self._end_at_cut(index)
            update = self.tracker.update(boxes, scores, index, motion)
            for region, track in zip(candidates, update.tracks):
                if track.data is None:
                    track.data = TrackDecision(self.settings)
                region.track = track
                region.track_id = track.track_id  # as it is now: confirmation may come later
            regions += [r for r in candidates[len(regions):] if r.track_id is not None]
            task.regions, task.unreported = regions, []
            for region in regions:
                region.classify = self._classify(region.track, index, shorter_side(region.box))
            cap = classify_max if self.reuse else None  # reuse off: every face, every frame
            for region in self._capped([r for r in regions if r.classify], cap):
                region.track.data.requested_at(index, shorter_side(region.box))
            self._ended.extend((index, track) for track in update.ended)

    @staticmethod
    def _capped(wanted: list[Region], classify_max: int | None) -> list[Region]:
        """The regions of ``wanted`` that go to the classifier: all of them, or the
        ``classify_max`` most needed (faces of tracks never classified first, then the
        largest); the others are not classified in this frame (``region.deferred``: their
        tracks are asked again in the next)."""
        if classify_max is None or len(wanted) <= classify_max:
            return wanted
        order = sorted(wanted, key=lambda r: (r.track.data.requested > 0, -shorter_side(r.box)))
        for region in order[classify_max:]:
            region.classify, region.deferred = False, True
        return order[:classify_max]

    def coast(self, task: Any, still: bool = False) -> None:
        """A frame the detector skipped: its regions are the confirmed tracks' predicted boxes
        (clipped to the frame), each reusing its track's decision; ``still``: skipped by the
        motion gate (the records say so)."""
        height, width = task.image.shape[:2]
        # A still frame has no camera motion to estimate (about 5 ms a 720p frame) and is no
        # cut; the next estimate is against the last frame estimated, which is the same view.
        motion = None if still or self.motion is None else self.motion.estimate(task.image)
        task.regions = []
        with self.lock:
            if not still:
                self._end_at_cut(task.frame.index)
            for track in self.tracker.coast(task.frame.index, motion):
                x0, y0, x1, y1 = np.clip(np.rint(track.predicted_box()), 0,
                                         [width, height, width, height]).astype(int)
                if x1 - x0 < 1 or y1 - y0 < 1:
                    continue
                region = Region((int(x0), int(y0), int(x1), int(y1)), score=track.score)
                region.track, region.track_id, region.classify = track, track.track_id, False
                task.regions.append(region)
        # detect_every for files; live sources: live_detect_every, or up to live_max_every when
        # the machine is behind, so the note names none of them; the motion gate's is its own
        task.note = REASON_STILL if still else REASON_PREDICTED

    def _end_at_cut(self, frame_index: int) -> None:
        """A scene cut before this frame (see :mod:`maskrt.track.motion`): every track ends, to
        be announced with this frame; the tracker starts afresh (ids go on)."""
        if self.motion is not None and self.motion.cut and self.settings.scene_cut:
            self._ended.extend((frame_index, track) for track in self.tracker.finish())

    def _classify(self, track: Track, frame_index: int, side: float) -> bool:
        if not self.reuse:
            return True
        if (track.track_id is None and track.best_score < self.settings.high_score
                and not self.settings.classify_low):
            return False  # an unconfirmed low-score detection: probably not a face
        decision: TrackDecision = track.data
        if decision.due(frame_index, side):
            return True
        self._wait_settled(decision, frame_index)
        return decision.uncertain_at(frame_index)

    def _wait_settled(self, decision: TrackDecision, frame_index: int) -> None:
        """Wait (the lock released) until the classifications the uncertain rule reads have
        come back: settle_frames after they were asked for they normally have, and then this
        costs nothing. Bounded: a pipeline stopping gives its requests back (cancel), and past
        SETTLE_TIMEOUT_S the rule reads what came (logged once)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while decision.unsettled(frame_index):
            left = deadline - time.monotonic()
            if left <= 0.0:
                if not self._waited_too_long:
                    log.warning("%s: classifications of frames up to %d not back after %.0f s; "
                                "reuse decides without them", self.source_id,
                                frame_index - self.settings.settle_frames, SETTLE_TIMEOUT_S)
                self._waited_too_long = True
                return
            self._settled.wait(left)

    def cancel(self, task: Any) -> None:
        """``task`` will not be recorded as scored: its requested classifications will not come."""
        with self.lock:
            for region in task.regions or ():
                if region.track is not None and region.classify:
                    region.track.data.cancel(task.frame.index)
            self._settled.notify_all()

    # ------------------------------------------------------------------ explain stage

    def resolve(self, task: Any, results: Sequence[Any], features: Sequence[Any]) -> list[dict[str, Any]]:
        """This frame's classifications (``results[i]``: region i's engine Result, None when
        reused; ``features[i]``: its CAM features to keep, or None) into the decisions; returns
        the events this frame makes."""
        frame = task.frame
        events: list[dict[str, Any]] = []
        with self.lock:
            for region, result, feats in zip(task.regions, results, features):
                decision: TrackDecision = region.track.data
                if result is not None:
                    shown = None if task.reduction is None else task.reduction.box(region.box)
                    decision.add(result, region.score, list(region.box), frame.index, feats, shown)
                if region.classify:
                    decision.settle(frame.index)
                decision.note_record(frame.index, frame.timestamp)
                if region.track_id is not None:
                    events.extend(self._announce(region.track, decision, frame))
            while self._ended and self._ended[0][0] <= frame.index:
                events.extend(self._end(self._ended.popleft()[1], frame.index))
            self._settled.notify_all()
        return events

    def _announce(self, track: Track, decision: TrackDecision, frame: Any) -> list[dict[str, Any]]:
        events = []
        if not decision.started:
            decision.started = True
            events.append(self._event(TRACK_STARTED, track, decision, frame.index,
                                      frame.timestamp))
        if decision.label is not None and decision.label != decision.announced:
            decision.announced = decision.label
            events.append(self._event(DECISION, track, decision, frame.index, frame.timestamp))
        return events

    def _end(self, track: Track, frame_index: int) -> list[dict[str, Any]]:
        decision: TrackDecision | None = track.data
        track.data = None  # its features go now
        if decision is None or track.track_id is None or not decision.started:
            return []  # never confirmed (or never recorded): no person to report
        event = self._event(TRACK_ENDED, track, decision, frame_index, decision.last_time)
        best = decision.best
        event.update(first_frame=decision.first_frame, last_frame=decision.last_frame,
                     first_time=decision.first_time, last_time=decision.last_time,
                     classified=decision.results,
                     best_frame=best[1] if best else None, best_box=best[2] if best else None)
        return [event]

    def finish(self) -> list[dict[str, Any]]:
        """The source ended: every track ends; their events."""
        with self.lock:
            ended = [track for _, track in self._ended] + self.tracker.finish()
            self._ended.clear()
            events = []
            for track in ended:
                events.extend(self._end(track, track.last_frame))
            return events

    def active(self) -> int:
        with self.lock:
            return len(self.tracker.active)

    def _event(self, kind: str, track: Track, decision: TrackDecision, frame_index: int,
               timestamp: float | None) -> dict[str, Any]:
        return {"event": kind, "source_id": self.source_id, "uri": self.uri,
                "track_id": track.track_id, "frame_index": frame_index,
                "source_timestamp": timestamp, "time": round(time.time(), 3),
                "track_label": decision.label,
                "p_track_without_mask": round(decision.p_without_mask, 6),
                "track_frames": decision.frames}
