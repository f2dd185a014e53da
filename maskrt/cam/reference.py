"""The CAM overlay in plain NumPy + OpenCV, one image at a time: the oracle the kernels are
tested against (the 7 steps of "CAM and overlay" in ARCHITECTURE.md)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from maskrt.cam.kernel import CamResult
from maskrt.cam.validate import (FEATURE_SHAPE, ArrayLike, as_classes, check_alpha,
                                 check_class_range_host, validate)
from maskrt.devices import is_tensor

_NORM_EPS = 1e-7


def cam_reference(features: ArrayLike, weights: ArrayLike, classes: ArrayLike | Sequence[int], images: ArrayLike,
                  *, alpha: float = 0.5, rgb: bool = False, heatmaps: bool = False) -> CamResult:
    """The 7 steps of ARCHITECTURE.md in plain NumPy + OpenCV, one image at a time (the test oracle).

    Same arguments and validation as :func:`cam_overlay`; tensors are copied to the CPU and the
    results are always NumPy arrays.
    """
    import cv2

    alpha = check_alpha(alpha)
    features, weights, classes, images = (
        x.detach().cpu().numpy() if is_tensor(x) else x for x in (features, weights, as_classes(classes), images))
    validate(features, weights, classes, images)
    check_class_range_host(classes, weights.shape[0])
    n, h, w = images.shape[:3]
    overlays = np.empty((n, h, w, 3), dtype=np.uint8)
    heat_maps = np.empty((n, h, w), dtype=np.float32)
    for i in range(n if h and w else 0):
        heat = _reference_heat(features[i], weights[int(classes[i])], h, w)
        colour = cv2.applyColorMap(_heat_levels(heat), cv2.COLORMAP_JET)  # BGR
        if rgb:
            colour = colour[..., ::-1]
        blend = alpha * images[i].astype(np.float32) + (1.0 - alpha) * colour.astype(np.float32)
        overlays[i] = np.floor(blend + 0.5).astype(np.uint8)  # round half up
        heat_maps[i] = heat
    return (overlays, heat_maps) if heatmaps else overlays


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
