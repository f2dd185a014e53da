"""Live sources: cameras and network streams, read through OpenCV with reconnection and back-off."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Iterator
from urllib.parse import unquote_plus

from maskrt.stream.sources.base import Frame, Source, display_path
from maskrt.stream.sources.reconnect import ReconnectPolicy

log = logging.getLogger("maskrt.sources")


class _Outage:
    """The reconnection state of one reader: consecutive failures, since when, the next delay."""

    def __init__(self, first_delay: float) -> None:
        self.first_delay = first_delay
        self.delay = first_delay
        self.failed_attempts = 0
        self.since: float | None = None  # time.monotonic() of the outage's first failure
        self.index = 0  # the next frame index of the source

    def recovered(self) -> None:
        self.delay = self.first_delay
        self.failed_attempts = 0
        self.since = None


class CaptureSource(Source):
    """A live OpenCV capture (camera or network stream) with reconnection.

    reconnect: a :class:`ReconnectPolicy` (or its text: ``"forever"``, ``"2"``, ``"for:30"``):
    when a failing source gives up; default forever, the right thing for cameras that reboot.
    retries: the older spelling of ``reconnect=N``. backoff: (first, cap) delay in seconds
    between attempts, doubled after each failed one and reset once frames flow again.
    timeout_s: open and read timeout of the FFmpeg backend (a stream with no frame for that long
    is considered lost).

    Each outage (a failed first connection, or a lost stream) yields one ``failed`` frame with the
    reason; the attempts that follow are logged and counted in ``connect_failures``, not
    recorded, so a camera that is down for an hour does not flood the records. Time spent
    connecting and backing off is counted in :meth:`waiting_s`.
    """

    live = True
    finite = False

    def __init__(self, id: str | None = None, *, retries: int | None = None,
                 reconnect: "ReconnectPolicy | str | int | None" = None,
                 backoff: tuple[float, float] = (0.5, 8.0), timeout_s: float = 5.0,
                 **kw: Any) -> None:
        if retries is not None and retries < 0:
            raise ValueError(f"retries: expected None or >= 0, got {retries}")
        if not (0 < backoff[0] <= backoff[1]):
            raise ValueError(f"backoff: expected (first, cap) with 0 < first <= cap, got {backoff}")
        self.reconnect = ReconnectPolicy.parse(reconnect if reconnect is not None else retries)
        self.backoff = backoff
        self.timeout_s = timeout_s
        super().__init__(id, **kw)

    @property
    def retries(self) -> int | None:
        return self.reconnect.attempts

    def open_capture(self) -> Any:
        raise NotImplementedError

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        outage = _Outage(self.backoff[0])
        connected_before = False
        try:
            while not stop.is_set():
                self.state = "connecting" if not connected_before else "reconnecting"
                self._begin_wait()
                cap = self._try_open()
                if cap is None:
                    if (yield from self._failure(outage, stop, back_off=True)):
                        return
                    continue
                if connected_before:
                    self.reconnects += 1
                    log.warning("%s: reconnected after %d failed attempt(s)", self.id,
                                outage.failed_attempts)
                else:
                    log.info("%s: connected", self.id)
                connected_before = True
                self.state = "streaming"
                got_frames = yield from self._stream(cap, stop, outage)
                if stop.is_set():
                    return
                self.last_error = (f"{self.id}: stream lost after {got_frames} frame(s) of this "
                                   f"connection (no frame within {self.timeout_s:g} s or end of "
                                   "stream)")
                # Opened but no frame: back off too, or a server that accepts and sends nothing
                # would be hammered.
                if (yield from self._failure(outage, stop, back_off=got_frames == 0)):
                    return
        finally:
            self._end_wait()

    def _stream(self, cap: Any, stop: threading.Event, outage: _Outage) -> Iterator[Frame]:
        """Frames of one connection until it is lost or ``stop``; returns how many came."""
        got_frames = 0
        try:
            while not stop.is_set():
                ok, image = cap.read()
                now = time.time()
                if not ok or image is None:
                    break
                if got_frames == 0:
                    outage.recovered()
                    self._end_wait()
                got_frames += 1
                yield Frame(outage.index, now, image=image)
                outage.index += 1
        finally:
            cap.release()
        return got_frames

    def _failure(self, outage: _Outage, stop: threading.Event, back_off: bool) -> Iterator[Frame]:
        """Account for a failed open or a lost stream (``last_error`` says which); yields the
        outage's one failed frame; returns True when the reader should end (gave up, stopped)."""
        self._begin_wait()
        outage.failed_attempts += 1
        self.connect_failures += 1
        first = outage.since is None
        if first:
            outage.since = time.monotonic()
        gives_up = self.reconnect.gives_up(outage.failed_attempts, time.monotonic() - outage.since)
        log.warning("%s: connection attempt %d failed (%s); %s", self.id, outage.failed_attempts,
                    self.last_error, "giving up" if gives_up
                    else f"retrying in {outage.delay:.1f} s" if back_off else "retrying")
        if first:
            yield Frame(outage.index, time.time(), error=self.last_error)
            outage.index += 1
        if gives_up:
            self.state = "failed"
            return True
        if not back_off:
            return False
        delay = outage.delay
        if self.reconnect.seconds is not None:  # do not sleep past the end of the allowed outage
            delay = max(0.0, min(delay, outage.since + self.reconnect.seconds - time.monotonic()))
        outage.delay = min(outage.delay * 2.0, self.backoff[1])
        return stop.wait(delay)

    def scrub(self, text: str) -> str:
        """``text`` (a backend's error message) fit to show: nothing secret by default."""
        return text

    def missing_reason(self) -> str | None:
        """Why the source cannot exist at all (checked before each attempt), or None."""
        return None

    def open_failure(self) -> str:
        """What a capture that does not open means here, in words (OpenCV's and FFmpeg's own
        log lines saying it are silenced by the command line)."""
        return (f"unreachable, refused, no answer within {self.timeout_s:g} s, or not a "
                "stream")

    def _try_open(self) -> Any:
        missing = self.missing_reason()
        if missing is not None:
            self.last_error = missing
            return None
        try:
            cap = self.open_capture()
        except Exception as err:  # cv2.error or an OSError from a backend
            self.last_error = f"{self.id}: cannot open ({self.scrub(str(err))})"
            return None
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            self.last_error = f"{self.id}: cannot open ({self.open_failure()})"
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

    def scrub(self, text: str) -> str:
        # An OpenCV/FFmpeg error may quote the URL it was given, credentials included.
        return text.replace(self.url, redact_url(self.url))

    def missing_reason(self) -> str | None:
        # OpenCV crashes the process (a segfault) on a URL that is not UTF-8 (odd bytes given
        # on a Linux command line): such a URL names nothing it could open.
        if display_path(self.url) != self.url:
            return f"{self.id}: the URL is not valid UTF-8"
        return None

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

    def missing_reason(self) -> str | None:
        # On Linux a camera is a /dev/videoN node: without one, say so plainly instead of
        # OpenCV's "cannot open" (and skip its V4L2 probing and warnings). Elsewhere OpenCV
        # alone can tell, so a failed open there is reported the same way by open_capture's
        # caller.
        if sys.platform.startswith("linux") and not os.path.exists(f"/dev/video{self.index}"):
            return f"camera {self.index}: not found"
        return None

    def open_capture(self) -> Any:
        import cv2

        cap = cv2.VideoCapture(self.index)
        if not cap.isOpened() and not sys.platform.startswith("linux"):
            cap.release()
            raise OSError(f"camera {self.index}: not found")
        return cap

    def open_failure(self) -> str:
        return "in use by another program, no permission, or not a capture device"




