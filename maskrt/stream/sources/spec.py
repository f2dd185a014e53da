"""Source specifications (``"clip.avi"``, ``0``, ``"rtsp://..."``, ``"drop:DIR"``) -> Source objects."""

from __future__ import annotations

import os
import threading
import re
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from maskrt.stream.sources.base import (DROP_PREFIX, STREAM_SCHEMES, VIDEO_EXTENSIONS, Frame,
                                        Source, SourceSpec)
from maskrt.stream.sources.files import DropFolderSource, FolderSource, ImageFileSource
from maskrt.stream.sources.live import CameraSource, StreamSource, redact_url
from maskrt.stream.sources.video import VideoFileSource

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




class InvalidSource(Source):
    """A spec that names nothing usable (a path that does not exist, an unknown URL scheme): one
    ``failed`` frame with the reason, so a run over many sources reports it and goes on."""

    kind = "invalid"

    def __init__(self, spec: SourceSpec, reason: str, id: str | None = None) -> None:
        self.spec = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else str(spec)
        self.reason = reason
        super().__init__(id)
        self.state = "failed"
        self.last_error = reason

    def default_id(self) -> str:
        return redact_url(self.spec)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        yield Frame(0, None, uri=redact_url(self.spec), error=self.reason)


def open_sources(specs: list[SourceSpec], **options: Any) -> tuple[list[Source], list[str]]:
    """Every spec opened; a spec that names nothing usable becomes an :class:`InvalidSource`
    (its reason also in the returned list of problems) instead of stopping the others."""
    sources: list[Source] = []
    problems: list[str] = []
    for spec in specs:
        try:
            sources.append(open_source(spec, **options))
        except ValueError as err:
            problems.append(str(err))
            sources.append(InvalidSource(spec, str(err)))
    return sources, problems
