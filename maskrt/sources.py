"""Frame sources for the streaming pipeline: files, folders, videos, cameras, network streams and
drop folders.

A source is an object whose :meth:`Source.frames` generator runs in the source's own reader
thread (the pipeline starts one per source) and yields :class:`Frame` objects. Every yielded
frame becomes exactly one record (``scored``, ``dropped`` or ``failed``), so a source yields a
frame with ``error`` set, rather than nothing, when a read produced no usable frame: a file that
cannot be read, a camera or URL that cannot be opened, a stream that was lost, a video that ends
before its header said it would. Those failure frames take a frame index like any other.

Source specifications (:func:`open_source`):

==============================  ==================================================================
``"face.jpg"``                  an image file (any file that is not a video is decoded as an image)
``"crops/"``                    a folder, recursive, in a stable order (sorted by path); every
                                non-hidden regular file is one frame (non-images become ``failed``)
``"clip.avi"``                  a video file (extensions in :data:`VIDEO_EXTENSIONS`)
``0``, ``"0"``                  a camera index (OpenCV's default camera backend)
``"rtsp://..."``, ``"http://"``  a network stream (RTSP, HTTP MJPEG, ...) read through OpenCV's FFmpeg
                                backend; also ``rtsps``, ``rtmp``, ``https``, ``udp``, ``tcp``, ``srt``
``"drop:DIR"``                  a drop folder watched for new image files (cameras that upload face
                                crops over FTP): each new complete file is scored once
==============================  ==================================================================

Files, folders, videos and drop folders are *finite or lossless* sources: when the pipeline is
busy their reader blocks, nothing is dropped. Cameras and network streams are *live*: their queue
keeps the newest frames, the oldest is dropped (and recorded as ``dropped``) when it is full, and
a failing live source reconnects with exponential back-off (``backoff`` seconds, doubled per
failed attempt, capped), each attempt logged on the ``maskrt.sources`` logger.

Source timestamps (``Frame.timestamp``, seconds): video files - the position in the video
(``CAP_PROP_POS_MSEC`` / 1000); image files, folders and drop folders - the file's mtime (Unix
time); cameras and streams - the wall clock (Unix time) when the frame was read.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Union
from urllib.parse import urlsplit, urlunsplit

import numpy as np

log = logging.getLogger("maskrt.sources")

#: File name endings treated as videos by :func:`open_source`.
VIDEO_EXTENSIONS = frozenset({".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg",
                              ".ts", ".mts", ".wmv", ".flv", ".3gp", ".mjpeg", ".mjpg", ".ogv"})
#: URL schemes read as network streams.
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp",
                            "srt", "rtp"})
#: Prefix of a drop-folder spec: ``drop:/srv/ftp/camera7``.
DROP_PREFIX = "drop:"
#: Names a drop folder ignores: uploads in progress under a temporary name, and hidden files.
PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".filepart", ".crdownload", ".download", "~")

SourceSpec = Union[str, int, os.PathLike, "Source"]


@dataclass
class Frame:
    """One frame read by a source.

    Exactly one of ``image`` (decoded BGR uint8, for videos and cameras), ``data`` (encoded bytes,
    decoded by the pipeline's preprocessing stage, off the reader and inference threads) or
    ``error`` (the read failed; becomes a ``failed`` record with this reason) is set.
    """

    index: int
    timestamp: float | None
    image: np.ndarray | None = field(default=None, repr=False)
    data: bytes | None = field(default=None, repr=False)
    uri: str | None = None
    error: str | None = None
    #: time.perf_counter() when the frame was read (set by the pipeline's reader thread)
    t_read: float = 0.0


class Source:
    """Base class of all sources; subclasses implement :meth:`frames`.

    id: unique name in a pipeline (default: derived from the spec).
    queue_size: capacity of the source's queue in the pipeline (default: the pipeline's).
    """

    kind = "source"
    #: live sources drop their oldest queued frame when the queue is full; others block
    live = False

    def __init__(self, id: str | None = None, *, queue_size: int | None = None) -> None:
        if queue_size is not None and queue_size < 1:
            raise ValueError(f"queue_size: expected >= 1, got {queue_size}")
        self.id = id or self.default_id()
        self.queue_size = queue_size
        #: "idle", "connecting", "streaming", "reading", "reconnecting", "finished", "failed"
        self.state = "idle"
        #: successful reconnections after a loss (live sources)
        self.reconnects = 0
        #: failed open / read attempts (live sources log each one)
        self.connect_failures = 0
        self.last_error: str | None = None
        #: nominal frame rate, when the source knows one (videos, streams); used by video sinks
        self.fps: float | None = None

    def default_id(self) -> str:
        return self.kind

    def describe(self) -> str:
        return f"{self.kind} {self.id}"

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Yield frames until exhausted or ``stop`` is set. Runs in the source's reader thread."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"


# --------------------------------------------------------------------------- files and folders

def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _read_file(path: Path, index: int) -> Frame:
    try:
        data = path.read_bytes()
    except OSError as err:
        return Frame(index, _mtime(path), uri=str(path),
                     error=f"{path}: cannot read file ({err.strerror or err})")
    return Frame(index, _mtime(path), data=data, uri=str(path))


class PathSource(Source):
    """A source named by one filesystem path; its id defaults to the path."""

    def __init__(self, path: str | os.PathLike[str], id: str | None = None, **kw: Any) -> None:
        self.path = Path(path)
        super().__init__(id, **kw)

    def default_id(self) -> str:
        return str(self.path)


class ImageFileSource(PathSource):
    """One image file: one frame."""

    kind = "image"

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        self.state = "reading"
        yield _read_file(self.path, 0)
        self.state = "finished"


class FolderSource(PathSource):
    """Every non-hidden regular file under ``path``, recursively, sorted by path (directories are
    listed one at a time, so a folder of millions of files never sits in memory as a list).

    extensions: only files with these endings (e.g. ``{".jpg", ".png"}``); default: all files, so
    that a stray non-image is reported as a ``failed`` record instead of silently skipped.
    """

    kind = "folder"

    def __init__(self, path: str | os.PathLike[str], id: str | None = None, *,
                 extensions: set[str] | None = None, **kw: Any) -> None:
        self.extensions = {e.lower() for e in extensions} if extensions else None
        super().__init__(path, id, **kw)

    def files(self) -> Iterator[Path]:
        """The folder's files in the order they are read."""
        yield from self._walk(self.path)

    def _walk(self, directory: Path) -> Iterator[Path]:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            log.warning("%s: cannot list %s: %s", self.id, directory, err)
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield from self._walk(Path(entry.path))
                elif entry.is_file():
                    if self.extensions is None or Path(entry.name).suffix.lower() in self.extensions:
                        yield Path(entry.path)
            except OSError:
                continue

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        if not self.path.is_dir():
            self.state = "failed"
            self.last_error = f"{self.path}: not a folder"
            yield Frame(0, None, uri=str(self.path), error=self.last_error)
            return
        self.state = "reading"
        for index, path in enumerate(self.files()):
            if stop.is_set():
                return
            yield _read_file(path, index)
        self.state = "finished"


