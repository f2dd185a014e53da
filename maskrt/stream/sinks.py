"""Where records go: sinks behind one protocol - JSON lines, overlay images, annotated videos and
the summary - and :func:`build_sinks`, the one place ``maskrt score`` turns its flags into sinks.

A :class:`Sink` is opened with the pipeline when it starts, given every record the consumer takes
(with the decoded frame when it asked for frames: ``needs_frames = True``), and closed at the
end of the stream; ``close`` returns its part of the summary's ``outputs`` (or None)::

    summary = Pipeline(engine, sources, sinks=[JsonlSink("out/records.jsonl")]).run()
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterable

import numpy as np

from maskrt.stream.annotate import annotate, annotate_faces
from maskrt.stream.records import SCORED, Record, whole_frame
from maskrt.stream.sources.base import VIDEO_EXTENSIONS
from maskrt.stream.summary import write_json_atomic

log = logging.getLogger("maskrt.sinks")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(source_id: str, limit: int = 80) -> str:
    """A file-system-safe folder name for a source id (``rtsp://cam:554/x`` -> ``rtsp_cam_554_x``)."""
    name = _UNSAFE.sub("_", source_id).strip("._") or "source"
    return name[-limit:]


class Sink:
    """The sink protocol. Subclass and override :meth:`write` (and :meth:`open`/:meth:`close`)."""

    #: True: the pipeline keeps the decoded frame for :meth:`write` (costs memory per record)
    needs_frames = False

    def open(self, pipeline: Any) -> None:
        """Called once when the pipeline starts (it gives access to ``counters()``/``summary()``)."""

    def write(self, record: Record, frame: np.ndarray | None) -> None:
        raise NotImplementedError

    def events(self, events: list[dict[str, Any]]) -> None:
        """Track events (track_started, decision, track_ended; see :mod:`maskrt.track`), after
        the record of the frame that made them; the default ignores them."""

    def close(self) -> dict[str, Any] | None:
        """Called once at the end of the stream; returns this sink's part of ``outputs``."""
        return None

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class JsonlSink(Sink):
    """One JSON object per record (the fields of :data:`maskrt.stream.records.JSON_FIELDS`, plus
    the files other sinks wrote for it, e.g. ``overlay``), one per line.

    Lines are gathered and written with one ``os.write`` of whole lines, so a reader tailing
    the file never sees half a line; they reach the file every ``flush_every`` records, on
    close, and at least every ``max_delay_s`` seconds even when no new record arrives (a
    background thread while the sink is open: a silent camera must not keep records back).
    """

    def __init__(self, path: str | os.PathLike[str], flush_every: int = 64,
                 max_delay_s: float = 0.5) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._flush_every = flush_every
        self._max_delay_s = max_delay_s
        self._lines: list[bytes] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._flusher: threading.Thread | None = None
        self.count = 0

    def open(self, pipeline: Any) -> None:
        self._start_flusher()

    def write(self, record: Record, frame: np.ndarray | None = None) -> None:
        entry = record.to_dict()
        entry.update(record.outputs)
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self._lines.append(line)
            self.count += 1
            if len(self._lines) >= self._flush_every:
                self._flush_locked()
        if self._flusher is None:  # used without a pipeline: still flush in the background
            self._start_flusher()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._lines or self._fd is None:
            return
        data = memoryview(b"".join(self._lines))
        self._lines.clear()
        while data:  # a short write (a full disk, a signal) continues where it stopped
            written = os.write(self._fd, data)
            data = data[written:]

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher is not None or self._fd is None:
                return
            self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                             name="maskrt-jsonl-flush")
        self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._closing.wait(self._max_delay_s):
            try:
                self.flush()
            except OSError as err:  # reported again by close(); the run goes on meanwhile
                log.warning("%s: cannot write records: %s", self.path, err)

    def close(self) -> dict[str, Any]:
        self._closing.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join()
        with self._lock:
            try:
                self._flush_locked()
            finally:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
        return {"records": str(self.path)}


class OverlaySink(Sink):
    """Overlay images: ``DIR/<source>/<frame_index>[_<file stem>].jpg`` (one folder per source)."""

    def __init__(self, directory: str | os.PathLike[str], quality: int = 90) -> None:
        self.directory = Path(directory)
        self.quality = quality
        self._made: set[Path] = set()
        self.count = 0

    def write(self, record: Record, frame: np.ndarray | None = None) -> str | None:
        """Write the record's overlay (and note it in ``record.outputs``); returns the path, or
        None when it has none."""
        import cv2

        if record.overlay is None:
            return None
        folder = self.directory / safe_name(record.source_id)
        if folder not in self._made:
            folder.mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        name = f"{record.frame_index:08d}"
        if record.region_index:  # regions after the first of a frame
            name += f"_r{record.region_index}"
        if record.uri:
            name += "_" + safe_name(Path(record.uri).stem, 60)
        path = folder / f"{name}.jpg"
        if not cv2.imwrite(str(path), record.overlay, [cv2.IMWRITE_JPEG_QUALITY, self.quality]):
            return None
        self.count += 1
        record.outputs["overlay"] = str(path)
        return str(path)

    def close(self) -> dict[str, Any]:
        return {"overlays": str(self.directory)}


