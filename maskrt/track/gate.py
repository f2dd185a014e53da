"""The motion gate: a tracked source's frame that barely changed is left to the tracker.

Why: most cameras are fixed, and most of what a fixed camera sees does not move from one frame
to the next (a seated crowd, an empty corridor); detecting such a frame again finds the faces
the tracker already follows where it already has them. Frigate gates its detector on motion
the same way. One :class:`MotionGate` per tracked source compares each frame with the last
frame the detector saw: when under ``changed`` of a small grey thumbnail moved, the detector
skips it and the tracker predicts its faces (as with ``detect_every``), decisions reused; at
least one frame in ``max_every`` is detected whatever the gate says, so a person who steps in
small and slow is found within that many frames.

The comparison is made robust to what is not motion: the thumbnail is shrunk (``side`` px,
INTER_AREA) and blurred, which averages sensor noise away; each thumbnail is normalised to zero
mean and unit deviation, so a camera's exposure drifting (a gain and an offset over the whole
frame) changes nothing; a pixel counts as moved when its normalised value differs by more than
``level``. A moving camera changes most of the thumbnail, so the gate never fires on it.
"""

from __future__ import annotations

import numpy as np

#: the thumbnail's longer side (pixels): a 1280x720 frame shrinks 4x, a face of 24 px to 6
THUMB_SIDE = 320
#: a thumbnail pixel counts as moved when its normalised grey value changed by more than this
#: many standard deviations of the frame's grey values
MOVED_LEVEL = 0.25


class MotionGate:
    """Says whether a frame barely changed since the last one the detector saw (see module)."""

    def __init__(self, changed: float, side: int = THUMB_SIDE, level: float = MOVED_LEVEL) -> None:
        if not 0.0 < changed < 1.0 or side < 16 or not level > 0.0:
            raise ValueError(f"motion gate: expected changed in (0, 1), side >= 16 and level > 0, "
                             f"got {changed}, {side} and {level}")
        self.changed = changed
        self.side = side
        self.level = level
        self._reference: np.ndarray | None = None
        #: the last frame handed to :meth:`still` (its id) and its thumbnail, kept until it is
        #: known whether the detector takes it
        self._last: tuple[int, np.ndarray] | None = None
        #: the share of the thumbnail that moved in the last frame handed to :meth:`still`
        self.last_moved: float | None = None

    def still(self, image: np.ndarray) -> bool:
        """Whether ``image`` moved less than ``changed`` against the last detected frame (False
        before any). Call :meth:`detected` when the detector takes it after all."""
        thumb = thumbnail(image, self.side)
        self._last = (id(image), thumb)
        if self._reference is None or self._reference.shape != thumb.shape:
            self.last_moved = None
            return False
        self.last_moved = float(np.mean(np.abs(thumb - self._reference) > self.level))
        return self.last_moved < self.changed

    def detected(self, image: np.ndarray) -> None:
        """The detector saw ``image`` (the frame last handed to :meth:`still`, or a new one):
        later frames are compared with it."""
        last, self._last = self._last, None
        self._reference = last[1] if last is not None and last[0] == id(image) else \
            thumbnail(image, self.side)


def thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """``image`` (BGR or grey) shrunk to ``side`` px on its longer side, grey, blurred and
    normalised to zero mean and unit deviation (float32)."""
    import cv2

    h, w = image.shape[:2]
    factor = min(1.0, side / max(h, w, 1))
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    grey = cv2.GaussianBlur(small.astype(np.float32), (5, 5), 0)
    return (grey - grey.mean()) / max(float(grey.std()), 1.0)
