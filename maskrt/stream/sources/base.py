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
                                non-hidden regular file is one frame (non-images become ``failed``),
                                but those clearly not media (:data:`NOT_MEDIA_EXTENSIONS`) are
                                skipped and counted in ``skipped_files``
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
failed attempt, capped), each attempt logged on the ``maskrt.stream.sources`` logger.

Names: a file name that is not valid UTF-8 (on Linux, Python gives its odd bytes as lone
surrogates) is shown by :func:`display_path` in ids, uris and messages; the file itself is opened
by its real path.

Source timestamps (``Frame.timestamp``, seconds): video files - the position in the video
(``CAP_PROP_POS_MSEC`` / 1000); image files, folders and drop folders - the file's mtime (Unix
time); cameras and streams - the wall clock (Unix time) when the frame was read.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Union

import numpy as np

VIDEO_EXTENSIONS = frozenset({".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg",
                              ".ts", ".mts", ".wmv", ".flv", ".3gp", ".mjpeg", ".mjpg", ".ogv"})
#: URL schemes read as network streams.
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp",
                            "srt", "rtp"})
#: Files a folder or drop folder skips (counted in ``Source.skipped_files``) rather than reading
#: as a frame: annotations, notes, code, archives, documents, models next to the images (a VOC
#: folder's .xml, a README). An extension in neither this list nor the media ones is still tried,
#: so a stray file is reported as a ``failed`` record.
NOT_MEDIA_EXTENSIONS = frozenset({
    ".xml", ".json", ".jsonl", ".txt", ".md", ".rst", ".csv", ".tsv", ".yaml", ".yml", ".toml",
    ".ini", ".cfg", ".conf", ".log", ".html", ".htm", ".pdf", ".doc", ".docx", ".xls", ".xlsx",
    ".py", ".pyc", ".ipynb", ".sh", ".bat", ".ps1", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".7z",
    ".rar", ".tar", ".db", ".sqlite", ".lock", ".md5", ".sha1", ".sha256", ".npy", ".npz", ".pkl",
    ".onnx", ".pt", ".pth", ".engine", ".exe", ".dll", ".so"})
#: Prefix of a drop-folder spec: ``drop:/srv/ftp/camera7``.
DROP_PREFIX = "drop:"
#: Names a drop folder ignores: uploads in progress under a temporary name, and hidden files.
PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".filepart", ".crdownload", ".download", "~")

SourceSpec = Union[str, int, os.PathLike, "Source"]


def display_path(path: str | bytes | os.PathLike) -> str:
    """``path`` as text that is always valid UTF-8, for ids, uris, messages and logs (JSON, MQTT
    topics and metrics labels need it); never for opening the file, which takes the real path.

    A name's bytes that are not UTF-8 (Linux gives them to Python as lone surrogates, '\\udce9')
    are shown in backslash form: ``caf\\xe9.jpg``. Valid text comes back unchanged.
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name decodes to (made by code, not a disk)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


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

    def __post_init__(self) -> None:
        # uri and error end in records (JSON, MQTT): whatever source made them, valid UTF-8.
        if self.uri is not None:
            self.uri = display_path(self.uri)
        if self.error is not None:
            self.error = display_path(self.error)


class Source:
    """Base class of all sources; subclasses implement :meth:`frames`.

    id: unique name in a pipeline (default: derived from the spec).
    queue_size: capacity of the source's queue in the pipeline (default: the pipeline's).
    """

    kind = "source"
    #: live sources drop their oldest queued frame when the queue is full; others block
    live = False
    #: False for sources that never end by themselves (cameras, streams, drop folders)
    finite = True

    def __init__(self, id: str | None = None, *, queue_size: int | None = None) -> None:
        if queue_size is not None and queue_size < 1:
            raise ValueError(f"queue_size: expected >= 1, got {queue_size}")
        # Ids name sources in records, MQTT topics and metrics labels: always valid UTF-8.
        self.id = display_path(id or self.default_id())
        self.queue_size = queue_size
        #: "idle", "connecting", "streaming", "reading", "reconnecting", "finished", "failed"
        self.state = "idle"
        #: successful reconnections after a loss (live sources)
        self.reconnects = 0
        #: failed open / read attempts (live sources log each one)
        self.connect_failures = 0
        self.last_error: str | None = None
        #: files not read as frames because they are clearly not media (folders, drop folders)
        self.skipped_files = 0
        #: nominal frame rate, when the source knows one (videos, streams); used by video sinks
        self.fps: float | None = None
        #: seconds spent waiting for a connection (live sources), not counting the current wait
        self.waited_s = 0.0
        self._waiting_since: float | None = None

    def waiting_s(self) -> float:
        """Seconds this source has spent (re)connecting or backing off so far: time the run
        waited on it rather than on frames."""
        since = self._waiting_since
        return self.waited_s + (time.monotonic() - since if since is not None else 0.0)

    def _begin_wait(self) -> None:
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()

    def _end_wait(self) -> None:
        since, self._waiting_since = self._waiting_since, None
        if since is not None:
            self.waited_s += time.monotonic() - since

    def default_id(self) -> str:
        return self.kind

    def describe(self) -> str:
        return f"{self.kind} {self.id}"

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Yield frames until exhausted or ``stop`` is set. Runs in the source's reader thread."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"


