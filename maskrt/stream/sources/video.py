"""Video files, decoded with OpenCV's FFmpeg backend (also the videos found in folders)."""

from __future__ import annotations

import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Generator, Iterator

from maskrt.stream.sources.base import Frame, display_path
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
    with _openable_name(path) as name:
        return (yield from _read_capture(path, name, stop, first_index, uri, source))


def _read_capture(path: Path, name: str | None, stop: threading.Event, first_index: int,
                  uri: str | None, source: PathSource | None,
                  ) -> Generator[Frame, None, tuple[int, str | None]]:
    """read_video's work, with ``name``: what OpenCV opens the file by (None: nothing can)."""
    import cv2

    shown = display_path(path)
    cap = cv2.VideoCapture(name, cv2.CAP_FFMPEG) if name is not None else None
    try:
        if cap is None or not cap.isOpened():
            error = f"{shown}: cannot open as a video ({_open_failure(path, cap is None)})"
            yield Frame(first_index, None, uri=shown, error=error)
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
            error = (f"{shown}: video ended after {count} of {expected} frames (truncated or "
                     "corrupt)" if count else f"{shown}: no decodable frame in the video")
            yield Frame(first_index + count, count / fps if fps else None, uri=shown, error=error)
            return first_index + count + 1, error
        return first_index + count, None
    finally:
        if cap is not None:
            cap.release()


@contextmanager
def _openable_name(path: Path) -> Iterator[str | None]:
    """A name OpenCV can open ``path`` by, while the context lasts; None when there is none.

    OpenCV takes names as UTF-8 and crashes the whole process (a segfault, not an exception)
    on one that is not: a name with bytes that are not UTF-8 on Linux. Such a file is read
    through a symbolic link with a plain name in a temporary folder, removed afterwards.
    """
    name = str(path)
    if display_path(name) == name:  # valid UTF-8 already
        yield name
        return
    with tempfile.TemporaryDirectory(prefix="maskrt-video-") as folder:
        link = os.path.join(folder, "video" + display_path(path.suffix))
        try:
            os.symlink(os.path.abspath(path), link)
        except OSError:
            link = None
        yield link


def _open_failure(path: Path, unnamed: bool = False) -> str:
    """Why FFmpeg could not open ``path``, in words: what its own log lines (``moov atom not
    found``, ``Invalid data found when processing input``), silenced by the command line, meant.
    unnamed: no name OpenCV can take could be made for it."""
    if not path.exists():
        return "file not found"
    if unnamed:
        return "its name is not valid UTF-8 and no link to it for OpenCV could be made"
    try:
        size = path.stat().st_size
    except OSError as err:
        return f"cannot read it ({err.strerror or err})"
    if size == 0:
        return "empty file, 0 bytes"
    return ("FFmpeg found no readable video in it: not a video file, or one cut short or "
            "still being written")
