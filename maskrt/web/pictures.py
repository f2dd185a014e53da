"""The pictures of the live view: each source's latest annotated frame, kept as references to
arrays the pipeline already made, drawn and JPEG-encoded only when a viewer asks, at most
``fps`` times a second per source, and shared by every viewer.

The sink's side (:meth:`PictureBoard.note`, on the consumer thread) only keeps references: no
copy, no drawing, no encoding. So with no browser watching the live view costs nothing, and
with many it costs one encoding per source per ``1 / fps`` seconds whatever their number.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskrt.stream.records import SCORED, Record, whole_frame

#: pictures wider than this are scaled down before encoding (bandwidth, encoding time)
MAX_WIDTH = 800
JPEG_QUALITY = 75


@dataclass
class Picture:
    """A frame to show: ``image`` as it is (an overlay already showing every face) or with
    ``records`` drawn on it when encoded (``draw``: "faces", "corner" or None)."""

    seq: int
    frame_index: int
    image: np.ndarray
    records: list[Record] = field(default_factory=list)
    draw: str | None = None


@dataclass
class Encoded:
    seq: int
    jpeg: bytes
    made: float


class _SourcePictures:
    def __init__(self) -> None:
        self.latest: Picture | None = None
        self.seq = 0
        self.pending: list[Record] = []  # records of the frame being gathered (no overlay)
        self.pending_index = -1
        self.done_index = -1  # a frame whose picture is taken (its overlay came first)
        self.encoded: Encoded | None = None
        self.lock = threading.Lock()  # one encoder per source at a time


class PictureBoard:
    """Per source: the latest picture (references), and its JPEG made on demand."""

    def __init__(self, fps: float = 5.0, max_width: int = MAX_WIDTH,
                 quality: int = JPEG_QUALITY) -> None:
        if not fps > 0:
            raise ValueError(f"web fps: expected > 0, got {fps}")
        self.interval = 1.0 / fps
        self.max_width = max_width
        self.quality = quality
        self._sources: dict[str, _SourcePictures] = {}
        self._lock = threading.Lock()
        self.encodings = 0  #: JPEGs made (for tests and the benchmark)

    def _of(self, source_id: str) -> _SourcePictures:
        entry = self._sources.get(source_id)
        if entry is None:
            with self._lock:
                entry = self._sources.setdefault(source_id, _SourcePictures())
        return entry

    def note(self, record: Record, frame: np.ndarray | None) -> None:
        """A record the pipeline gave the sinks: keep its frame's picture when complete."""
        if record.status != SCORED:
            return
        entry = self._of(record.source_id)
        if record.frame_index == entry.done_index:
            return  # a later region of a frame whose overlay already shows every face
        if whole_frame(record):
            image = record.overlay if record.overlay is not None else frame
            if image is not None:
                self._set(entry, record.frame_index, image, [record], "corner")
        elif record.overlay is not None:  # faces + explain: every CAM, box and label drawn
            entry.done_index = record.frame_index
            self._set(entry, record.frame_index, record.overlay, [], None)
        elif frame is not None:
            if record.frame_index != entry.pending_index:
                entry.pending, entry.pending_index = [], record.frame_index
            entry.pending.append(record)
            if len(entry.pending) >= max(1, record.faces or 0):
                self._set(entry, record.frame_index, frame, entry.pending, "faces")
                entry.pending, entry.pending_index = [], -1

    def _set(self, entry: _SourcePictures, index: int, image: np.ndarray,
             records: list[Record], draw: str | None) -> None:
        entry.seq += 1
        entry.latest = Picture(entry.seq, index, image, records, draw)

    def seq(self, source_id: str) -> int:
        entry = self._sources.get(source_id)
        return 0 if entry is None else entry.seq

    def jpeg(self, source_id: str) -> Encoded | None:
        """The latest picture as JPEG: the one made less than ``1 / fps`` s ago (or of the same
        picture), else a new one; None before the source's first picture."""
        entry = self._sources.get(source_id)
        if entry is None or entry.latest is None:
            return None
        with entry.lock:
            cached, picture = entry.encoded, entry.latest
            now = time.monotonic()
            if cached is not None and (cached.seq == picture.seq
                                       or now - cached.made < self.interval):
                return cached
            entry.encoded = Encoded(picture.seq, self.encode(picture), now)
            self.encodings += 1
            return entry.encoded

    def encode(self, picture: Picture) -> bytes:
        return encode_jpeg(render(picture), self.max_width, self.quality)


def render(picture: Picture) -> np.ndarray:
    """The picture with its records drawn (on a copy)."""
    from maskrt.stream.annotate import annotate, annotate_faces

    if picture.draw == "faces":
        return annotate_faces(picture.image, picture.records)
    if picture.draw == "corner" and picture.records:
        return annotate(picture.image, picture.records[0])
    return picture.image


def encode_jpeg(image: np.ndarray, max_width: int = MAX_WIDTH,
                quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of a BGR image (grey and BGRA too), scaled down to ``max_width``."""
    import cv2

    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    height, width = image.shape[:2]
    if width > max_width:
        size = (max_width, max(1, round(height * max_width / width)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("cannot encode the picture as JPEG")
    return data.tobytes()


def cut(image: np.ndarray | None, box: Any, side: int = 128) -> np.ndarray | None:
    """A small copy of ``image`` inside ``box`` ([x0, y0, x1, y1], clipped), decimated by
    striding to about ``side`` pixels (cheap enough for the consumer thread); None: nothing."""
    if image is None or box is None:
        return None
    height, width = image.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0 = max(0, min(x0, width)), max(0, min(y0, height))
    x1, y1 = max(x0, min(x1, width)), max(y0, min(y1, height))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    step = max(1, max(x1 - x0, y1 - y0) // side)
    return np.ascontiguousarray(image[y0:y1:step, x0:x1:step]).copy()
