"""Scene photos with face boxes (Pascal VOC layout), and running an Engine's faces over them.

A split is ``DIR/images/<name>.<ext>`` plus ``DIR/annotations/<name>.xml``, one annotation per
image, objects named ``with_mask``, ``without_mask`` or ``mask_worn_incorrectly`` (see
``shared/data/scenes/README.md``). Bad splits fail with a :class:`DatasetError` that names the
file and says what was expected; images are decoded only with :func:`maskrt.image.decode_image`,
and unreadable ones are reported, not fatal (like ``maskrt eval`` on ImageFolder trees).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskrt.image import ImageError, decode_image
from maskrt.train.data import IMAGE_EXTENSIONS, DatasetError
from maskrt.train.voc_metric import (
    THRESHOLDS,
    Detections,
    GroundTruth,
    OperatingPoint,
    ThresholdScores,
    evaluate,
    operating_point,
)

#: Object names a scene annotation may use. mask_worn_incorrectly boxes are marked difficult.
SCENE_CLASSES = ("with_mask", "without_mask", "mask_worn_incorrectly")
_BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class SceneImage:
    """One annotated photo. ``truth.boxes`` are 0-based with exclusive ends (frame pixels)."""

    image: Path
    annotation: Path
    truth: GroundTruth


def is_voc_split(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` has the VOC layout (``images/`` and ``annotations/``)."""
    return Path(root, "images").is_dir() and Path(root, "annotations").is_dir()


def index_scenes(root: str | os.PathLike[str]) -> list[SceneImage]:
    """Pair every image of ``root/images`` with ``root/annotations/<same name>.xml`` and read
    the annotations (sorted by name). Raises DatasetError for a missing folder, an image
    without annotation, an annotation without image, or an unreadable annotation."""
    root = Path(root)
    if not is_voc_split(root):
        raise DatasetError(f"{root}: expected a VOC split with images/ and annotations/ folders, "
                           f"found {sorted(p.name for p in root.iterdir()) if root.is_dir() else 'no such folder'}")
    images = {p.stem: p for p in _files(root / "images") if p.suffix.lower() in IMAGE_EXTENSIONS}
    notes = {p.stem: p for p in _files(root / "annotations") if p.suffix.lower() == ".xml"}
    lost = sorted(set(images) - set(notes))
    if lost:
        raise DatasetError(f"{root}: expected an annotation per image, "
                           f"{root / 'annotations' / (lost[0] + '.xml')} is missing "
                           f"({len(lost)} image(s) without annotation)")
    orphans = sorted(set(notes) - set(images))
    if orphans:
        raise DatasetError(f"{notes[orphans[0]]}: expected its image {root / 'images' / orphans[0]}"
                           f".jpg (or another image type), not found ({len(orphans)} annotation(s) "
                           "without image)")
    if not images:
        raise DatasetError(f"{root / 'images'}: expected image files with annotations, found none")
    return [SceneImage(images[k], notes[k], read_annotation(notes[k])) for k in sorted(images)]


