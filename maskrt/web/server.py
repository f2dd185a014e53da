"""The live view's HTTP server: the standard library's ``ThreadingHTTPServer`` serving the
static page shipped in the package, JSON endpoints, MJPEG streams and Server-Sent Events.

Endpoints (``data`` is a :class:`~maskrt.web.live.LiveData` or a
:class:`~maskrt.web.run_view.RunData`)::

    GET /                        the page (static/index.html; app.js, style.css under /static/)
    GET /api/sources             {"sources": [tile, ...]}: per source state, counts, fps, latency
    GET /api/summary             {"mode", "finished", "settings", "summary", "viewers", ...}
    GET /api/faces?after=ID&limit=N&source=S&label=L&from=T&to=T   faces without a mask (live:
                                 people; a run: every face record, filtered)
    GET /api/events              Server-Sent Events: "state" (sources + summary) every tick,
                                 "faces" (new entries), "end" when the run has finished
    GET /frame.jpg?source=S      the source's latest annotated frame (header X-Frame-Seq)
    GET /stream.mjpg?source=S    the same as an MJPEG stream (multipart/x-mixed-replace)
    GET /face/ID.jpg, /face/ID_cam.jpg   an entry's face and its CAM

Streams never wait on the pipeline: each takes the latest JPEG (shared, made at most ``fps``
times a second) and skips what it missed, so a slow browser only slows itself; a viewer that
goes away ends its thread at the next write. At most ``max_streams`` streams at once (503).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from maskrt.web.live import Cached

log = logging.getLogger("maskrt.web")

STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
_FACE = re.compile(r"^/face/(\d{1,12})(_cam)?\.jpg$")
BOUNDARY = "maskrtframe"


def load_static() -> dict[str, tuple[bytes, str]]:
    """The shipped page's files: name -> (bytes, content type)."""
    files = {}
    for entry in resources.files("maskrt.web").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return files


def _server_class(host: str) -> type[ThreadingHTTPServer]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True  # a viewer's stream never keeps the process alive
        block_on_close = False
        app: "WebServer"

    return Server


class WebServer:
    """Serves ``data`` at http://HOST:PORT/ from a daemon thread; started when made, so a port
    in use fails at once (OSError). ``port=0`` picks a free one (see :attr:`port`)."""

    def __init__(self, data: Any, host: str = "127.0.0.1", port: int = 0, *,
                 tick_s: float = 1.0, max_streams: int = 128) -> None:
        self.data = data
        self.tick_s = tick_s
        self.max_streams = max_streams
        self.static = load_static()
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self.streams = 0  #: MJPEG and event streams open now
        self.pages = 0  #: event streams open now (one per page in the live view)
        self.disconnects = 0  #: streams the viewer left mid-way
        self._state = Cached(self._state_json, tick_s / 2)
        self.httpd = _server_class(host)((host, port), Handler)
        self.httpd.app = self
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={
            "poll_interval": 0.2}, daemon=True, name="maskrt-web")
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        """Stop serving (idempotent): streams end at their next tick, the socket closes."""
        if self.closing.is_set():
            return
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self.closing.wait(timeout)

    def viewers(self) -> dict[str, int]:
        with self._lock:
            return {"streams": self.streams, "pages": self.pages,
                    "disconnects": self.disconnects}

    def summary(self) -> dict[str, Any]:
        return {**self.data.summary(), "viewers": self.viewers(), "url": self.url}

    def _state_json(self) -> str:
        return json.dumps({"sources": self.data.sources(), "summary": self.summary()},
                          default=str)

    def state_json(self, fresh: bool = False) -> str:
        """The shared state (made at most twice a tick); ``fresh``: made now (the last one)."""
        return self._state_json() if fresh else self._state.get()

    def stream_opened(self, page: bool) -> bool:
        with self._lock:
            if self.streams >= self.max_streams or self.closing.is_set():
                return False
            self.streams += 1
            self.pages += page
            return True

    def stream_closed(self, page: bool, broken: bool) -> None:
        with self._lock:
            self.streams -= 1
            self.pages -= page
            self.disconnects += broken


