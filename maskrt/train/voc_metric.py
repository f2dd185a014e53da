"""The PASCAL VOC (2010+) detection metric that judges maskrt on scene photos.

The definition is the one of ``shared/data/scenes/README.md``:

* per class (``with_mask``, ``without_mask``) the detections are the faces labelled with that
  class, ranked by confidence = face detector score x probability of the label;
* in confidence order, a detection whose best match over *all* ground-truth boxes (any class,
  IoU >= threshold) is a ``difficult`` box is ignored (neither true nor false positive);
  otherwise it is a true positive when some not-yet-matched, non-difficult ground-truth box of
  its class has IoU >= threshold (it takes the one with the highest IoU), else a false positive;
* difficult boxes are not positives; AP is the all-point interpolated area under the
  precision/recall curve; mAP is the mean AP over the classes that have positives.

Also: recall per class, and class-agnostic face recall (the same greedy matching with every
detection treated as one class, ranked by face score): how many faces the detector found.

Boxes are float ``[x0, y0, x1, y1]`` with exclusive ends (``x1 - x0`` is the width), the
convention of :class:`maskrt.engine.Result.box`; :mod:`maskrt.train.scenes` converts the
1-based inclusive VOC XML boxes to it, which makes the IoU here equal the VOC devkit's ``+1`` one.
NumPy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from maskrt.labels import CLASSES

#: The IoU thresholds maskrt reports (the README asks for both: annotators' boxes are looser or
#: tighter than detectors').
THRESHOLDS: tuple[float, float] = (0.5, 0.3)

# Detection outcomes.
FALSE_POSITIVE, TRUE_POSITIVE, IGNORED = 0, 1, 2


@dataclass
class GroundTruth:
    """The annotated faces of one image. boxes: float64[G, 4]; labels: class names; difficult: bool[G]."""

    boxes: np.ndarray
    labels: Sequence[str]
    difficult: np.ndarray

    @classmethod
    def make(cls, boxes: Sequence[Sequence[float]] | np.ndarray, labels: Sequence[str],
             difficult: Sequence[bool] | np.ndarray | None = None) -> GroundTruth:
        array = _boxes(boxes, "ground-truth boxes")
        flags = np.zeros(len(array), bool) if difficult is None else np.asarray(difficult, bool)
        if len(labels) != len(array) or flags.shape != (len(array),):
            raise ValueError(f"ground truth: expected {len(array)} labels and difficult flags, "
                             f"got {len(labels)} and {flags.shape[0] if flags.ndim else 'a scalar'}")
        return cls(array, tuple(labels), flags)


@dataclass
class Detections:
    """The faces found in one image. boxes: float64[D, 4]; labels: class names; confidence:
    face score x probability of the label; face_score: the detector's score alone."""

    boxes: np.ndarray
    labels: Sequence[str]
    confidence: np.ndarray
    face_score: np.ndarray

    @classmethod
    def make(cls, boxes: Sequence[Sequence[float]] | np.ndarray, labels: Sequence[str],
             confidence: Sequence[float] | np.ndarray,
             face_score: Sequence[float] | np.ndarray | None = None) -> Detections:
        array = _boxes(boxes, "detection boxes")
        conf = np.asarray(confidence, np.float64).reshape(-1)
        face = conf if face_score is None else np.asarray(face_score, np.float64).reshape(-1)
        if len(labels) != len(array) or conf.shape != (len(array),) or face.shape != conf.shape:
            raise ValueError(f"detections: expected {len(array)} labels, confidences and face "
                             f"scores, got {len(labels)}, {conf.shape[0]} and {face.shape[0]}")
        return cls(array, tuple(labels), conf, face)


@dataclass
class Matching:
    """How the detections of one image matched its ground truth for one class (or all).

    outcome: int8[D] (TRUE_POSITIVE / FALSE_POSITIVE / IGNORED; -1 for detections of other
    classes); matched_gt: int64[D] (the ground-truth index a true positive took, else -1);
    gt_matched: bool[G].
    """

    outcome: np.ndarray
    matched_gt: np.ndarray
    gt_matched: np.ndarray