def read_annotation(path: str | os.PathLike[str]) -> GroundTruth:
    """One VOC XML file -> GroundTruth. VOC boxes are 1-based and inclusive; they become 0-based
    with exclusive ends, the convention of detector boxes, so that IoU here is the devkit's."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DatasetError(f"{path}: not valid XML ({err})") from err
    except OSError as err:
        raise DatasetError(f"{path}: cannot read annotation ({err.strerror or err})") from err
    if root.tag != "annotation":
        raise DatasetError(f"{path}: expected a VOC <annotation> root element, got <{root.tag}>")
    boxes, labels, difficult = [], [], []
    for k, obj in enumerate(root.iter("object")):
        what = f"{path}: object {k}"
        name = (obj.findtext("name") or "").strip()
        if name not in SCENE_CLASSES:
            raise DatasetError(f"{what}: expected <name> one of {list(SCENE_CLASSES)}, got {name!r}")
        flag = (obj.findtext("difficult") or "0").strip()
        if flag not in ("0", "1"):
            raise DatasetError(f"{what}: expected <difficult> 0 or 1, got {flag!r}")
        x0, y0, x1, y1 = _bndbox(obj, what)
        boxes.append([x0 - 1.0, y0 - 1.0, x1, y1])
        labels.append(name)
        difficult.append(flag == "1")
    return GroundTruth.make(boxes, labels, difficult)


def _bndbox(obj: ET.Element, what: str) -> tuple[float, float, float, float]:
    box = obj.find("bndbox")
    if box is None:
        raise DatasetError(f"{what}: expected a <bndbox>, found none")
    values = []
    for tag in _BOX_TAGS:
        text = (box.findtext(tag) or "").strip()
        try:
            values.append(float(text))
        except ValueError:
            raise DatasetError(f"{what}: expected a number in <{tag}>, got {text!r}") from None
    x0, y0, x1, y1 = values
    if not (x1 >= x0 and y1 >= y0):
        raise DatasetError(f"{what}: expected xmin <= xmax and ymin <= ymax, got {values}")
    return x0, y0, x1, y1


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# Running an Engine's face detector + classifier over a split


@dataclass
class SceneReport:
    """What ``maskrt eval`` measured on a scene split: ``scores`` by IoU threshold over every
    candidate face (the ranking), ``operating`` over the faces reported to people."""

    data_dir: Path
    scenes: list[SceneImage]          # the images evaluated (unreadable ones left out)
    detections: list[Detections]      # one per scene, every candidate (report threshold 0)
    scores: dict[float, ThresholdScores]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    backend: str = ""
    model: str = ""
    seconds: float = 0.0              # everything, decoding included
    infer_seconds: float = 0.0        # inside engine.faces only
    operating: OperatingPoint | None = None  # at the engine's report_threshold, IoU 0.5

    @property
    def faces_detected(self) -> int:
        return sum(len(d.labels) for d in self.detections)

    @property
    def images_per_second(self) -> float:
        return len(self.scenes) / self.infer_seconds if self.infer_seconds > 0 else 0.0

    @property
    def faces_per_second(self) -> float:
        return self.faces_detected / self.infer_seconds if self.infer_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        s50, s30 = self.scores[0.5], self.scores[0.3]
        return {
            "data_dir": str(self.data_dir), "model": self.model, "backend": self.backend,
            "map50": _num(s50.map), "map30": _num(s30.map),
            "ap50": _by_class(s50.ap), "ap30": _by_class(s30.ap),
            "recall50": _by_class(s50.recall), "recall30": _by_class(s30.recall),
            "face_recall50": _num(s50.face_recall), "face_recall30": _num(s30.face_recall),
            "counts": self.counts(),
            "images_per_second": round(self.images_per_second, 3),
            "faces_per_second": round(self.faces_per_second, 3),
            "seconds": round(self.seconds, 2), "infer_seconds": round(self.infer_seconds, 2),
            "skipped_files": [{"path": str(p), "reason": r} for p, r in self.skipped],
            "operating_point": operating_dict(self.operating) if self.operating else None,
        }

    def counts(self) -> dict[str, Any]:
        s50 = self.scores[0.5]
        boxes: dict[str, int] = {c: 0 for c in SCENE_CLASSES}
        difficult = 0
        for scene in self.scenes:
            for label in scene.truth.labels:
                boxes[label] = boxes.get(label, 0) + 1
            difficult += int(scene.truth.difficult.sum())
        return {"images": len(self.scenes), "skipped": len(self.skipped), "boxes": boxes,
                "difficult": difficult, "positives": dict(s50.positives),
                "faces_detected": self.faces_detected, "detections": dict(s50.detections)}


def operating_dict(point: OperatingPoint) -> dict[str, Any]:
    """The operating point as JSON: per class and pooled ("all")."""
    keys = [*point.reported]
    return {"report_threshold": point.report_threshold, "iou": point.threshold,
            "precision": {c: _num(point.precision(c)) for c in keys},
            "recall": {c: _num(point.recall(c)) for c in keys},
            "f1": {c: _num(point.f1(c)) for c in keys},
            "reported": dict(point.reported), "right": dict(point.right),
            "positives": dict(point.positives),
            "false_without_mask_alarms": point.false_alarms,
            "false_alarm_kinds": dict(point.alarm_kinds),
            "false_alarms_per_100_images": _num(point.false_alarms_per_100)}


def evaluate_scenes(data_dir: str | os.PathLike[str], engine: Any, *, batch_size: int = 16,
                    progress: bool = False, model: str = "shipped",
                    scenes: list[SceneImage] | None = None,
                    report_threshold: float | None = None) -> SceneReport:
    """Run ``engine.faces`` over every image of a VOC split, in batches, and score it at the
    IoU thresholds of :data:`~maskrt.train.voc_metric.THRESHOLDS`. ``scenes``: the split's
    :func:`index_scenes`, when the caller has read it already. Every candidate face is ranked
    (``engine.faces(..., report_threshold=0)``); the operating point is measured on those at
    ``report_threshold`` (default: the engine's, else 0)."""
    t0 = time.perf_counter()
    scenes = index_scenes(data_dir) if scenes is None else scenes
    kept: list[SceneImage] = []
    found: list[Detections] = []
    skipped: list[tuple[Path, str]] = []
    infer = 0.0
    bar = _bar(len(scenes)) if progress else None
    try:
        for start in range(0, len(scenes), batch_size):
            batch, frames = [], []
            for scene in scenes[start:start + batch_size]:
                try:
                    frames.append(decode_image(scene.image))
                except ImageError as err:
                    skipped.append((scene.image, str(err)))
                    warnings.warn(f"skipping unreadable image {scene.image}: {err}", stacklevel=2)
                    continue
                batch.append(scene)
            if frames:
                t = time.perf_counter()
                faces = engine.faces(frames, report_threshold=0.0)
                infer += time.perf_counter() - t
                kept.extend(batch)
                found.extend(detections_of(f) for f in faces)
            if bar is not None:
                bar.update(min(batch_size, len(scenes) - start))
    finally:
        if bar is not None:
            bar.close()
    if not kept:
        raise DatasetError(f"{data_dir}: none of the {len(scenes)} images could be decoded")
    truth = [s.truth for s in kept]
    scores = {t: evaluate(found, truth, t) for t in THRESHOLDS}
    if report_threshold is None:
        report_threshold = float(getattr(engine, "report_threshold", 0.0))
    point = operating_point(found, truth, report_threshold, 0.5)
    describe = engine.backend.describe() if hasattr(engine, "backend") else type(engine).__name__
    return SceneReport(Path(data_dir), kept, found, scores, skipped, describe, model,
                       time.perf_counter() - t0, infer, point)


def detections_of(faces: list[Any]) -> Detections:
    """One frame's ``engine.faces`` Results -> metric Detections: confidence = face score x
    probability of the label (the README's ranking)."""
    return Detections.make([list(r.box) for r in faces], [r.label for r in faces],
                           [float(r.face_score) * float(r.probabilities[r.class_index]) for r in faces],
                           [float(r.face_score) for r in faces])


def _bar(total: int) -> Any:
    from tqdm import tqdm
    return tqdm(total=total, desc="evaluating", unit="img", file=sys.stderr)


def _num(value: float) -> float | None:
    """JSON has no NaN: a metric without positives is null."""
    return None if np.isnan(value) else round(float(value), 6)


def _by_class(values: dict[str, float]) -> dict[str, float | None]:
    return {c: _num(v) for c, v in values.items()}


# ---------------------------------------------------------------------------------------------
# The mistakes, for the gallery


@dataclass
class SceneMistake:
    """A face the split got wrong. kind: "missed" (a ground-truth face no detection found),
    "false" (a detection of no face, or a duplicate) or "misclassified" (a face found with the
    other class). face: the index in the image's ``engine.faces`` results (-1 for "missed")."""

    kind: str
    image: Path
    box: np.ndarray
    severity: float
    true: str | None = None
    predicted: str | None = None
    confidence: float = 0.0
    face: int = -1


#: Missed faces have no confidence to rank them by; their severity grows with their size up to
#: this side (pixels), so that a missed large face ranks with a confident wrong decision and a
#: missed 10-px face (which no detector promises) comes late.
MISSED_FULL_SIDE = 64.0


def scene_mistakes(report: SceneReport, threshold: float = 0.5) -> list[SceneMistake]:
    """Every mistake of ``report`` at ``threshold``, most severe first (detections by confidence)."""
    from maskrt.train.voc_metric import FALSE_POSITIVE, iou_matrix

    scores = report.scores[threshold]
    mistakes: list[SceneMistake] = []
    for scene, det, matching in zip(report.scenes, report.detections, scores.matchings):
        truth = scene.truth
        for g in np.flatnonzero(~truth.difficult & ~matching[None].gt_matched):
            side = float(np.min(truth.boxes[g, 2:] - truth.boxes[g, :2]))
            mistakes.append(SceneMistake("missed", scene.image, truth.boxes[g],
                                         min(1.0, side / MISSED_FULL_SIDE), truth.labels[g]))
        iou = iou_matrix(det.boxes, truth.boxes)
        for d, label in enumerate(det.labels):
            if label not in matching or matching[label].outcome[d] != FALSE_POSITIVE:
                continue
            # Which face the false positive sat on decides its kind: another class's -> misclassified.
            row = np.where(truth.difficult, -1.0, iou[d]) if len(truth.labels) else np.zeros(0)
            best = int(np.argmax(row)) if len(row) and row.max() >= threshold else -1
            true = truth.labels[best] if best >= 0 else None
            kind = "misclassified" if true is not None and true != label else "false"
            conf = float(det.confidence[d])
            mistakes.append(SceneMistake(kind, scene.image, det.boxes[d], conf, true, label, conf, d))
    return sorted(mistakes, key=lambda m: -m.severity)
