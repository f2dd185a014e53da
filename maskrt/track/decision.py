"""One person's decision, smoothed over the faces of their track, and when a face is worth
classifying again (temporal reuse).

The decision is a weighted mean of the classified faces' log-odds: a blurred or tiny face, or
one the detector doubts, moves it less than a large, sharp one, and one bad frame cannot flip a
decision built on several good ones. A face is classified again only when that can change
something: while the track is new, every ``reclassify_every`` frames, when the face became
clearly larger (a better view), or while the decision is uncertain.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from maskrt.labels import CLASSES
from maskrt.track.settings import TrackSettings


class TrackDecision:
    """What maskrt knows of one track: its classifications so far and its decision.

    Written by two pipeline threads in frame order: the track stage asks :meth:`wants` and
    notes requests; the explain stage adds results (:meth:`add`) and reads the decision. The
    owner (:class:`~maskrt.track.source.SourceTracks`) holds the lock around both.
    """

    def __init__(self, settings: TrackSettings) -> None:
        self.settings = settings
        self.requested = 0  # classifications asked for by the track stage
        self.last_requested: int | None = None  # frame index of the last one
        #: classifications asked for by the uncertain rule alone since the last one another
        #: rule asked for (each waits uncertain_backoff times longer than the one before)
        self.uncertain_asks = 0
        #: frame index -> classifications asked for in it and not yet settled (a result came,
        #: or none will); the uncertain rule waits for these (see unsettled)
        self.pending: dict[int, int] = {}
        #: (frame index, weight, weighted log-odds) of the results not yet behind the uncertain
        #: rule's horizon, in frame order; those behind it are summed in _settled_w/_settled_wl
        #: (the horizon only moves forward: the track stage sees a source's frames in order)
        self._recent: deque[tuple[int, float, float]] = deque()
        self._settled_w = 0.0
        self._settled_wl = 0.0
        self.largest_side = 0.0  # shorter side of the largest face sent to the classifier
        self.results = 0  # classifications received
        self._sum_w = 0.0
        self._sum_wl = 0.0
        self.last: Any = None  # the last classification (an engine Result)
        self.features: Any = None  # its CAM features [512, 7, 7] (host or device), when kept
        self.frames = 0  # records made for the track
        self.best: tuple[float, int, list[int]] | None = None  # (weight, frame, box) of its best face
        self.announced: str | None = None  # the last decision sent as an event
        self.started = False  # its track_started event was sent
        self.first_frame: int | None = None  # frame index and source time of its first and
        self.last_frame: int | None = None  # last records
        self.first_time: float | None = None
        self.last_time: float | None = None

    # ------------------------------------------------------------------ reuse (track stage)

    def wants(self, frame_index: int, side: float) -> bool:
        """Whether a face of ``side`` pixels (shorter box side) in ``frame_index`` should go
        through the classifier (True) or take the track's decision (False)."""
        return self.due(frame_index, side) or self.uncertain_at(frame_index)

    def due(self, frame_index: int, side: float) -> bool:
        """The rules that need no result: a new track, reclassify_every, a grown box."""
        s = self.settings
        if self.requested < s.min_classified or self.last_requested is None:
            return True
        if frame_index - self.last_requested >= s.reclassify_every:
            return True
        return side >= s.grow * self.largest_side

    def uncertain_at(self, frame_index: int) -> bool:
        """Whether the decision from the settled classifications is still uncertain, and no
        classification was asked for since them (whose result would answer it): so an
        uncertain track is classified again every settle_frames frames, or, with
        uncertain_backoff b, after waits growing by b (another rule's request starts over)."""
        s = self.settings
        wait = max(s.settle_frames,
                   round(s.settle_frames * s.uncertain_backoff ** self.uncertain_asks))
        if self.last_requested is not None and frame_index - self.last_requested < wait:
            return False
        p = self.p_settled(frame_index)
        return p is not None and abs(p - 0.5) < self.settings.uncertain

    def unsettled(self, frame_index: int) -> bool:
        """Whether a classification the uncertain rule reads at ``frame_index`` (asked for
        settle_frames or more frames before it) is still on its way: the track stage then waits
        for it, so that reuse does not depend on how fast results come back."""
        horizon = frame_index - self.settings.settle_frames
        return any(frame <= horizon for frame in self.pending)

    def p_settled(self, frame_index: int) -> float | None:
        """The decision's probability from the classifications asked for settle_frames or more
        frames before ``frame_index`` (None when there are none)."""
        horizon = frame_index - self.settings.settle_frames
        while self._recent and self._recent[0][0] <= horizon:
            _, w, wl = self._recent.popleft()
            self._settled_w += w
            self._settled_wl += wl
        if self._settled_w <= 0.0:
            return None
        return 1.0 / (1.0 + math.exp(-self._settled_wl / self._settled_w))

    def requested_at(self, frame_index: int, side: float) -> None:
        # asked for by the uncertain rule alone, or by another (due is read before the update)
        self.uncertain_asks = 0 if self.due(frame_index, side) else self.uncertain_asks + 1
        self.requested += 1
        self.last_requested = frame_index
        self.largest_side = max(self.largest_side, side)
        self.pending[frame_index] = self.pending.get(frame_index, 0) + 1

    def settle(self, frame_index: int) -> None:
        """A classification asked for in ``frame_index`` came, or will not."""
        left = self.pending.get(frame_index, 0) - 1
        if left > 0:
            self.pending[frame_index] = left
        else:
            self.pending.pop(frame_index, None)

    def cancel(self, frame_index: int) -> None:
        """A requested classification will not come (its frame was dropped or failed)."""
        self.settle(frame_index)
        self.requested = max(0, self.requested - 1)
        if self.requested == 0:
            self.last_requested = None

    # ------------------------------------------------------------------ results (explain stage)

    def add(self, result: Any, face_score: float | None, box: list[int], frame_index: int,
            features: Any = None, shown_box: list[int] | None = None) -> None:
        """A classification of one of the track's faces: ``box`` in the decoded frame's pixels
        (its size weighs the result), ``shown_box`` the same in the original's (the best face's
        box, reported; default ``box``)."""
        s = self.settings
        p = float(result.probabilities[1])
        logit = math.log(max(p, 1e-12)) - math.log(max(1.0 - p, 1e-12))
        logit = max(-s.logit_clip, min(s.logit_clip, logit))
        side = min(box[2] - box[0], box[3] - box[1])
        weight = max(1e-3, (1.0 if face_score is None else face_score)
                     * min(1.0, side / s.size_ref))
        self._sum_w += weight
        self._sum_wl += weight * logit
        self._recent.append((frame_index, weight, weight * logit))
        self.results += 1
        self.last = result
        if features is not None:
            self.features = features
        if self.best is None or weight > self.best[0]:
            self.best = (weight, frame_index, list(shown_box or box))

    def note_record(self, frame_index: int, timestamp: float | None) -> None:
        """A record of the track was made for ``frame_index``."""
        self.frames += 1
        if self.first_frame is None:
            self.first_frame, self.first_time = frame_index, timestamp
        self.last_frame, self.last_time = frame_index, timestamp

    @property
    def p_without_mask(self) -> float:
        """The smoothed probability that the person wears no mask (0.5 before any result)."""
        if self._sum_w <= 0.0:
            return 0.5
        return 1.0 / (1.0 + math.exp(-self._sum_wl / self._sum_w))

    @property
    def label(self) -> str | None:
        if self.results == 0:
            return None
        return CLASSES[1] if self.p_without_mask >= 0.5 else CLASSES[0]
