""":class:`WebSink`: the live view of a running pipeline, in the browser.

    with maskrt.Pipeline(engine, ["clip.avi", "http://cam/video.mjpg"],
                         sinks=[WebSink("127.0.0.1:8080")]) as pipeline:
        for record in pipeline:
            ...

The sink's :meth:`write` (on the consumer thread) keeps references to the records' frames and
overlays and cuts small face thumbnails; drawing, JPEG encoding and HTTP happen in the
server's threads, only while someone watches, at most ``fps`` pictures a second per source
(:mod:`maskrt.web.pictures`). It asks the pipeline for decoded frames (``needs_frames``), which
costs memory (references), not time.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import numpy as np

from maskrt.stream.records import Record
from maskrt.stream.sinks import Sink
from maskrt.web.live import LiveData
from maskrt.web.server import WebServer

log = logging.getLogger("maskrt.web")

DEFAULT_HOST = "127.0.0.1"
_ADDRESS = re.compile(r"^(?:(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):)?(?P<port>\d{1,5})$")


def parse_address(text: str | int, default_host: str = DEFAULT_HOST) -> tuple[str, int]:
    """``[HOST:]PORT`` (``8080``, ``0.0.0.0:8080``, ``[::1]:8080``) -> (host, port); the host
    defaults to 127.0.0.1 (this machine only). ValueError: not of that form."""
    match = _ADDRESS.match(str(text).strip())
    port = int(match.group("port")) if match else -1
    if not match or not 0 <= port <= 65535:
        raise ValueError(f"expected [HOST:]PORT with a port of 0..65535, got {text!r}")
    host = (match.group("host") or "").strip("[]") or default_host
    return host, port


class WebSink(Sink):
    """Serves the live view at ``address`` (``[HOST:]PORT``, or (host, port); port 0: a free
    one, see :attr:`url`) from when it is made - a port in use fails at once (OSError) - until
    the stream ends (and ``linger_s`` seconds more: the page then shows the final summary).

    fps: pictures a second per source at most (encoded only while someone watches).
    settings: shown on the page (``maskrt score`` passes its flags; the summary's settings and
    backend are added when the pipeline has a summary sink).
    """

    needs_frames = True

    def __init__(self, address: str | int | tuple[str, int] = f"{DEFAULT_HOST}:0", *,
                 fps: float = 5.0, linger_s: float = 0.0,
                 settings: dict[str, Any] | None = None, max_streams: int = 128,
                 tick_s: float = 1.0) -> None:
        host, port = address if isinstance(address, tuple) else parse_address(address)
        self.data = LiveData(fps, settings=settings)
        self.linger_s = float(linger_s)
        self.server = WebServer(self.data, host, port, tick_s=tick_s, max_streams=max_streams)
        self._pipeline: Any = None
        self._errors = 0
        self._closed = False

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def open(self, pipeline: Any) -> None:
        self._pipeline = pipeline
        self.data.attach(pipeline)

    def write(self, record: Record, frame: np.ndarray | None = None) -> None:
        try:
            self.data.note(record, frame)
        except Exception:  # the view must never stop scoring: say it once, go on
            self._errors += 1
            if self._errors == 1:
                log.exception("live view: a record could not be shown (further errors counted)")

    def close(self) -> dict[str, Any]:
        """The stream ended: the page shows the final figures; the server stops now (after one
        tick, so open pages hear it ended) or ``linger_s`` seconds later."""
        if self._closed:
            return self._part()
        self._closed = True
        summary = None
        if self._pipeline is not None:
            summary = self._pipeline.summary(**self.data._extra())
        self.data.close(summary)
        if self.linger_s > 0:
            timer = threading.Timer(self.linger_s, self.server.close)
            timer.daemon = True
            timer.start()
        else:
            self._let_pages_hear_the_end()
            self.server.close()
        return self._part()

    def _let_pages_hear_the_end(self) -> None:
        deadline = time.monotonic() + self.server.tick_s + 0.5
        while self.server.viewers()["pages"] and time.monotonic() < deadline:
            time.sleep(0.05)

    def _part(self) -> dict[str, Any]:
        return {"web": self.url, "web_faces_without_mask": self.data.faces.total}

    def stop(self) -> None:
        """Stop serving now (also during ``linger_s``)."""
        self.server.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the server stopped (after ``linger_s``); False: ``timeout`` passed."""
        return self.server.wait_closed(timeout)
