"""Paths and small utilities shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "facemask"
#: the shared scene photos of the val split
SCENE_PHOTOS = REPO.parent / "shared" / "data" / "scenes" / "val" / "images"


def val_image_paths(per_class: int) -> list[Path]:
    """The first ``per_class`` validation images of each class (with_mask first); skips the test
    when the shared data set is not beside the repository."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared face data not found at {SHARED_DATA}")
    paths: list[Path] = []
    for class_name in ("with_mask", "without_mask"):
        paths.extend(sorted((SHARED_DATA / "val" / class_name).glob("*.jpg"))[:per_class])
    return paths


def scene_paths(n: int) -> list[Path]:
    """The first ``n`` scene photos of the shared val split; skips the test when there are
    fewer."""
    paths = sorted(SCENE_PHOTOS.glob("*.jpg"))[:n]
    if len(paths) < n:
        pytest.skip(f"expected {n} scene photos under {SCENE_PHOTOS}")
    return paths


def scene_images(n: int) -> list[np.ndarray]:
    """:func:`scene_paths` decoded (uint8 BGR)."""
    import cv2

    return [cv2.imread(str(path)) for path in scene_paths(n)]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|: one number that is scale-free per tensor."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(float(np.abs(expected).max()), 1e-12)
    return float(np.abs(np.asarray(actual, dtype=np.float64) - expected).max()) / scale
