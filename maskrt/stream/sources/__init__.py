"""Frame sources: files, folders, videos, cameras, network streams and drop folders.

* ``base.py``: :class:`Frame` and :class:`Source` (subclass it for a new kind of source), the
  constants naming videos, files that are not media and stream schemes; :func:`display_path`
  (a path as valid UTF-8 text, for ids, uris and messages).
* ``files.py``: image files, folders, drop folders (lossless: encoded bytes, decoded later).
* ``video.py``: video files. ``live.py``: cameras and network streams, with reconnection.
* ``spec.py``: :func:`open_source`, from ``"clip.avi"``, ``0``, ``"rtsp://..."``, ``"drop:DIR"``;
  :func:`open_sources` (bad specs become :class:`InvalidSource`: one failed record each).
* ``reconnect.py``: :class:`ReconnectPolicy`, when a failing live source gives up.
"""

from maskrt.stream.sources.base import (DROP_PREFIX, NOT_MEDIA_EXTENSIONS, STREAM_SCHEMES,
                                        VIDEO_EXTENSIONS, Frame, Source, SourceSpec, display_path)
from maskrt.stream.sources.files import DropFolderSource, FolderSource, ImageFileSource, PathSource
from maskrt.stream.sources.live import CameraSource, CaptureSource, StreamSource, redact_url
from maskrt.stream.sources.reconnect import FOREVER, ReconnectPolicy
from maskrt.stream.sources.spec import SPEC_HELP, InvalidSource, open_source, open_sources
from maskrt.stream.sources.video import VideoFileSource

__all__ = ["CameraSource", "CaptureSource", "DROP_PREFIX", "DropFolderSource", "FOREVER",
           "FolderSource", "Frame", "ImageFileSource", "InvalidSource", "NOT_MEDIA_EXTENSIONS",
           "PathSource", "ReconnectPolicy", "SPEC_HELP", "STREAM_SCHEMES", "Source", "SourceSpec",
           "StreamSource", "VIDEO_EXTENSIONS", "VideoFileSource", "display_path", "open_source",
           "open_sources", "redact_url"]
