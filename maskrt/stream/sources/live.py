"""Live sources: cameras and network streams, read through OpenCV with reconnection and back-off."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

from maskrt.stream.sources.base import Frame, Source

log = logging.getLogger("maskrt.sources")


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




def redact_url(url: str) -> str:
    """``rtsp://user:secret@host/x`` -> ``rtsp://user:***@host/x``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


