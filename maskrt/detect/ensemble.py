"""Several face detectors as one: each frame detected by every member, their faces fused.

Fusion is weighted boxes fusion (Solovyev et al., 2021): the members' faces, surest first, join
the first cluster whose fused box they overlap at IoU >= ``iou``, else start one; a cluster's box
and landmarks are the score-weighted means of its members', its score the mean of their scores
times the share of members that found it (a face one of two detectors finds keeps half its
score). Unlike NMS, which keeps the surest box, agreement raises a face above the faces one
member alone is sure of, and the boxes of several detectors average out their errors.

Written here rather than taken from the ``ensemble-boxes`` package: that one fuses boxes and
labels only (maskrt also needs the landmarks fused), on coordinates normalised to [0, 1].
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from maskrt.detect.base import Detections, Detector, box_iou

#: the least IoU of a face with a cluster's fused box to join it (the method's usual value)
FUSE_IOU = 0.55


def fuse_detections(parts: Sequence[Detections], iou: float = FUSE_IOU) -> Detections:
    """The weighted boxes fusion of one frame's faces from ``len(parts)`` detectors, surest
    first."""
    boxes = np.concatenate([p.boxes for p in parts]).astype(np.float32)
    scores = np.concatenate([p.scores for p in parts]).astype(np.float32)
    landmarks = np.concatenate([p.landmarks for p in parts]).astype(np.float32)
    clusters: list[list[int]] = []
    fused: list[np.ndarray] = []
    for i in np.argsort(-scores, kind="stable"):
        j = _joins(boxes[i], fused, iou)
        if j < 0:
            clusters.append([int(i)])
            fused.append(boxes[i].copy())
        else:
            clusters[j].append(int(i))
            fused[j] = _weighted(boxes, scores, clusters[j])
    if not clusters:
        return Detections()
    n = len(parts)
    out_scores = np.array([scores[m].mean() * min(len(m), n) / n for m in clusters], np.float32)
    order = np.argsort(-out_scores, kind="stable")
    out = Detections(np.array(fused, np.float32).reshape(-1, 4), out_scores,
                     np.array([_weighted(landmarks, scores, m) for m in clusters],
                              np.float32).reshape(-1, 5, 2), len(clusters))
    return out.take(order)


def _joins(box: np.ndarray, fused: list[np.ndarray], iou: float) -> int:
    """The cluster ``box`` joins: the one whose fused box it overlaps most, if at ``iou``."""
    if not fused:
        return -1
    overlaps = box_iou(box[None], np.asarray(fused))[0]
    j = int(overlaps.argmax())
    return j if overlaps[j] >= iou else -1


def _weighted(values: np.ndarray, scores: np.ndarray, members: list[int]) -> np.ndarray:
    w = scores[members]
    return np.tensordot(w, values[members], axes=1) / max(float(w.sum()), 1e-12)


class EnsembleDetector(Detector):
    """``members`` (detectors of the same input convention, e.g. YuNet graphs fine-tuned with
    different seeds) run on every frame at the same scales; their faces fused per frame
    (:func:`fuse_detections`). Costs the sum of the members' time."""

    name = "ensemble"

    def __init__(self, members: Sequence[Detector], iou: float = FUSE_IOU) -> None:
        if len(members) < 2:
            raise ValueError(f"ensemble: expected at least 2 detectors, got {len(members)}")
        if not 0.0 < iou <= 1.0:
            raise ValueError(f"ensemble: expected a fusion IoU in (0, 1], got {iou}")
        self.members = list(members)
        self.iou = float(iou)

    def detect(self, frames: Sequence[np.ndarray],
               scales: Sequence[float] | None = None) -> list[Detections]:
        per_member = [member.detect(frames, scales) for member in self.members]
        return [fuse_detections(parts, self.iou) for parts in zip(*per_member)]

    def describe(self) -> str:
        return " + ".join(member.describe() for member in self.members) + " (boxes fused)"

    def close(self) -> None:
        for member in self.members:
            member.close()
