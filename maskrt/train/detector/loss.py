"""The detector's training loss (YOLOX-style, as YuNet was trained), on SimOTA's assignment.

* objectness: binary cross-entropy, 1 on positive cells, 0 on the others except in ignore
  regions and where the original YuNet (the teacher) is fairly sure of a face;
* class: binary cross-entropy on positive cells towards the IoU of their box, as YOLOX does, so
  the face score ``sqrt(cls * obj)`` ranks well-placed boxes first. (Towards 1 instead, tried:
  the scores crowd near 1, the best report threshold on val moved to 0.94, and false alarms
  rose: 27.6 against 18.4 per 100 photos at about the same F1; MODEL.md.)
* box: 1 - GIoU of positive cells' boxes with their faces;
* landmarks: no scene photo has them, so positive cells are held near what the original YuNet
  predicts there (smooth L1 on the raw offsets), which keeps the five points meaningful.

Sums are divided by the number of positive cells in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from maskrt.train.detector.assign import Priors, assign, box_iou
from maskrt.train.detector.data import Sample
from maskrt.train.detector.model import Outputs, decode_boxes

WEIGHTS = {"obj": 1.0, "cls": 1.0, "box": 5.0, "kps": 0.1}
#: cells where the original YuNet scores at least this are not pushed towards "no face" (an
#: unannotated face in a crowd, or a neighbour of a found face): training adds the faces it
#: missed without unlearning the ones it found
TEACHER_KEEP = 0.3
_EPS = 1e-6


@dataclass
class Terms:
    obj: torch.Tensor
    cls: torch.Tensor
    box: torch.Tensor
    kps: torch.Tensor
    positives: int

    def total(self) -> torch.Tensor:
        return sum(WEIGHTS[k] * getattr(self, k) for k in WEIGHTS)  # type: ignore[return-value]

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in WEIGHTS}


def _bce(p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy(p.clamp(_EPS, 1 - _EPS), target, reduction="sum")


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of paired boxes ``a``, ``b`` [N, 4]."""
    low, high = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (high - low).clamp(min=0).prod(dim=1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    union = area_a + area_b - inter
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).prod(dim=1)
    iou = inter / union.clamp(min=_EPS)
    return iou - (hull - union) / hull.clamp(min=_EPS)


def detector_loss(student: Outputs, teacher: Outputs, priors: Priors, samples: list[Sample]) -> Terms:
    """The loss of a batch: ``student`` and ``teacher`` outputs of the same crops ``samples``."""
    boxes = decode_boxes(student.bbox, priors.points, priors.strides)
    scores = student.scores().detach()
    kept = teacher.scores() >= TEACHER_KEEP
    obj = cls = box = kps = student.obj.new_zeros(())
    positives = 0
    for i, sample in enumerate(samples):
        faces = torch.from_numpy(sample.faces)
        a = assign(priors, boxes[i].detach(), scores[i], faces, torch.from_numpy(sample.ignore))
        target = a.positive.float()
        learn = a.positive | ~(a.ignore | kept[i])
        obj = obj + _bce(student.obj[i][learn], target[learn])
        if not a.positive.any():
            continue
        positives += int(a.positive.sum())
        matched = faces[a.face[a.positive]]
        placed = boxes[i][a.positive]
        quality = box_iou(placed.detach(), matched).diagonal().clamp(0, 1)
        cls = cls + _bce(student.cls[i][a.positive], quality)
        box = box + (1 - giou(placed, matched)).sum()
        kps = kps + F.smooth_l1_loss(student.kps[i][a.positive], teacher.kps[i][a.positive],
                                     reduction="sum")
    n = max(positives, 1)
    return Terms(obj / n, cls / n, box / n, kps / n, positives)
