"""Host-side image handling: the one decoder, channel layout, resizing to the network input.

Everything downstream (backends, the exported graph) takes ``uint8[N, 224, 224, 3]`` BGR; this
module turns whatever a user or a source hands us into that, or raises :class:`ImageError`
saying what was expected and what came.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import cv2
import numpy as np

from maskrt.labels import INPUT_SIZE


class ImageError(ValueError):
    """An input image cannot be used; the message says what was expected and what came."""


#: Frames whose longer side exceeds this are scaled down to it. JPEGs are decoded straight at
#: 1/2, 1/4 or 1/8 size (the full size never exists in memory); other formats are decoded at
#: full size and then scaled, which is why MAX_PIXELS bounds them.
MAX_SIDE = 4096
#: Images whose header says they have more pixels than this are refused before decoding: a
#: 32-byte WebP can say 16383x16383 and take 1.8 GB and 12 s decoded (``maskrt score
#: --max-pixels``). 100 MP is about twice a 48 MP phone photo.
MAX_PIXELS = 100_000_000
#: Image files larger than this are refused before they are read: a folder of huge files must
#: not fill memory. (Compressed photos are far smaller; uncompressed 8-bit RGB over about 89 MP
#: is refused by this limit before MAX_PIXELS: convert it.)
MAX_FILE_BYTES = 256 * 2**20
#: Every decode runs inside ``decode_guard()``: libpng and libjpeg print warnings to stderr
#: themselves, past OpenCV's log level, so the command line puts a guard here that keeps them
#: off while it silences native logs (:class:`maskrt.cli.common.DecoderStderr`).
decode_guard: Callable[[], ContextManager[Any]] = contextlib.nullcontext


def decode_image(data: bytes | bytearray | memoryview | str | os.PathLike[str], *,
                 what: str | None = None, max_side: int = MAX_SIDE,
                 max_pixels: int | None = MAX_PIXELS, max_bytes: int = MAX_FILE_BYTES) -> np.ndarray:
    """Encoded image bytes, or a file path, -> ``uint8[H, W, 3]`` BGR. The one decoder of maskrt:
    Engine, the streaming pipeline, eval, training data, check, bench and demo all use it.

    Grayscale, BGRA and 16-bit images are converted; the EXIF orientation is applied (at any
    size). Raises :class:`ImageError` (the message names the input and the reason) for an
    unreadable file, 0 bytes, a truncated JPEG/PNG (OpenCV would decode those with gray rows),
    undecodable data, a file over ``max_bytes`` (not read) and an image whose header says it
    has more than ``max_pixels`` pixels (not decoded; None: no limit). An image larger than
    ``max_side`` is scaled so its longer side is ``max_side``; a JPEG is decoded at reduced size
    straight away, so a 10000x10000 JPEG never exists at full size in memory (never reduced
    below 1 pixel a side: thin images work). :func:`decode_with_size` also gives the size the
    image has as stored.
    """
    return decode_with_size(data, what=what, max_side=max_side, max_pixels=max_pixels,
                            max_bytes=max_bytes)[0]


def decode_with_size(data: bytes | bytearray | memoryview | str | os.PathLike[str], *,
                     what: str | None = None, max_side: int = MAX_SIDE,
                     max_pixels: int | None = MAX_PIXELS,
                     max_bytes: int = MAX_FILE_BYTES) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_image`, and the (width, height) of the image as stored, upright: what the
    decoded image's pixels scale back to when it was decoded smaller."""
    if isinstance(data, (str, os.PathLike)):
        what = what or str(data)
        try:
            data = read_image_file(Path(data), what=what, max_bytes=max_bytes)
        except OSError as err:
            raise ImageError(f"{what}: cannot read image file ({err.strerror or err})") from err
    what = what or "image bytes"
    if len(data) == 0:
        raise ImageError(f"{what}: expected an encoded image, got 0 bytes")
    data = bytes(data) if isinstance(data, memoryview) else data
    truncated = truncation_reason(data)
    if truncated is not None:
        raise ImageError(f"{what}: {truncated}")
    size = _checked_size(data, what, max_pixels)
    factor = 1 if size is None else _reduction(size, max_side)
    with decode_guard():
        try:
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _decode_flag(factor))
        except cv2.error as err:
            raise ImageError(f"{what}: {_opencv_reason(err, len(data), size)}") from err
    if image is None:
        raise ImageError(f"{what}: not a decodable image ({len(data)} bytes; not an image, or a "
                         "corrupt one)")
    image = to_bgr8(image, what=what)
    h, w = image.shape[:2]
    original = (w, h)
    if factor > 1:  # the header's sides, swapped when the EXIF orientation turned the image
        W, H = size  # type: ignore[misc]
        original = (W, H) if abs(w * H - h * W) <= abs(w * W - h * H) else (H, W)
    return limit_side(image, max_side), original


