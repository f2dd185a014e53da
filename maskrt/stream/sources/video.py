"""Video files, decoded with OpenCV's FFmpeg backend (also the videos found in folders)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Generator

from maskrt.stream.sources.base import Frame
from maskrt.stream.sources.files import PathSource


class VideoFileSource(PathSource):
    """A video file decoded with OpenCV's FFmpeg backend, every frame, as fast as it is consumed.

    A video that cannot be opened yields one failed frame; one that ends before the frame count
    in its header (a truncated or corrupt file) yields a failed frame saying where it ended.
    """

    kind = "video"

    def frames(self, stop: threading.Event) -> Generator[Frame, None, None]:
        self.state = "reading"
        _, error = yield from read_video(self.path, stop, 0, source=self)
        if stop.is_set() and error is None:
            return
        self.state = "failed" if error else "finished"
        self.last_error = error or self.last_error


def read_video(path: Path, stop: threading.Event, first_index: int, *, uri: str | None = None,
               source: PathSource | None = None) -> Generator[Frame, None, tuple[int, str | None]]:
    """Yield every frame of the video at ``path`` (indices from ``first_index``, ``uri`` on each),
    then a failed frame if it cannot be opened or ends early; returns (the next index, the
    failure or None). ``source`` is given the video's frame rate."""
    import cv2

    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            error = f"{path}: cannot open as a video ({_open_failure(path)})"
            yield Frame(first_index, None, uri=str(path), error=error)
            return first_index + 1, error
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and fps > 0 else None
        if source is not None:
            source.fps = fps
        expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        count = 0
        while not stop.is_set():
            ok, image = cap.read()
            if not ok or image is None:
                break
            msec = cap.get(cv2.CAP_PROP_POS_MSEC)
            if (not msec and count > 0) and fps:
                msec = 1000.0 * count / fps
            yield Frame(first_index + count, msec / 1000.0, image=image, uri=uri)
            count += 1
        if stop.is_set():
            return first_index + count, None
        # Container frame counts can be estimates (mkv, webm): tolerate 1% or one frame.
        if count == 0 or (expected > 0 and expected - count > max(1, expected // 100)):
            error = (f"{path}: video ended after {count} of {expected} frames (truncated or "
                     "corrupt)" if count else f"{path}: no decodable frame in the video")
            yield Frame(first_index + count, count / fps if fps else None, uri=str(path),
                        error=error)
            return first_index + count + 1, error
        return first_index + count, None
    finally:
        cap.release()


def _open_failure(path: Path) -> str:
    """Why FFmpeg could not open ``path``, in words: what its own log lines (``moov atom not
    found``, ``Invalid data found when processing input``), silenced by the command line, meant."""
    if not path.exists():
        return "file not found"
    try:
        size = path.stat().st_size
    except OSError as err:
        return f"cannot read it ({err.strerror or err})"
    if size == 0:
        return "empty file, 0 bytes"
    return ("FFmpeg found no readable video in it: not a video file, or one cut short or "
            "still being written")