class DropFolderSource(PathSource):
    """A folder that cameras upload face crops into (e.g. over FTP), watched by polling.

    Each new complete file is yielded once. A file is complete when it has not been modified for
    ``settle_s`` seconds and is not named like an upload in progress (:data:`PARTIAL_SUFFIXES`,
    hidden files). A JPEG or PNG that still looks cut short (no end marker) is given up to
    ``incomplete_grace_s`` seconds after its last modification to be completed before it is
    passed on (and then fails as truncated). A file replaced under the same name (new inode, size
    or mtime) is a new file. ``existing``: also score the files present at start.
    The source runs until it is removed or the pipeline stops; it never drops (lossless).
    It remembers every file it passed on (path -> inode, size, mtime) and lists the folder every
    ``poll_s``: move or delete scored files when millions pass through one folder.
    """

    kind = "drop"

    def __init__(self, path: str | os.PathLike[str], id: str | None = None, *,
                 settle_s: float = 1.0, poll_s: float = 0.25, incomplete_grace_s: float = 30.0,
                 existing: bool = True, recursive: bool = False, **kw: Any) -> None:
        self.settle_s = settle_s
        self.poll_s = poll_s
        self.incomplete_grace_s = incomplete_grace_s
        self.existing = existing
        self.recursive = recursive
        super().__init__(path, id, **kw)

    def default_id(self) -> str:
        return f"{DROP_PREFIX}{self.path}"

    def _scan(self, directory: Path) -> Iterator[tuple[Path, os.stat_result]]:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name.lower().endswith(PARTIAL_SUFFIXES):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if self.recursive:
                        yield from self._scan(Path(entry.path))
                elif entry.is_file():
                    yield Path(entry.path), entry.stat()
            except OSError:
                continue

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        if not self.path.is_dir():
            self.state = "failed"
            self.last_error = f"{self.path}: drop folder does not exist"
            yield Frame(0, None, uri=str(self.path), error=self.last_error)
            return
        seen: dict[Path, tuple[int, int, int]] = {}
        if not self.existing:
            seen = {p: (st.st_ino, st.st_size, st.st_mtime_ns) for p, st in self._scan(self.path)}
        index = 0
        self.state = "watching"
        while not stop.is_set():
            for path, st in self._scan(self.path):
                key = (st.st_ino, st.st_size, st.st_mtime_ns)
                if seen.get(path) == key:
                    continue
                age = time.time() - st.st_mtime
                if age < self.settle_s:
                    continue
                frame = _read_file(path, index)
                if (frame.data is not None and age < self.incomplete_grace_s
                        and truncation_reason(frame.data) is not None):
                    continue  # an upload still in progress: look again at the next poll
                seen[path] = key
                index += 1
                yield frame
                if stop.is_set():
                    return
            stop.wait(self.poll_s)


