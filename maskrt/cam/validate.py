"""Validation shared by the CAM kernels and their reference: shapes, dtypes and layouts of the
contract in ARCHITECTURE.md ("CAM and overlay"), for NumPy arrays and torch tensors alike, with
ValueError messages naming what was expected and what came."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from maskrt.devices import is_tensor

ArrayLike = Any
#: Shape of one image's features: ResNet-18 layer4 at a 224x224 input.
FEATURE_SHAPE = (512, 7, 7)
_FEATURE_DTYPES = ("float32", "float16")
_CLASS_DTYPES = ("int64", "int32")


def dtype_name(x: ArrayLike) -> str:
    return str(x.dtype).removeprefix("torch.")


def shape_of(x: ArrayLike) -> list[int]:
    return list(x.shape)


def is_contiguous(x: ArrayLike) -> bool:
    return bool(x.is_contiguous()) if is_tensor(x) else bool(x.flags.c_contiguous)


def require_array(name: str, x: object) -> None:
    if not (isinstance(x, np.ndarray) or is_tensor(x)):
        raise TypeError(f"{name}: expected a numpy.ndarray or torch.Tensor, got {type(x).__name__}")


def check_array(name: str, x: ArrayLike, dtypes: Sequence[str], rank: int, layout: str) -> None:
    if dtype_name(x) not in dtypes:
        raise ValueError(f"{name}: expected dtype {' or '.join(dtypes)}, got {dtype_name(x)}")
    if x.ndim != rank:
        raise ValueError(f"{name}: expected {rank} dimensions {layout}, got {x.ndim} (shape {shape_of(x)})")
    if not is_contiguous(x):
        strides = x.stride() if is_tensor(x) else x.strides
        raise ValueError(f"{name}: expected a C-contiguous array {layout}, got strides {tuple(strides)} "
                         f"for shape {shape_of(x)} (use np.ascontiguousarray / .contiguous())")


def check_alpha(alpha: float) -> float:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"alpha: expected a number in [0, 1], got {value}")
    return value


def as_classes(classes: object) -> ArrayLike:
    """Lists and tuples of ints become int64 arrays; arrays and tensors pass through."""
    return as_index_array("classes", classes)


def as_index_array(name: str, values: object, columns: int | None = None) -> ArrayLike:
    """Lists and tuples of ints (rows of ``columns`` ints when given) become int64 arrays; arrays
    and tensors pass through."""
    if isinstance(values, np.ndarray) or is_tensor(values):
        return values
    if isinstance(values, (list, tuple)):
        return np.asarray(values, dtype=np.int64).reshape(-1 if columns is None else (-1, columns))
    raise TypeError(f"{name}: expected an int array, tensor or list of ints, got {type(values).__name__}")


def _check_features_and_weights(features: ArrayLike, weights: ArrayLike, items: str) -> None:
    """``items`` names the batch axis in messages: N (images) or R (faces)."""
    check_array("features", features, _FEATURE_DTYPES, 4, f"[{items}, 512, 7, 7]")
    if tuple(features.shape[1:]) != FEATURE_SHAPE:
        raise ValueError(f"features: expected shape [{items}, 512, 7, 7], got {shape_of(features)}")
    check_array("weights", weights, ("float32",), 2, "[C, 512]")
    if weights.shape[1] != FEATURE_SHAPE[0] or weights.shape[0] < 1:
        raise ValueError(f"weights: expected shape [C, 512] with C >= 1, got {shape_of(weights)}")


def _check_images(name: str, images: ArrayLike) -> None:
    check_array(name, images, ("uint8",), 4, "[N, H, W, 3]")
    if images.shape[3] != 3:
        raise ValueError(f"{name}: expected 3 channels (shape [N, H, W, 3]), got {images.shape[3]} "
                         f"(shape {shape_of(images)})")


def validate(features: ArrayLike, weights: ArrayLike, classes: ArrayLike, images: ArrayLike) -> None:
    """Shapes, dtypes and layouts of ARCHITECTURE.md; raises ValueError naming expected and got."""
    for name, x in (("features", features), ("weights", weights), ("images", images)):
        require_array(name, x)
    _check_features_and_weights(features, weights, "N")
    _check_images("images", images)
    check_array("classes", classes, _CLASS_DTYPES, 1, "[N]")
    n = features.shape[0]
    if images.shape[0] != n or classes.shape[0] != n:
        raise ValueError(f"batch mismatch: expected the same N for features, classes and images, got "
                         f"features {shape_of(features)}, classes {shape_of(classes)}, images {shape_of(images)}")


def check_class_range(lo: int, hi: int, num_classes: int) -> None:
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"classes: expected indices in [0, {num_classes}), got values in [{lo}, {hi}]")


def check_class_range_host(classes: np.ndarray, num_classes: int) -> None:
    if classes.size:
        check_class_range(int(classes.min()), int(classes.max()), num_classes)


def validate_boxes(features: ArrayLike, weights: ArrayLike, classes: ArrayLike, frame_index: ArrayLike,
                   boxes: ArrayLike, frames: ArrayLike) -> None:
    """Shapes, dtypes and layouts for cam_overlay_boxes (R faces in N frames); raises ValueError
    naming expected and got. Value ranges: check_faces_host."""
    named = (("features", features), ("weights", weights), ("classes", classes), ("frame_index", frame_index),
             ("boxes", boxes), ("frames", frames))
    for name, x in named:
        require_array(name, x)
    _check_features_and_weights(features, weights, "R")
    _check_images("frames", frames)
    check_array("classes", classes, _CLASS_DTYPES, 1, "[R]")
    check_array("frame_index", frame_index, _CLASS_DTYPES, 1, "[R]")
    check_array("boxes", boxes, _CLASS_DTYPES, 2, "[R, 4]")
    if boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected shape [R, 4] (x0, y0, x1, y1), got {shape_of(boxes)}")
    r = features.shape[0]
    if classes.shape[0] != r or frame_index.shape[0] != r or boxes.shape[0] != r:
        raise ValueError(f"face count mismatch: expected the same R for features, classes, frame_index and boxes, "
                         f"got features {shape_of(features)}, classes {shape_of(classes)}, "
                         f"frame_index {shape_of(frame_index)}, boxes {shape_of(boxes)}")


def check_faces_host(classes: np.ndarray, frame_index: np.ndarray, boxes: np.ndarray, num_classes: int,
                     frames_shape: Sequence[int]) -> None:
    """Value ranges of cam_overlay_boxes' per-face arrays (host NumPy arrays), ValueError otherwise."""
    check_class_range_host(classes, num_classes)
    n, h, w = (int(v) for v in frames_shape[:3])
    if frame_index.size and (frame_index.min() < 0 or frame_index.max() >= n):
        raise ValueError(f"frame_index: expected indices in [0, {n}), got values in "
                         f"[{int(frame_index.min())}, {int(frame_index.max())}]")
    x0, y0, x1, y1 = (boxes[:, k].astype(np.int64) for k in range(4))
    bad = np.flatnonzero(~((0 <= x0) & (x0 < x1) & (x1 <= w) & (0 <= y0) & (y0 < y1) & (y1 <= h)))
    if bad.size:
        first = int(bad[0])
        more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
        raise ValueError(f"boxes: expected [x0, y0, x1, y1] with 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h} "
                         f"(frames are {w} wide, {h} high), got {boxes[first].tolist()} at row {first}{more}")
