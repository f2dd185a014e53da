"""Host-side image handling: decode, normalise channel layout, resize to the network input.

Everything downstream (backends, the exported graph) takes ``uint8[N, 224, 224, 3]`` BGR; this
module turns whatever a user or a source hands us into that, or raises :class:`ImageError`
saying what was expected and what came.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from maskrt.labels import INPUT_SIZE


class ImageError(ValueError):
    """An input image cannot be used; the message says what was expected and what came."""


def decode_image(data: bytes | bytearray | memoryview | str | os.PathLike[str]) -> np.ndarray:
    """Decode an encoded image (bytes, or a file path) into ``uint8[H, W, 3]`` BGR.

    Grayscale, BGRA and 16-bit images are converted, not rejected.
    """
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ImageError(f"cannot read image file {path}: {err.strerror or err}") from err
        what = str(path)
    else:
        what = "image bytes"
    if len(data) == 0:
        raise ImageError(f"{what}: expected an encoded image, got 0 bytes")
    buf = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"{what}: not a decodable image ({len(data)} bytes; truncated or not an image)")
    return to_bgr8(image, what=what)


def to_bgr8(image: np.ndarray, *, what: str = "image") -> np.ndarray:
    """Any 2-D gray, ``[H, W, 1|3|4]`` image of uint8/uint16/float in [0, 1] -> ``uint8[H, W, 3]`` BGR."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{what}: expected a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"{what}: expected shape [H, W], [H, W, 3] or [H, W, 4], got {list(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"{what}: expected a non-empty image, got shape {list(image.shape)}")
    image = _to_uint8(image, what)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def _to_uint8(image: np.ndarray, what: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if image.dtype in (np.float32, np.float64):
        return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise ImageError(f"{what}: expected dtype uint8, uint16 or float in [0, 1], got {image.dtype}")


def resize_to_input(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """``uint8[H, W, 3]`` BGR -> ``uint8[size, size, 3]``: area averaging when shrinking (no
    aliasing), bilinear when enlarging. The whole frame is squashed, not cropped, as in training."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    shrinking = h >= size and w >= size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def prepare_batch(frames: Sequence[np.ndarray], size: int = INPUT_SIZE) -> np.ndarray:
    """Frames of any size (already BGR uint8 or convertible) -> ``uint8[N, size, size, 3]``."""
    batch = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        batch[i] = resize_to_input(to_bgr8(frame, what=f"frame {i}"), size)
    return batch
