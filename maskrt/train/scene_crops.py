"""Face crops cut from annotated scene photos: how the classifier does on the faces a detector
hands it (smaller, framed differently from the face-crop training data), and the data to
fine-tune it on those.

A crop is an annotated face box (``with_mask`` or ``without_mask``; difficult boxes are left out)
widened about its centre like the face stage widens detector boxes, clipped to the photo.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskrt.image import ImageError, decode_image
from maskrt.labels import CLASSES
from maskrt.train.metrics import BinaryMetrics
from maskrt.train.scenes import index_scenes


@dataclass
class SceneCrops:
    """crops: uint8 BGR images of any size; labels: int64 class indices; sources: photo names."""

    crops: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def scene_crops(root: str | os.PathLike[str], *, widen: float = 1.2) -> SceneCrops:
    """The annotated faces of a VOC scene split as crops (see the module docstring)."""
    out = SceneCrops()
    for scene in index_scenes(root):
        try:
            image = decode_image(scene.image)
        except ImageError as err:
            out.skipped.append((scene.image, str(err)))
            continue
        h, w = image.shape[:2]
        truth = scene.truth
        for box, label, difficult in zip(truth.boxes, truth.labels, truth.difficult):
            if difficult or label not in CLASSES:
                continue
            x0, y0, x1, y1 = widened_box(box, widen, w, h)
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            out.crops.append(image[y0:y1, x0:x1].copy())
            out.labels.append(CLASSES.index(label))
            out.sources.append(scene.image.name)
    return out


def classify_crops(engine: Any, crops: SceneCrops, batch_size: int = 64) -> BinaryMetrics:
    """Accuracy, sensitivity and specificity (positive = without_mask) of ``engine`` on crops."""
    predicted: list[int] = []
    for start in range(0, len(crops.crops), batch_size):
        results = engine.classify(crops.crops[start:start + batch_size])
        predicted.extend(r.class_index for r in results)
    return BinaryMetrics.from_labels(np.asarray(crops.labels), np.asarray(predicted))


def widened_box(box: np.ndarray, factor: float, w: int, h: int) -> tuple[int, int, int, int]:
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    half_w, half_h = (box[2] - box[0]) * factor / 2.0, (box[3] - box[1]) * factor / 2.0
    return (max(0, math.floor(cx - half_w)), max(0, math.floor(cy - half_h)),
            min(w, math.ceil(cx + half_w)), min(h, math.ceil(cy + half_h)))