@dataclass
class ThresholdScores:
    """The metric at one IoU threshold. ap/recall are NaN for a class without positives."""

    threshold: float
    ap: dict[str, float]
    recall: dict[str, float]
    positives: dict[str, int]
    true_positives: dict[str, int]
    detections: dict[str, int]
    face_recall: float
    faces_found: int
    faces: int
    #: Per image: class name -> its Matching, and None -> the class-agnostic one.
    matchings: list[dict[str | None, Matching]] = field(default_factory=list, repr=False)

    @property
    def map(self) -> float:
        """Mean AP over the classes that have positives (NaN when none has)."""
        values = [v for v in self.ap.values() if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [N, 4] with every box of ``b`` [M, 4] -> float64[N, M]."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    # A zero union only happens for two empty boxes: no overlap, not 0/0.
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_image(det: Detections, gt: GroundTruth, cls: str | None, threshold: float,
                iou: np.ndarray | None = None) -> Matching:
    """Greedy matching of the detections of class ``cls`` (all of them when None, ranked by
    face score) to the ground truth of that class, in decreasing confidence order."""
    iou = iou_matrix(det.boxes, gt.boxes) if iou is None else iou
    labels = np.asarray(det.labels, dtype=object)
    gt_labels = np.asarray(gt.labels, dtype=object)
    chosen = np.ones(len(labels), bool) if cls is None else labels == cls
    score = det.face_score if cls is None else det.confidence
    candidates = ~gt.difficult & (np.ones(len(gt_labels), bool) if cls is None else gt_labels == cls)
    outcome = np.full(len(labels), -1, np.int8)
    matched_gt = np.full(len(labels), -1, np.int64)
    gt_matched = np.zeros(len(gt_labels), bool)
    # Stable sort: equal confidences keep the detector's order, so results are reproducible.
    for d in np.flatnonzero(chosen)[np.argsort(-score[chosen], kind="stable")]:
        row = iou[d]
        if len(row) and row.max() >= threshold and gt.difficult[int(np.argmax(row))]:
            outcome[d] = IGNORED
            continue
        free = np.where(candidates & ~gt_matched & (row >= threshold), row, -1.0)
        if len(free) and free.max() >= threshold:
            g = int(np.argmax(free))
            gt_matched[g] = True
            outcome[d], matched_gt[d] = TRUE_POSITIVE, g
        else:
            outcome[d] = FALSE_POSITIVE
    return Matching(outcome, matched_gt, gt_matched)


def average_precision(confidence: np.ndarray, true_positive: np.ndarray, positives: int) -> float:
    """All-point interpolated AP (VOC 2010+) of detections with these confidences and outcomes
    (ignored detections already removed). NaN when there are no positives."""
    if positives <= 0:
        return math.nan
    if len(confidence) == 0:
        return 0.0
    order = np.argsort(-np.asarray(confidence, np.float64), kind="stable")
    tp = np.asarray(true_positive, bool)[order]
    tp_cum = np.cumsum(tp)
    recall = tp_cum / positives
    precision = tp_cum / np.arange(1, len(tp) + 1)
    # The precision envelope: at each recall, the best precision at that recall or beyond.
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def evaluate(detections: Sequence[Detections], ground_truth: Sequence[GroundTruth],
             threshold: float = 0.5, classes: Sequence[str] = CLASSES) -> ThresholdScores:
    """The metric over a split: ``detections[i]`` and ``ground_truth[i]`` belong to image i."""
    if len(detections) != len(ground_truth):
        raise ValueError(f"expected one Detections per image ({len(ground_truth)}), "
                         f"got {len(detections)}")
    conf: dict[str, list[np.ndarray]] = {c: [] for c in classes}
    hits: dict[str, list[np.ndarray]] = {c: [] for c in classes}
    positives = {c: 0 for c in classes}
    matchings: list[dict[str | None, Matching]] = []
    faces = found = 0
    for det, gt in zip(detections, ground_truth):
        iou = iou_matrix(det.boxes, gt.boxes)
        per_image: dict[str | None, Matching] = {}
        for c in classes:
            m = per_image[c] = match_image(det, gt, c, threshold, iou)
            kept = (m.outcome == TRUE_POSITIVE) | (m.outcome == FALSE_POSITIVE)
            conf[c].append(det.confidence[kept])
            hits[c].append(m.outcome[kept] == TRUE_POSITIVE)
            positives[c] += int(np.sum(~gt.difficult & (np.asarray(gt.labels, object) == c)))
        agnostic = per_image[None] = match_image(det, gt, None, threshold, iou)
        faces += int(np.sum(~gt.difficult))
        found += int(agnostic.gt_matched.sum())
        matchings.append(per_image)
    ap, recall, tps, dets = {}, {}, {}, {}
    for c in classes:
        cc = np.concatenate([np.zeros(0), *conf[c]])
        hh = np.concatenate([np.zeros(0, bool), *hits[c]])
        ap[c] = average_precision(cc, hh, positives[c])
        tps[c] = int(hh.sum())
        dets[c] = len(hh)
        recall[c] = tps[c] / positives[c] if positives[c] else math.nan
    return ThresholdScores(threshold, ap, recall, positives, tps, dets,
                           found / faces if faces else math.nan, found, faces, matchings)


@dataclass
class OperatingPoint:
    """What a person is shown at ``report_threshold``: the faces with a face score at least
    that, judged at IoU ``threshold`` with the matching of :func:`match_image` (class-aware: a
    reported face is right when it takes an annotated face of its label; one whose best overlap
    is a difficult box is neither right nor wrong; a second box on a face is wrong).

    Per class and pooled ("all"): ``reported`` (judged faces), ``right``, ``positives``
    (annotated faces), precision = right / reported, recall = right / positives, F1. NaN where
    there is nothing to divide by. ``false_alarms``: reported without_mask faces that are wrong;
    ``alarm_kinds``: them by what is there (:data:`ALARM_KINDS`).
    """

    report_threshold: float
    threshold: float
    images: int
    reported: dict[str, int]
    right: dict[str, int]
    positives: dict[str, int]
    false_alarms: int
    alarm_kinds: dict[str, int] = field(default_factory=dict)

    def precision(self, cls: str = "all") -> float:
        return self.right[cls] / self.reported[cls] if self.reported[cls] else math.nan

    def recall(self, cls: str = "all") -> float:
        return self.right[cls] / self.positives[cls] if self.positives[cls] else math.nan

    def f1(self, cls: str = "all") -> float:
        p, r = self.precision(cls), self.recall(cls)
        if math.isnan(p) or math.isnan(r):
            return math.nan
        return 2.0 * p * r / (p + r) if p + r > 0 else 0.0

    @property
    def false_alarms_per_100(self) -> float:
        """False without_mask alarms per 100 images."""
        return 100.0 * self.false_alarms / self.images if self.images else math.nan


def reported_only(det: Detections, report_threshold: float) -> Detections:
    """The detections with a face score at least ``report_threshold``, in order."""
    keep = det.face_score >= report_threshold
    return Detections(det.boxes[keep], tuple(np.asarray(det.labels, object)[keep]),
                      det.confidence[keep], det.face_score[keep])


def operating_point(detections: Sequence[Detections], ground_truth: Sequence[GroundTruth],
                    report_threshold: float, threshold: float = 0.5,
                    classes: Sequence[str] = CLASSES) -> OperatingPoint:
    """The :class:`OperatingPoint` of the faces reported at ``report_threshold`` (the others
    are left out before matching, so they take no annotated face from a reported one)."""
    shown = [reported_only(d, report_threshold) for d in detections]
    scores = evaluate(shown, ground_truth, threshold, classes)
    reported = {c: scores.detections[c] for c in classes}
    right = {c: scores.true_positives[c] for c in classes}
    positives = {c: scores.positives[c] for c in classes}
    for counts in (reported, right, positives):
        counts["all"] = sum(counts[c] for c in classes)
    alarm = CLASSES[1]
    false_alarms = reported.get(alarm, 0) - right.get(alarm, 0)
    kinds = dict.fromkeys(ALARM_KINDS, 0)
    if alarm in classes:
        for det, gt, matching in zip(shown, ground_truth, scores.matchings):
            wrong = np.flatnonzero(matching[alarm].outcome == FALSE_POSITIVE)
            for kind in alarm_kinds(det.boxes[wrong], gt, threshold):
                kinds[kind] += 1
    return OperatingPoint(float(report_threshold), threshold, len(ground_truth), reported,
                          right, positives, false_alarms, kinds)


#: what a false without_mask alarm is on: no annotated face (IoU under 0.1 with every one: a
#: thing that is not a face, or a face the annotations leave out), an annotated face but too
#: loosely (IoU 0.1 to the match threshold), an annotated face of another class (a masked face
#: called bare), or a bare face another reported box already took
ALARM_KINDS = ("no_face", "loose_box", "other_class", "second_box")


def alarm_kinds(boxes: np.ndarray, gt: GroundTruth, threshold: float) -> list[str]:
    """The :data:`ALARM_KINDS` of wrong alarm boxes in one image, from their best overlap with
    its annotated faces (difficult ones left out, as the matching leaves them)."""
    keep = ~gt.difficult
    iou = iou_matrix(boxes, gt.boxes[keep])
    labels = np.asarray(gt.labels, object)[keep]
    out = []
    for row in iou:
        best = float(row.max()) if len(row) else 0.0
        if best < 0.1:
            out.append("no_face")
        elif best < threshold:
            out.append("loose_box")
        else:
            out.append("second_box" if labels[int(np.argmax(row))] == CLASSES[1]
                       else "other_class")
    return out


def _boxes(boxes: Sequence[Sequence[float]] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(boxes, np.float64)
    if array.size == 0:
        return np.zeros((0, 4), np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{what}: expected an [N, 4] array of [x0, y0, x1, y1], got shape "
                         f"{list(array.shape)}")
    return array