# Query parameters whose values are credentials (cameras and NVRs put passwords and tokens in
# the query, e.g. ``video.cgi?user=admin&pwd=...``); compared case-insensitively.
SECRET_PARAMETERS = frozenset({
    "pwd", "passwd", "password", "pass", "token", "access_token", "key", "apikey", "api_key",
    "secret", "auth", "signature", "sig", "credential", "credentials", "session"})


def redact_url(url: str) -> str:
    """``url`` as shown in ids, logs, records and metrics: the user-info's password and the
    values of secret query parameters (:data:`SECRET_PARAMETERS`) become ``***``:
    ``http://u:pw@h/v?user=u&pwd=x`` -> ``http://u:***@h/v?user=u&pwd=***``. The rest is kept
    byte for byte; text without ``://`` (a file path) comes back unchanged.
    """
    # Split by hand rather than with urlsplit: it raises on malformed hosts and ports (an error
    # while naming a bad source), and its hostname drops IPv6 brackets and lowercases.
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.partition(':')[0]}:***@{host}"
    before_fragment, hash_, fragment = tail.partition("#")
    path, question, query = before_fragment.partition("?")
    if question:
        query = "&".join(_redact_parameter(p) for p in query.split("&"))
    return f"{scheme}://{authority}{path}{question}{query}{hash_}{fragment}"


def _redact_parameter(parameter: str) -> str:
    name, equals, _ = parameter.partition("=")
    if equals and unquote_plus(name).strip().lower() in SECRET_PARAMETERS:
        return f"{name}=***"
    return parameter
