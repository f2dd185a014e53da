"""Training samples for the face detector: augmented crops of annotated scene photos.

Every annotated box is a face to the detector, whatever its class (``mask_worn_incorrectly`` and
difficult boxes too): the detector finds faces, the classifier decides. A sample is a square crop
of one photo, resized so that its faces come in the sizes the scale rule gives the detector
(:mod:`maskrt.detect.scale` aims the small faces of a frame at ``face_target`` = 40 px), flipped,
and degraded the ways camera frames are (brightness and contrast, JPEG, blur, noise): what the
robustness study (``benchmarks/tune_faces.py --robustness``) found the shipped detector weak on.

The boxes a sample carries are the annotated boxes mapped by the *inverse* of the preset's
``box_fit``: the fine-tuned detector keeps YuNet's box habit (brow to chin), so the face stage's
``box_fit``, fitted on the original detector, still maps its boxes to the annotated faces.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import cv2
import numpy as np

from maskrt.train.scenes import SceneImage

#: side of a training crop (multiple of 32, the detector's padding)
CROP = 320
#: faces smaller than this (crop pixels) or less than half inside the crop are "ignore" regions:
#: neither a face to find nor background to reject
MIN_FACE = 6.0
MIN_VISIBLE = 0.5
#: the range the median face side of a crop is drawn from (log-uniform, crop pixels)
FACE_SIDES = (12.0, 110.0)
#: the source degradation's range: the photo shrunk by a factor in SOURCE_SHRINK (log-uniform),
#: blurred and JPEG-compressed at that size, before it is resized to the detector's scale
SOURCE_SHRINK = (0.4, 1.0)
#: how much more often a crop is centred on a without_mask face than on another (they are about a
#: fifth of the annotated faces, and the detector must not trade them for masked ones)
BARE_WEIGHT = 3.0


@dataclass
class Sample:
    """image: uint8 BGR [CROP, CROP, 3]; faces: float32 [F, 4] boxes to find (x0, y0, x1, y1);
    ignore: float32 [I, 4] regions where nothing is learnt."""

    image: np.ndarray
    faces: np.ndarray
    ignore: np.ndarray


def unfit_boxes(boxes: np.ndarray, box_fit: tuple[float, float, float, float]) -> np.ndarray:
    """The inverse of :func:`maskrt.detect.regions.fitted_box` for a 4-number ``box_fit``: the
    detector box that ``box_fit`` maps onto each annotated box."""
    sx, sy, dx, dy = box_fit
    size = (boxes[:, 2:] - boxes[:, :2]) / np.array([sx, sy], np.float32)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0 - size * np.array([dx, dy], np.float32)
    return np.concatenate([centre - size / 2.0, centre + size / 2.0], axis=1).astype(np.float32)


class SceneFaces:
    """Augmented crops of ``scenes`` (each photo read once and kept decoded)."""

    def __init__(self, scenes: list[SceneImage], box_fit: tuple[float, float, float, float],
                 *, seed: int = 0, degrade: bool = True, source_degrade: float = 0.0) -> None:
        if not scenes:
            raise ValueError("detector training: expected annotated scene photos, got none")
        self.images = [_read(scene) for scene in scenes]
        self.boxes = [unfit_boxes(scene.truth.boxes.astype(np.float32), box_fit) for scene in scenes]
        self.weights = [[BARE_WEIGHT if label == "without_mask" else 1.0 for label in scene.truth.labels]
                        for scene in scenes]
        self.rng = random.Random(seed)
        self.degrade = degrade
        self.source_degrade = source_degrade

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, index: int) -> Sample:
        image, boxes = self.images[index], self.boxes[index]
        if self.source_degrade and self.rng.random() < self.source_degrade:
            image, boxes = degrade_source(image, boxes, self.rng)
        scale = self._scale(boxes)
        image = cv2.resize(image, None, fx=scale, fy=scale,
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        boxes = boxes * np.float32(scale)
        image, boxes = self._crop(image, boxes, self.weights[index])
        if self.rng.random() < 0.5:
            image = image[:, ::-1].copy()
            boxes = np.stack([CROP - boxes[:, 2], boxes[:, 1], CROP - boxes[:, 0], boxes[:, 3]], axis=1)
        if self.degrade:
            image = degrade(image, self.rng)
        return _split(image, boxes)

    def _scale(self, boxes: np.ndarray) -> float:
        sides = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)) if len(boxes) else np.array([40.0])
        median = max(float(np.median(sides)), 1.0)
        low, high = (math.log(v) for v in FACE_SIDES)
        return math.exp(self.rng.uniform(low, high)) / median

    def _crop(self, image: np.ndarray, boxes: np.ndarray, weights: list[float]
              ) -> tuple[np.ndarray, np.ndarray]:
        """A CROP x CROP window (zero-padded) around a random face (bare faces more often), or
        anywhere when none."""
        h, w = image.shape[:2]
        if len(boxes) and self.rng.random() < 0.85:
            x0, y0, x1, y1 = boxes[self.rng.choices(range(len(boxes)), weights)[0]]
            cx, cy = (x0 + x1) / 2 + self.rng.uniform(-0.4, 0.4) * CROP, (y0 + y1) / 2 + self.rng.uniform(-0.4, 0.4) * CROP
        else:
            cx, cy = self.rng.uniform(0, w), self.rng.uniform(0, h)
        left = int(round(min(max(cx - CROP / 2, 0), max(w - CROP, 0))))
        top = int(round(min(max(cy - CROP / 2, 0), max(h - CROP, 0))))
        out = np.zeros((CROP, CROP, 3), np.uint8)
        window = image[top:top + CROP, left:left + CROP]
        out[:window.shape[0], :window.shape[1]] = window
        return out, boxes - np.array([left, top, left, top], np.float32)


def _split(image: np.ndarray, boxes: np.ndarray) -> Sample:
    """Faces mostly inside the crop and big enough to learn from; the rest become ignore regions."""
    clipped = np.clip(boxes, 0, CROP)
    area = np.prod(np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-3), axis=1)
    inside = np.prod(np.maximum(clipped[:, 2:] - clipped[:, :2], 0), axis=1) / area
    side = np.sqrt(area)
    keep = (inside >= MIN_VISIBLE) & (side >= MIN_FACE)
    seen = inside > 0
    return Sample(image, boxes[keep].astype(np.float32), clipped[seen & ~keep].astype(np.float32))


def degrade(image: np.ndarray, rng: random.Random) -> np.ndarray:
    """Camera-like degradations, each with its own probability."""
    if rng.random() < 0.5:
        gain, offset = rng.uniform(0.6, 1.4), rng.uniform(-30, 30)
        image = cv2.convertScaleAbs(image, alpha=gain, beta=offset)
    if rng.random() < 0.2:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.6))
    if rng.random() < 0.2:
        noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(2, 8), image.shape)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(20, 90)])
        if ok:
            image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return image


def degrade_source(image: np.ndarray, boxes: np.ndarray, rng: random.Random
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The photo as a worse camera gives it, at its own resolution: fewer pixels, blur, JPEG.

    Why: the scale rule enlarges small frames 2-3x, so what a camera or an encoder did at the
    source's resolution reaches the detector enlarged as much (a blur of sigma 1 becomes 2-3;
    a photo of half the size loses detail the upscale cannot restore). :func:`degrade` works at
    the detector's scale and never shows it that."""
    low, high = (math.log(v) for v in SOURCE_SHRINK)
    factor = math.exp(rng.uniform(low, high))
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if rng.random() < 0.4:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.6:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(20, 80)])
        if ok:
            image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    scaled = boxes * np.float32([size[0] / w, size[1] / h, size[0] / w, size[1] / h])
    return image, scaled


def _read(scene: SceneImage) -> np.ndarray:
    image = cv2.imread(str(scene.image), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{scene.image}: expected an image OpenCV can decode, got unreadable bytes")
    return image