# --------------------------------------------------------------------------- videos

class VideoFileSource(PathSource):
    """A video file decoded with OpenCV's FFmpeg backend, every frame, as fast as it is consumed.

    A video that cannot be opened yields one failed frame; one that ends before the frame count
    in its header (a truncated or corrupt file) yields a failed frame saying where it ended.
    """

    kind = "video"

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        import cv2

        self.state = "reading"
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        try:
            if not cap.isOpened():
                self.state = "failed"
                reason = "file not found" if not self.path.exists() else "not a readable video"
                self.last_error = f"{self.path}: cannot open as a video ({reason})"
                yield Frame(0, None, uri=str(self.path), error=self.last_error)
                return
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.fps = fps if fps and fps > 0 else None
            expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            index = 0
            while not stop.is_set():
                ok, image = cap.read()
                if not ok or image is None:
                    break
                msec = cap.get(cv2.CAP_PROP_POS_MSEC)
                if (not msec and index > 0) and self.fps:
                    msec = 1000.0 * index / self.fps
                yield Frame(index, msec / 1000.0, image=image)
                index += 1
            if stop.is_set():
                return
            # Container frame counts can be estimates (mkv, webm): tolerate 1% or one frame.
            if index == 0 or (expected > 0 and expected - index > max(1, expected // 100)):
                self.state = "failed"
                self.last_error = (f"{self.path}: video ended after {index} of {expected} frames "
                                   "(truncated or corrupt)" if index else
                                   f"{self.path}: no decodable frame in the video")
                yield Frame(index, index / self.fps if self.fps else None, uri=str(self.path),
                            error=self.last_error)
                return
            self.state = "finished"
        finally:
            cap.release()


# --------------------------------------------------------------------------- live sources

class CaptureSource(Source):
    """A live OpenCV capture (camera or network stream) with reconnection.

    retries: consecutive failed connection attempts before the source gives up (None: never
    gives up, the right thing for cameras that reboot). backoff: (first, cap) delay in seconds
    between attempts, doubled after each failed one and reset once frames flow again.
    timeout_s: open and read timeout of the FFmpeg backend (a stream with no frame for that long
    is considered lost).

    Each outage (a failed first connection, or a lost stream) yields one ``failed`` frame with the
    reason; the attempts that follow are logged and counted in ``connect_failures``, not
    recorded, so a camera that is down for an hour does not flood the records.
    """

    live = True

    def __init__(self, id: str | None = None, *, retries: int | None = None,
                 backoff: tuple[float, float] = (0.5, 8.0), timeout_s: float = 5.0,
                 **kw: Any) -> None:
        if retries is not None and retries < 0:
            raise ValueError(f"retries: expected None or >= 0, got {retries}")
        if not (0 < backoff[0] <= backoff[1]):
            raise ValueError(f"backoff: expected (first, cap) with 0 < first <= cap, got {backoff}")
        self.retries = retries
        self.backoff = backoff
        self.timeout_s = timeout_s
        super().__init__(id, **kw)

    def open_capture(self) -> Any:
        raise NotImplementedError

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        index = 0
        failed_attempts = 0
        delay = self.backoff[0]
        connected_before = False
        in_outage = False
        while not stop.is_set():
            self.state = "connecting" if not connected_before else "reconnecting"
            cap = self._try_open()
            if cap is None:
                failed_attempts += 1
                self.connect_failures += 1
                gives_up = self.retries is not None and failed_attempts > self.retries
                log.warning("%s: connection attempt %d failed (%s); %s", self.id, failed_attempts,
                            self.last_error, "giving up" if gives_up else f"retrying in {delay:.1f} s")
                if not in_outage:
                    in_outage = True
                    yield Frame(index, time.time(), error=self.last_error)
                    index += 1
                if gives_up:
                    self.state = "failed"
                    return
                if stop.wait(delay):
                    return
                delay = min(delay * 2.0, self.backoff[1])
                continue
            if connected_before:
                self.reconnects += 1
                log.warning("%s: reconnected after %d failed attempt(s)", self.id, failed_attempts)
            else:
                log.info("%s: connected", self.id)
            connected_before = True
            failed_attempts = 0
            self.state = "streaming"
            got_frames = 0
            try:
                while not stop.is_set():
                    ok, image = cap.read()
                    now = time.time()
                    if not ok or image is None:
                        break
                    if got_frames == 0:
                        in_outage = False
                        delay = self.backoff[0]
                    got_frames += 1
                    yield Frame(index, now, image=image)
                    index += 1
            finally:
                cap.release()
            if stop.is_set():
                return
            self.last_error = (f"{self.id}: stream lost after {got_frames} frame(s) of this "
                               f"connection (no frame within {self.timeout_s:g} s or end of stream)")
            self.connect_failures += 1
            failed_attempts += 1
            log.warning("%s; reconnecting", self.last_error)
            if not in_outage:
                in_outage = True
                yield Frame(index, time.time(), error=self.last_error)
                index += 1
            if self.retries is not None and failed_attempts > self.retries:
                self.state = "failed"
                return
            if got_frames == 0 and stop.wait(delay):  # opened but no frame: back off too
                return
            if got_frames == 0:
                delay = min(delay * 2.0, self.backoff[1])

    def _try_open(self) -> Any:
        try:
            cap = self.open_capture()
        except Exception as err:  # cv2.error or an OSError from a backend
            self.last_error = f"{self.id}: cannot open ({err})"
            return None
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            self.last_error = f"{self.id}: cannot open (unreachable, refused or not a stream)"
            return None
        fps = cap.get(5)  # cv2.CAP_PROP_FPS
        if fps and 0 < fps < 1000:
            self.fps = fps
        return cap


class StreamSource(CaptureSource):
    """A network stream (RTSP, HTTP MJPEG, RTMP, ...) read with OpenCV's FFmpeg backend.

    Credentials in the URL are kept for connecting but masked in the id, logs and records.
    """

    kind = "stream"

    def __init__(self, url: str, id: str | None = None, **kw: Any) -> None:
        self.url = url
        super().__init__(id, **kw)

    def default_id(self) -> str:
        return redact_url(self.url)

    def open_capture(self) -> Any:
        import cv2

        ms = int(self.timeout_s * 1000)
        return cv2.VideoCapture(self.url, cv2.CAP_FFMPEG,
                                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])


class CameraSource(CaptureSource):
    """A local camera by index (OpenCV's default capture backend, V4L2 on Linux)."""

    kind = "camera"

    def __init__(self, index: int, id: str | None = None, **kw: Any) -> None:
        if index < 0:
            raise ValueError(f"camera index: expected >= 0, got {index}")
        self.index = index
        super().__init__(id, **kw)

    def default_id(self) -> str:
        return f"camera:{self.index}"

    def open_capture(self) -> Any:
        import cv2

        return cv2.VideoCapture(self.index)


# --------------------------------------------------------------------------- parsing specs

def redact_url(url: str) -> str:
    """``rtsp://user:secret@host/x`` -> ``rtsp://user:***@host/x``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")

SPEC_HELP = ("an existing image file, folder or video file, a camera index (0, 1, ...), a stream "
             "URL (rtsp://, http://, https://, rtmp://, ...), or drop:DIR for a drop folder")


def open_source(spec: SourceSpec, **options: Any) -> Source:
    """A :class:`Source` for ``spec`` (see the module docstring); a Source passes through.

    options go to the source's constructor (e.g. ``retries``, ``timeout_s``, ``queue_size``;
    options a kind of source does not take are ignored for it). Raises ValueError saying what
    was expected when the spec names nothing usable.
    """
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, bool) or not isinstance(spec, (str, int, os.PathLike)):
        raise ValueError(f"source: expected {SPEC_HELP}; got {type(spec).__name__} {spec!r}")
    if isinstance(spec, int):
        return _make(CameraSource, spec, options)
    text = os.fspath(spec)
    if not text.strip():
        raise ValueError(f"source: expected {SPEC_HELP}; got an empty string")
    if text.isdigit():
        return _make(CameraSource, int(text), options)
    if text.startswith(DROP_PREFIX):
        folder = text[len(DROP_PREFIX):]
        if not folder:
            raise ValueError(f"source {text!r}: expected drop:DIR naming a folder to watch")
        if not Path(folder).is_dir():
            raise ValueError(f"source {text!r}: expected drop:DIR with an existing folder; "
                             f"{folder!r} is not a folder")
        return _make(DropFolderSource, folder, options)
    match = _SCHEME.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme == "file":
            return open_source(urlsplit(text).path, **options)
        if scheme not in STREAM_SCHEMES:
            raise ValueError(f"source {redact_url(text)!r}: expected a stream URL with one of the "
                             f"schemes {sorted(STREAM_SCHEMES)}, got {scheme!r}")
        return _make(StreamSource, text, options)
    path = Path(text)
    if path.is_dir():
        return _make(FolderSource, path, options)
    if path.is_file():
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return _make(VideoFileSource, path, options)
        return _make(ImageFileSource, path, options)
    raise ValueError(f"source {text!r}: expected {SPEC_HELP}; {text!r} does not exist")


def _make(cls: type[Source], arg: Any, options: dict[str, Any]) -> Source:
    import inspect

    accepted: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    return cls(arg, **{k: v for k, v in options.items() if k in accepted})


# --------------------------------------------------------------------------- encoded images

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