def read_image_file(path: Path, *, what: str | None = None, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file; one larger than ``max_bytes`` is refused (ImageError) before
    it is read, and one that grows meanwhile or has no size (a pipe, a device) is read no
    further. OSError: it cannot be read."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(max_bytes + 1) if size <= max_bytes else b""
    if size > max_bytes or len(data) > max_bytes:
        came = f"{size} bytes ({size / 2**20:.0f} MiB)" if size > max_bytes else \
            "more (it grew while read, or has no size)"
        raise ImageError(f"{what or path}: file too large for an image: expected at most "
                         f"{max_bytes} bytes ({max_bytes / 2**20:.0f} MiB), got {came}")
    return data


def _checked_size(data: bytes, what: str, max_pixels: int | None) -> tuple[int, int] | None:
    """(width, height) from the header (None: not a format whose header is known); refuses an
    image over ``max_pixels``, and a known format whose header says no size."""
    header = image_header(data)
    if header is None:
        return None
    kind, size = header
    if size is None:  # refused: its size unknown, a bomb could not be told from an image
        raise ImageError(f"{what}: not a decodable image ({len(data)} bytes; a corrupt {kind} "
                         "header: expected the image size in it)")
    pixels = size[0] * size[1]
    if max_pixels is not None and pixels > max_pixels:
        raise ImageError(f"{what}: image too large: its {kind} header says {size[0]}x{size[1]} "
                         f"= {pixels} pixels, the limit is {max_pixels} (max_pixels; maskrt "
                         "score --max-pixels)")
    return size


def _opencv_reason(err: cv2.error, n: int, size: tuple[int, int] | None) -> str:
    """A plain reason for OpenCV refusing data (its assertion texts mean nothing to users)."""
    if "CV_IO_MAX_IMAGE_PIXELS" in str(err):
        pixels = "" if size is None else f"{size[0]}x{size[1]} is {size[0] * size[1]} pixels, "
        return (f"image too large: {pixels}more than OpenCV decodes (OPENCV_IO_MAX_IMAGE_PIXELS, "
                f"{2**30} by default)")
    if "checkVector" in str(err) or "buf.empty()" in str(err):  # its buffer checks
        if n > 2**31 - 1:  # OpenCV indexes the buffer with an int
            return f"image data too large: {n} bytes, OpenCV takes at most {2**31 - 1}"
        return f"empty or unreadable image data ({n} bytes)"
    return f"not a decodable image ({n} bytes; the decoder gave up: corrupt or unsupported)"


def _decode_flag(factor: int) -> int:
    """How to decode: depth, gray and colour as stored (``to_bgr8`` converts them), or a
    reduced-size colour decode when the header says the image is big. Both apply the EXIF
    orientation (phones store photos sideways and say so there; users expect them upright)."""
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
    """(width, height) from the header of any format OpenCV decodes, without decoding; None when
    the format is not one of them or its header says no size."""
    header = image_header(data)
    return None if header is None else header[1]


def image_header(data: bytes) -> tuple[str, tuple[int, int] | None] | None:
    """(format, (width, height) or None when its header says no size) for every format this
    OpenCV decodes, told by their first bytes as OpenCV tells them; None for anything else."""
    for kind, signature, size in _FORMATS:
        if re.match(signature, data[:64], re.DOTALL):
            try:
                return kind, size(data)
            except (IndexError, ValueError):  # a header cut short or garbled: no size in it
                return kind, None
    return None


def _u(data: bytes, at: int, n: int, order: str = "big") -> int:
    if at < 0 or at + n > len(data):
        raise IndexError("header cut short")
    return int.from_bytes(data[at:at + n], order)  # type: ignore[arg-type]


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:  # stray bytes between segments: libjpeg skips to the next marker
            i = data.find(b"\xff", i)
            if i < 0:
                return None
        elif data[i + 1] == 0xFF:
            i += 1
        elif data[i + 1] in (0xD8, 0x01) or 0xD0 <= data[i + 1] <= 0xD7:
            i += 2
        elif 0xC0 <= data[i + 1] <= 0xCF and data[i + 1] not in (0xC4, 0xC8, 0xCC):
            return _u(data, i + 7, 2), _u(data, i + 5, 2)  # SOFn: height, then width
        else:
            i += 2 + _u(data, i + 2, 2)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    le, chunk = "little", data[12:16]
    if chunk == b"VP8X":  # extended: the canvas, 24 bits a side, minus one
        return 1 + _u(data, 24, 3, le), 1 + _u(data, 27, 3, le)
    if chunk == b"VP8L" and data[20:21] == b"\x2f":  # lossless: 14 bits a side, minus one
        bits = _u(data, 21, 4, le)
        return 1 + (bits & 0x3FFF), 1 + (bits >> 14 & 0x3FFF)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: the key frame's sides
        return _u(data, 26, 2, le) & 0x3FFF, _u(data, 28, 2, le) & 0x3FFF
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first directory: the page OpenCV reads."""
    order = "little" if data[:2] == b"II" else "big"
    big = _u(data, 2, 2, order) == 43  # BigTIFF: 8-byte offsets and counts
    at = _u(data, 8, 8, order) if big else _u(data, 4, 4, order)
    entry, first, value = (20, at + 8, 12) if big else (12, at + 2, 8)
    sides: dict[int, int] = {}
    for k in range(min(_u(data, at, 8 if big else 2, order), 4096)):
        tag, kind = _u(data, first + k * entry, 2, order), _u(data, first + k * entry + 2, 2, order)
        if tag in (256, 257):  # SHORT (3), LONG (4) or LONG8 (16)
            sides[tag] = _u(data, first + k * entry + value, {3: 2, 16: 8}.get(kind, 4), order)
    return (sides[256], sides[257]) if len(sides) == 2 else None


def _avif_size(data: bytes) -> tuple[int, int] | None:
    """The largest 'ispe' (image spatial extents) property in the top-level 'meta' box: the
    primary image, or the grid it is made of (not searched for in the coded data)."""
    at = 0
    while at + 8 <= len(data):
        size = _u(data, at, 4) if _u(data, at, 4) != 1 else _u(data, at + 8, 8)  # 1: 64-bit size
        if data[at + 4:at + 8] == b"meta":
            meta = data[at:at + size if size else len(data)]
            sizes = [(_u(meta, m.start() + 8, 4), _u(meta, m.start() + 12, 4))
                     for m in re.finditer(rb"ispe", meta)]
            return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None
        if size < 8:  # 0 (to the end) or garbage: no meta box after it
            return None
        at += size
    return None


def _jp2_size(data: bytes) -> tuple[int, int] | None:
    if data[:4] == b"\xff\x4f\xff\x51":  # a raw codestream: SIZ, the image area less its offset
        return _u(data, 8, 4) - _u(data, 16, 4), _u(data, 12, 4) - _u(data, 20, 4)
    at = data.find(b"ihdr", 0, 1 << 16)  # JP2: the image header box, height then width
    return None if at < 0 else (_u(data, at + 8, 4), _u(data, at + 4, 4))


def _bmp_size(data: bytes) -> tuple[int, int]:
    if _u(data, 14, 4, "little") == 12:  # OS/2 1.x header: 16-bit sides
        return _u(data, 18, 2, "little"), _u(data, 20, 2, "little")
    _u(data, 22, 4)  # both sides there
    sides = (int.from_bytes(data[at:at + 4], "little", signed=True) for at in (18, 22))
    return tuple(abs(side) for side in sides)  # type: ignore[return-value]  # < 0: top-down


def _hdr_size(data: bytes) -> tuple[int, int] | None:
    """Radiance: header lines, an empty line, then e.g. ``-Y 480 +X 640`` (rows first)."""
    end = data.find(b"\n\n", 0, 1 << 16)
    axes = data[end + 2:end + 64].split(b"\n")[0].split() if end >= 0 else []
    if len(axes) != 4:
        return None
    return (int(axes[3]), int(axes[1])) if axes[0][1:] == b"Y" else (int(axes[1]), int(axes[3]))


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    """PBM/PGM/PPM/PFM: the first two numbers after the magic (comments skipped); PAM: fields."""
    head = data[:4096]
    if head[:2] == b"P7":
        found = [re.search(rb"\n\s*" + name + rb"\s+(\d+)", head) for name in (b"WIDTH", b"HEIGHT")]
        return None if None in found else (int(found[0][1]), int(found[1][1]))  # type: ignore[index]
    pair = re.match(rb"(?:\s|#[^\n]*\n)*(\d+)(?:\s|#[^\n]*\n)+(\d+)", head[2:])
    return None if pair is None else (int(pair[1]), int(pair[2]))


#: (format, its first bytes as OpenCV tells it, where the header says its size)
_FORMATS: tuple[tuple[str, bytes, Callable[[bytes], Any]], ...] = (
    ("JPEG", rb"\xff\xd8\xff", _jpeg_size),
    ("PNG", rb"\x89PNG\r\n\x1a\n", lambda d: (_u(d, 16, 4), _u(d, 20, 4)) if d[12:16] == b"IHDR" else None),
    ("WebP", rb"RIFF....WEBP", _webp_size),
    ("AVIF", rb"....ftyp.{0,56}?avi[fs]", _avif_size),
    ("TIFF", rb"II\*\0|MM\0\*|II\+\0|MM\0\+", _tiff_size),
    ("JPEG 2000", rb"\0\0\0\x0cjP  \r\n\x87\n|\xff\x4f\xff\x51", _jp2_size),
    ("GIF", rb"GIF8[79]a", lambda d: (_u(d, 6, 2, "little"), _u(d, 8, 2, "little"))),
    ("BMP", rb"BM", _bmp_size),
    ("Sun raster", rb"\x59\xa6\x6a\x95", lambda d: (_u(d, 4, 4), _u(d, 8, 4))),
    ("Radiance HDR", rb"#\?(RADIANCE|RGBE)", _hdr_size),
    ("PNM", rb"P[1-7Ff]\s", _pnm_size),
)
