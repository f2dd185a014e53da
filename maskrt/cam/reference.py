"""The CAM overlay in plain NumPy + OpenCV, one image at a time: the oracle the kernels are
tested against (the 7 steps of "CAM and overlay" in ARCHITECTURE.md)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from maskrt.cam.kernel import CamResult
from maskrt.cam.validate import (FEATURE_SHAPE, ArrayLike, as_classes, as_index_array, check_alpha,
                                 check_class_range_host, check_faces_host, validate, validate_boxes)
from maskrt.devices import is_tensor

_NORM_EPS = 1e-7


def cam_reference(features: ArrayLike, weights: ArrayLike, classes: ArrayLike | Sequence[int], images: ArrayLike,
                  *, alpha: float = 0.5, rgb: bool = False, heatmaps: bool = False) -> CamResult:
    """The 7 steps of ARCHITECTURE.md in plain NumPy + OpenCV, one image at a time (the test oracle).

    Same arguments and validation as :func:`cam_overlay`; tensors are copied to the CPU and the
    results are always NumPy arrays.
    """
    alpha = check_alpha(alpha)
    features, weights, classes, images = (
        x.detach().cpu().numpy() if is_tensor(x) else x for x in (features, weights, as_classes(classes), images))
    validate(features, weights, classes, images)
    check_class_range_host(classes, weights.shape[0])
    n, h, w = images.shape[:3]
    overlays = np.empty((n, h, w, 3), dtype=np.uint8)
    heat_maps = np.empty((n, h, w), dtype=np.float32)
    for i in range(n if h and w else 0):
        overlays[i], heat_maps[i] = _reference_overlay(features[i], weights[int(classes[i])], images[i], alpha, rgb)
    return (overlays, heat_maps) if heatmaps else overlays


def cam_reference_boxes(features: ArrayLike, weights: ArrayLike, classes: ArrayLike | Sequence[int],
                        frame_index: ArrayLike | Sequence[int], boxes: ArrayLike | Sequence[Sequence[int]],
                        frames: ArrayLike, *, alpha: float = 0.5, rgb: bool = False) -> np.ndarray:
    """:func:`cam_overlay_boxes` in plain NumPy + OpenCV, one face at a time (the test oracle).

    Each face's box of its frame is overlaid as :func:`cam_reference` overlays a whole image of the
    box's size, from the input frame; faces are drawn in increasing index, so where boxes overlap
    the highest index wins. Same arguments and validation; always returns a NumPy array.
    """
    alpha = check_alpha(alpha)
    arrays = (features, weights, as_classes(classes), as_index_array("frame_index", frame_index),
              as_index_array("boxes", boxes, columns=4), frames)
    features, weights, classes, frame_index, boxes, frames = (
        x.detach().cpu().numpy() if is_tensor(x) else x for x in arrays)
    validate_boxes(features, weights, classes, frame_index, boxes, frames)
    check_faces_host(classes, frame_index, boxes, weights.shape[0], frames.shape)
    overlays = frames.copy()
    for r in range(len(boxes)):
        n = int(frame_index[r])
        x0, y0, x1, y1 = (int(v) for v in boxes[r])
        overlays[n, y0:y1, x0:x1], _ = _reference_overlay(features[r], weights[int(classes[r])],
                                                          frames[n, y0:y1, x0:x1], alpha, rgb)
    return overlays


def _reference_overlay(features: np.ndarray, class_weights: np.ndarray, image: np.ndarray, alpha: float,
                       rgb: bool) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-7 for one image [h, w, 3]: (overlay uint8 [h, w, 3], heat float32 [h, w])."""
    import cv2

    heat = _reference_heat(features, class_weights, image.shape[0], image.shape[1])
    colour = cv2.applyColorMap(_heat_levels(heat), cv2.COLORMAP_JET)  # BGR
    if rgb:
        colour = colour[..., ::-1]
    blend = alpha * image.astype(np.float32) + (1.0 - alpha) * colour.astype(np.float32)
    return np.floor(blend + 0.5).astype(np.uint8), heat  # round half up


def _reference_heat(features: np.ndarray, class_weights: np.ndarray, h: int, w: int) -> np.ndarray:
    """Steps 1-5 for one image: float32 heat map [h, w] in [0, 1]."""
    import cv2

    f = features.astype(np.float32).reshape(FEATURE_SHAPE[0], -1)
    cam = (class_weights.astype(np.float32) @ f).reshape(FEATURE_SHAPE[1:])
    cam = np.maximum(cam, 0)
    cam = (cam - cam.min()) / (cam.max() - cam.min() + np.float32(_NORM_EPS))
    resized = cv2.resize(cam, (w, h), interpolation=cv2.INTER_LINEAR)
    return (resized - resized.min()) / (resized.max() - resized.min() + np.float32(_NORM_EPS))


def _heat_levels(heat: np.ndarray) -> np.ndarray:
    """Step 6's index: floor(255 * heat), clamped to [0, 255], as uint8."""
    return np.clip(np.floor(heat * np.float32(255)), 0, 255).astype(np.uint8)