def _number(query: dict[str, list[str]], name: str, default: Any = None) -> Any:
    values = query.get(name)
    if not values or values[0] == "":
        return default
    try:
        return float(values[0]) if "." in values[0] or "e" in values[0] else int(values[0])
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {values[0]!r}") from None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "maskrt-web"
    timeout = 20  # a viewer that stops reading for this long is let go
    server: Any

    @property
    def app(self) -> WebServer:
        return self.server.app

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        try:
            self._route(url.path, query)
        except ValueError as err:
            self._send(HTTPStatus.BAD_REQUEST, str(err).encode(), "text/plain; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        app, data = self.app, self.app.data
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/"):])
        if path == "/api/sources":
            return self._json({"sources": data.sources()})
        if path == "/api/summary":
            return self._json(app.summary())
        if path in ("/api/faces", "/api/tracks"):
            return self._json(self._faces(query))
        if path == "/api/events":
            return self._events(query)
        if path in ("/frame.jpg", "/stream.mjpg"):
            source = (query.get("source") or [""])[0]
            if path == "/frame.jpg":
                return self._frame(source)
            return self._mjpeg(source)
        match = _FACE.match(path)
        if match:
            image = data.face_image(int(match.group(1)), "cam" if match.group(2) else "face")
            return self._image(image)
        self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _faces(self, query: dict[str, list[str]]) -> dict[str, Any]:
        label = (query.get("label") or [None])[0]
        return self.app.data.faces_since(
            int(_number(query, "after", 0)), int(_number(query, "limit", 100)),
            source=(query.get("source") or [None])[0], label=label or None,
            t_from=_number(query, "from"), t_to=_number(query, "to"))

    # ------------------------------------------------------------------ responses

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _static(self, name: str) -> None:
        found = self.app.static.get(name)
        if found is None:
            return self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        self._send(HTTPStatus.OK, *found)

    def _json(self, value: Any) -> None:
        body = json.dumps(value, default=str).encode("utf-8")
        self._send(HTTPStatus.OK, body, "application/json")

    def _image(self, jpeg: bytes | None, headers: dict[str, str] | None = None) -> None:
        if jpeg is None:
            return self._send(HTTPStatus.NOT_FOUND, b"no picture\n", "text/plain; charset=utf-8")
        self._send(HTTPStatus.OK, jpeg, "image/jpeg", headers)

    def _frame(self, source: str) -> None:
        got = self.app.data.frame(source)
        if got is None:
            return self._image(None)
        self._image(got[1], {"X-Frame-Seq": str(got[0])})

    def _open_stream(self, content_type: str, page: bool) -> bool:
        if not self.app.stream_opened(page):
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"too many viewers\n",
                       "text/plain; charset=utf-8", {"Retry-After": "5"})
            return False
        self.close_connection = True
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.send_header("X-Accel-Buffering", "no")  # behind nginx: do not buffer the stream
        self.end_headers()
        return True

    def _mjpeg(self, source: str) -> None:
        app = self.app
        if not self._open_stream(f"multipart/x-mixed-replace; boundary={BOUNDARY}", False):
            return
        broken, last = False, -1
        try:
            while not app.closing.is_set():
                got = app.data.frame(source)
                if got is not None and got[0] != last:
                    last, jpeg = got
                    head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: "
                            f"{len(jpeg)}\r\nX-Frame-Seq: {last}\r\n\r\n").encode()
                    self.wfile.write(head + jpeg + b"\r\n")
                    self.wfile.flush()
                app.closing.wait(app.data.pictures.interval if app.data.mode == "live"
                                 else app.tick_s)
        except OSError:  # the viewer went away (broken pipe, reset, timeout)
            broken = True
        finally:
            app.stream_closed(False, broken)

    def _events(self, query: dict[str, list[str]]) -> None:
        app = self.app
        after = int(_number(query, "after", 0))
        if not self._open_stream("text/event-stream; charset=utf-8", True):
            return
        broken = False
        try:
            self.wfile.write(f"retry: {int(app.tick_s * 2000)}\n\n".encode())
            while True:
                finished = app.data.closed
                parts = [f"event: state\ndata: {app.state_json(finished)}\n\n"]
                faces = app.data.faces_since(after, 60)
                if faces["faces"]:
                    after = faces["faces"][-1]["id"]
                    parts.append(f"event: faces\nid: {after}\ndata: {json.dumps(faces)}\n\n")
                if finished:
                    parts.append("event: end\ndata: {}\n\n")
                self.wfile.write("".join(parts).encode("utf-8"))
                self.wfile.flush()
                if finished or app.closing.wait(app.tick_s):
                    break
        except OSError:
            broken = True
        finally:
            app.stream_closed(True, broken)
