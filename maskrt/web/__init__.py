"""The live view in the browser: ``maskrt score ... --web [HOST:]PORT`` /
``Pipeline(sinks=[WebSink(...)])`` while a run lasts, ``maskrt view RUN_DIR`` over a finished
run's outputs (ARCHITECTURE.md, "The web layer").

    sink.py      WebSink: the pipeline's side (references, small face copies), the server's life
    live.py      LiveData: what the server asks of a running pipeline, cached and shared
    pictures.py  each source's latest picture, drawn and JPEG-encoded on demand, rate-bounded
    faces.py     the panel of people decided without_mask (face and CAM thumbnails)
    run_view.py  RunData: the same questions answered from a run folder (records, summary)
    server.py    the HTTP server (standard library): the page, JSON, MJPEG, Server-Sent Events
    static/      the page: plain HTML, JavaScript and CSS, no build step, nothing from a CDN

Only the standard library and what the base install has (NumPy, OpenCV); nothing to install.
"""

from __future__ import annotations

from typing import Any

__all__ = ["WebSink", "WebServer", "parse_address", "serve_run"]


def __getattr__(name: str) -> Any:  # light: the CLI imports this package for --help
    if name in ("WebSink", "parse_address"):
        from maskrt.web import sink

        return getattr(sink, name)
    if name == "WebServer":
        from maskrt.web.server import WebServer

        return WebServer
    if name == "serve_run":
        from maskrt.web.run_view import serve_run

        return serve_run
    raise AttributeError(f"module 'maskrt.web' has no attribute {name!r}")
