"""The detector interface: frames in, face boxes, scores and landmarks out."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from types import TracebackType
from typing import Sequence

import numpy as np


@dataclass
class Detections:
    """The faces found in one frame, best first.

    boxes: float32[K, 4] as [x0, y0, x1, y1] in frame pixels (not clipped: a face cut by the
    border may reach outside). scores: float32[K] in [0, 1]. landmarks: float32[K, 5, 2] (eyes,
    nose tip, mouth corners) in frame pixels. found: faces above the threshold before any cap.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.float32))
    found: int = 0

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, keep: np.ndarray) -> "Detections":
        """The detections at the indices (or mask) ``keep``, ``found`` unchanged."""
        return Detections(self.boxes[keep], self.scores[keep], self.landmarks[keep], self.found)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, M]`` IoU of ``[N, 4]`` and ``[M, 4]`` x0, y0, x1, y1 boxes (0 for empty ones)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class Detector(abc.ABC):
    """Finds faces in uint8 BGR frames of any size. Implementations batch frames as they can."""

    #: registry-style name, e.g. "yunet"
    name: str = ""

    @abc.abstractmethod
    def detect(self, frames: Sequence[np.ndarray],
               scales: Sequence[float] | None = None) -> list[Detections]:
        """One :class:`Detections` per frame, in order, in frame pixels. ``scales``: per frame,
        the factor it is resized by before detection (default: the detector's own setting);
        a detector without such a setting may ignore it."""

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Release what the detector holds. Idempotent."""

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
