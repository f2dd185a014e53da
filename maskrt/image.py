"""Host-side image handling: the one decoder, channel layout, resizing to the network input.

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


#: Frames whose longer side exceeds this are decoded at reduced size (JPEG: straight to 1/2, 1/4
#: or 1/8 size) and then scaled down to it, bounding the memory one image can take.
MAX_SIDE = 4096


def decode_image(data: bytes | bytearray | memoryview | str | os.PathLike[str], *,
                 what: str | None = None, max_side: int = MAX_SIDE) -> np.ndarray:
    """Encoded image bytes, or a file path, -> ``uint8[H, W, 3]`` BGR. The one decoder of maskrt:
    Engine, the streaming pipeline, eval, training data, check, bench and demo all use it.

    Grayscale, BGRA and 16-bit images are converted; the EXIF orientation is applied (at any
    size). Raises :class:`ImageError` (the message names the input and the reason) for an
    unreadable file, 0 bytes, a truncated JPEG/PNG (OpenCV would decode those with gray rows) or
    undecodable data. An image whose header says it is larger than ``max_side`` is decoded at
    reduced size, so a 10000x10000 JPEG never exists at full size in memory (never reduced below
    1 pixel a side: thin images work), and then scaled so its longer side is ``max_side``.
    """
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        what = what or str(path)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ImageError(f"{what}: cannot read image file ({err.strerror or err})") from err
    what = what or "image bytes"
    if len(data) == 0:
        raise ImageError(f"{what}: expected an encoded image, got 0 bytes")
    data = bytes(data) if isinstance(data, memoryview) else data
    truncated = truncation_reason(data)
    if truncated is not None:
        raise ImageError(f"{what}: {truncated}")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _decode_flag(data, max_side))
    if image is None:
        raise ImageError(f"{what}: not a decodable image ({len(data)} bytes; not an image, or a "
                         "corrupt one)")
    return limit_side(to_bgr8(image, what=what), max_side)


def _decode_flag(data: bytes, max_side: int) -> int:
    """How to decode ``data``: depth, gray and colour as stored (``to_bgr8`` converts them), or a
    reduced-size colour decode when the header says the image is big. Both apply the EXIF
    orientation (phones store photos sideways and say so there; users expect them upright)."""
    size = image_size(data)
    factor = 1 if size is None else _reduction(size, max_side)
    if factor == 1:
        # Not IMREAD_UNCHANGED: it ignores EXIF orientation. Alpha is dropped, as to_bgr8 would.
        return cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
    return {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}[factor]


def _reduction(size: tuple[int, int], max_side: int) -> int:
    """1, 2, 4 or 8: the smallest reduction that brings the longer side to ``max_side``, but never
    more than the shorter side (OpenCV divides both sides by it: a 1x5000 PNG reduced by 2 would
    have a 0-pixel side and fail). ``limit_side`` scales down what a smaller factor leaves."""
    longer, shorter = max(size), min(size)
    if longer <= max_side:
        return 1
    factor = next((f for f in (2, 4) if longer / f <= max_side), 8)
    while factor > max(shorter, 1):
        factor //= 2
    return factor


def limit_side(image: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Scale ``image`` down (area averaging, aspect kept) so its longer side is <= max_side."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def to_bgr8(image: np.ndarray, *, what: str = "image") -> np.ndarray:
    """Any 2-D gray, ``[H, W, 1|3|4]`` image of uint8/uint16 -> ``uint8[H, W, 3]`` BGR. Float
    images are refused (:func:`dtype_error`)."""
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


def dtype_error(what: str, dtype: object) -> ImageError:
    """The one error for a frame of a dtype maskrt does not take (NumPy arrays here, torch
    tensors in :mod:`maskrt.devices`). Floats are refused rather than guessed at: a float frame
    may be in [0, 1] or [0, 255], and clipping the wrong guess gives confident nonsense."""
    name = str(dtype).removeprefix("torch.")
    hint = " (float frames are refused: convert to uint8 in 0..255 first)" if "float" in name else ""
    return ImageError(f"{what}: expected dtype uint8 (BGR [H, W, 3]; or uint16, gray [H, W] or "
                      f"BGRA [H, W, 4]), got {name}{hint}")


def _to_uint8(image: np.ndarray, what: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    raise dtype_error(what, image.dtype)


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


# ---- what the header of an encoded image says, without decoding it

def truncation_reason(data: bytes) -> str | None:
    """Why an encoded JPEG/PNG looks cut short (no end marker), or None. Other formats: None.

    OpenCV decodes a truncated JPEG without complaint (the missing rows come out gray), so the
    end marker is checked explicitly; trailing padding after it is allowed.
    """
    if data[:3] == b"\xff\xd8\xff":
        if data.rfind(b"\xff\xd9", max(0, len(data) - 1024)) < 0:
            return "truncated JPEG (no end-of-image marker)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if data.rfind(b"IEND", max(0, len(data) - 1024)) < 0:
            return "truncated PNG (no IEND chunk)"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding, or None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return width, height
        i += 2 + length
    return None