class VideoSink(Sink):
    """Annotated videos, one per source given to it: ``DIR/<source>_annotated.avi`` (MJPG), one
    picture per scored frame: its overlay when the pipeline explains (faces mode: already showing
    every face), else the frame itself (this sink asks the pipeline to keep frames) with the
    decision drawn on it - in the corner for a whole-frame decision, as boxes for faces (the
    records of one frame are gathered until the frame's ``faces`` count is complete). Dropped and
    failed frames have no picture and are left out; ``fps`` per source comes from the source
    (default 25)."""

    needs_frames = True

    def __init__(self, directory: str | os.PathLike[str], source_ids: Iterable[str],
                 fps_of: Callable[[str], float | None] = lambda source_id: None) -> None:
        self.directory = Path(directory)
        self.source_ids = set(source_ids)
        self.fps_of = fps_of
        self._writers: dict[str, Any] = {}
        self._sizes: dict[str, tuple[int, int]] = {}
        self._pending: dict[tuple[str, int], list[Record]] = {}
        self.paths: dict[str, str] = {}

    def write(self, record: Record, frame: np.ndarray | None = None) -> bool:
        if record.source_id not in self.source_ids or record.status != SCORED:
            return False
        if whole_frame(record):
            image = record.overlay if record.overlay is not None else frame
            return image is not None and self._write_frame(record.source_id, annotate(image, record))
        if record.overlay is not None:  # the frame with every region's CAM, box and label
            return self._write_frame(record.source_id, record.overlay)
        if frame is None:
            return False
        key = (record.source_id, record.frame_index)
        group = self._pending.setdefault(key, [])
        group.append(record)
        if len(group) < max(1, record.faces or 0):
            return False
        del self._pending[key]
        return self._write_frame(record.source_id, annotate_faces(frame, group))

    def _write_frame(self, source_id: str, image: np.ndarray) -> bool:
        import cv2

        writer = self._writers.get(source_id) or self._open(source_id, image)
        if writer is None:
            return False
        size = self._sizes[source_id]
        if (image.shape[1], image.shape[0]) != size:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        writer.write(image)
        return True

    def _open(self, source_id: str, image: np.ndarray) -> Any:
        import cv2

        self.directory.mkdir(parents=True, exist_ok=True)
        root, ext = os.path.splitext(safe_name(source_id))
        path = self.directory / f"{root if ext.lower() in VIDEO_EXTENSIONS else root + ext}" \
            f"_annotated.avi"
        size = (image.shape[1], image.shape[0])
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"),
                                 float(self.fps_of(source_id) or 25.0), size)
        if not writer.isOpened():
            self.source_ids.discard(source_id)
            return None
        self._writers[source_id] = writer
        self._sizes[source_id] = size
        self.paths[source_id] = str(path)
        return writer

    def close(self) -> dict[str, Any]:
        for writer in self._writers.values():
            writer.release()
        self._writers.clear()
        return {"videos": dict(self.paths)}


class SummarySink(Sink):
    """Writes the pipeline's summary (:meth:`Pipeline.summary`, from its counters) to ``path``
    atomically when the stream ends. Close it after the other sinks, so their ``outputs`` are in
    it; ``extra`` (backend, settings, how the run stopped...) is added and may be updated until
    then."""

    def __init__(self, path: str | os.PathLike[str], **extra: Any) -> None:
        self.path = Path(path)
        self.extra = extra
        self.summary: dict[str, Any] | None = None
        self._pipeline: Any = None

    def open(self, pipeline: Any) -> None:
        self._pipeline = pipeline

    def write(self, record: Record, frame: np.ndarray | None = None) -> None:
        pass  # the counts come from the pipeline's ledger, not from recounting records

    def close(self) -> dict[str, Any]:
        if self._pipeline is not None:
            self.summary = self._pipeline.summary(**self.extra)
            self.summary["outputs"]["summary"] = str(self.path)
            write_json_atomic(self.path, self.summary)
        return {"summary": str(self.path)}


def build_sinks(out: Path, *, explain: bool, video_sources: Iterable[str],
                fps_of: Callable[[str], float | None], metrics_port: int | None = None,
                metrics_addr: str = "0.0.0.0", mqtt: str | None = None,
                mqtt_topic: str = "maskrt", mqtt_options: dict[str, Any] | None = None,
                tracks: bool = False, **summary_extra: Any) -> list[Sink]:
    """The sinks of ``maskrt score``: overlays (``--explain``; before the JSONL sink, which
    records their paths), records.jsonl, annotated videos (given video sources), Prometheus
    metrics (``metrics_port``), MQTT events (``mqtt``: ``HOST[:PORT]``; ``mqtt_options``: more
    MqttSink keywords), tracks.jsonl and events.jsonl (``tracks``), summary.json (last, so the others' parts are in it). ImportError: an optional package is missing; ValueError: a
    malformed option; OSError: the metrics port cannot be served."""
    # The sinks that can fail (optional packages, options, a port) are made first, so a failure
    # leaves no open file behind; the MQTT client connects only when opened, and the metrics
    # server starts last, so nothing after it can fail and leave it serving.
    network: list[Sink] = []
    if mqtt is not None:
        from maskrt.stream.mqtt import MqttSink, parse_broker

        network.append(MqttSink(*parse_broker(mqtt), topic_prefix=mqtt_topic,
                                **(mqtt_options or {})))
    if metrics_port is not None:
        from maskrt.stream.metrics import PrometheusSink

        network.append(PrometheusSink(metrics_port, addr=metrics_addr))
    sinks: list[Sink] = []
    if explain:
        sinks.append(OverlaySink(out / "overlays"))
    sinks.append(JsonlSink(out / "records.jsonl"))
    video_sources = list(video_sources)
    if video_sources:
        sinks.append(VideoSink(out / "videos", video_sources, fps_of=fps_of))
    if tracks:
        from maskrt.stream.track_sinks import TracksSink

        sinks.append(TracksSink(out))
    sinks.extend(network)
    sinks.append(SummarySink(out / "summary.json", **summary_extra))
    return sinks
