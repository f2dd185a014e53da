"""Where records go: sinks behind one protocol - JSON lines, overlay images, annotated videos and
the summary - and :func:`build_sinks`, the one place ``maskrt score`` turns its flags into sinks.

A :class:`Sink` is opened with the pipeline when it starts, given every record the consumer takes
(with the decoded frame when it asked for frames: ``needs_frames = True``), and closed at the
end of the stream; ``close`` returns its part of the summary's ``outputs`` (or None)::

    summary = Pipeline(engine, sources, sinks=[JsonlSink("out/records.jsonl")]).run()
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import Counter
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


def source_hash(source_id: str) -> str:
    """8 hex digits of the SHA-1 of the full source id: stable across runs and machines."""
    return hashlib.sha1(source_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]


class OutputNames:
    """File names per source, unique in a run: the readable name (default :func:`safe_name`)
    where no other source gets the same one (ignoring case), else it + ``_`` + the source's
    :func:`source_hash` (``x y`` and ``x_y`` are both ``x_y``). A name given never changes."""

    def __init__(self, readable: Callable[[str], str] = safe_name) -> None:
        self._readable = readable
        self._names: dict[str, str] = {}

    def plan(self, source_ids: Iterable[str]) -> None:
        """Name these sources together (a clashing set all get the hash: order decides none)."""
        fresh = {s: self._readable(s) for s in source_ids if s not in self._names}
        taken = Counter(n.lower() for n in [*self._names.values(), *fresh.values()])
        for source_id, name in fresh.items():
            unique = taken[name.lower()] == 1
            self._names[source_id] = name if unique else f"{name}_{source_hash(source_id)}"

    def __call__(self, source_id: str) -> str:
        if source_id not in self._names:  # a source added while the pipeline runs
            self.plan([source_id])
        return self._names[source_id]


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

    A write the disk refuses (full for a moment) loses nothing: the unwritten bytes are kept
    and the next flush writes them, the rest of a line cut short first. Lost are the lines
    beyond ``max_buffered_bytes`` and those still unwritten ``close_retry_s`` after close (a
    half line is cut off the file): :attr:`lost`, ``records_lost`` in the summary.
    """

    def __init__(self, path: str | os.PathLike[str], flush_every: int = 64,
                 max_delay_s: float = 0.5, max_buffered_bytes: int = 8 << 20,
                 close_retry_s: float = 2.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._flush_every = flush_every
        self._max_delay_s = max_delay_s
        self._max_buffered = max_buffered_bytes
        self._close_retry_s = close_retry_s
        self._pending = bytearray()  # unwritten bytes in order; may begin inside a line
        self._head_written = 0  # bytes of the first pending line already in the file
        self._queued = 0  # lines added since the last flush
        self._error: OSError | None = None  # the refusal of the write failing now
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._flusher: threading.Thread | None = None
        self.count = 0
        self.lost = 0

    def open(self, pipeline: Any) -> None:
        self._start_flusher()

    def write(self, record: Record, frame: np.ndarray | None = None) -> None:
        entry = record.to_dict()
        entry.update(record.outputs)
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self.count += 1
            if len(self._pending) + len(line) <= self._max_buffered:
                self._pending += line
                self._queued += 1
            else:  # the disk has refused writes for long: memory must not grow without bound
                self.lost += 1
                if self.lost == 1:
                    log.error("%s: records lost, %d bytes wait", self.path, self._max_buffered)
            if self._queued >= self._flush_every:
                self._flush_locked()
        if self._flusher is None:  # used without a pipeline: still flush in the background
            self._start_flusher()

    def flush(self) -> bool:
        """Write what waits; False when the disk refused (it is kept for the next flush)."""
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> bool:
        self._queued = 0
        try:
            while self._pending and self._fd is not None:
                written = os.write(self._fd, self._pending)
                if written <= 0:
                    raise OSError(f"os.write wrote {written} bytes")
                self._advance(written)
        except OSError as err:
            if self._error is None:
                log.warning("%s: cannot write records (kept, retried): %s", self.path, err)
            self._error = err
            return False
        if self._error is not None:
            log.warning("%s: records are written again", self.path)
            self._error = None
        return True

    def _advance(self, written: int) -> None:
        """``written`` bytes of the pending ones reached the file: note where the line is."""
        end = self._pending.rfind(b"\n", 0, written)
        self._head_written = written - end - 1 if end >= 0 else self._head_written + written
        del self._pending[:written]

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher is not None or self._fd is None:
                return
            self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                             name="maskrt-jsonl-flush")
        self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._closing.wait(self._max_delay_s):
            self.flush()

    def close(self) -> dict[str, Any]:
        self._closing.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join()
        deadline = time.monotonic() + self._close_retry_s
        with self._lock:
            while not self._flush_locked() and time.monotonic() < deadline:
                time.sleep(0.1)  # a disk full for a moment: give it time before giving up
            self._give_up_locked()
        return {"records": str(self.path), "records_lost": self.lost}

    def _give_up_locked(self) -> None:
        """Count what could not be written as lost, cut a half line off, close the file."""
        if self._fd is None:
            return
        try:
            if self._pending:
                self.lost += self._pending.count(b"\n")
                log.error("%s: %d records lost: %s", self.path, self.lost, self._error)
            if self._pending and self._head_written:  # the file must end with a whole line
                os.ftruncate(self._fd, os.lseek(self._fd, 0, os.SEEK_CUR) - self._head_written)
        except OSError as err:
            log.error("%s: cannot cut the half line at its end: %s", self.path, err)
        finally:
            self._pending.clear()
            os.close(self._fd)
            self._fd = None


class OverlaySink(Sink):
    """Overlay images: ``DIR/<source>/<frame_index>[_<file stem>].jpg``, one folder per source
    (named by :class:`OutputNames`); ``close`` maps each source to its folder."""

    def __init__(self, directory: str | os.PathLike[str], quality: int = 90) -> None:
        self.directory = Path(directory)
        self.quality = quality
        self._names = OutputNames()
        self._made: dict[str, Path] = {}
        self.count = 0

    def open(self, pipeline: Any) -> None:
        self._names.plan(getattr(pipeline, "source_ids", ()))

    def write(self, record: Record, frame: np.ndarray | None = None) -> str | None:
        """Write the record's overlay (and note it in ``record.outputs``); returns the path, or
        None when it has none."""
        import cv2

        if record.overlay is None:
            return None
        folder = self._made.get(record.source_id)
        if folder is None:
            folder = self.directory / self._names(record.source_id)
            folder.mkdir(parents=True, exist_ok=True)
            self._made[record.source_id] = folder
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
        return {"overlays": str(self.directory),
                "overlay_folders": {source_id: str(f) for source_id, f in self._made.items()}}


class VideoSink(Sink):
    """Annotated videos, one per source given to it: ``DIR/<source>_annotated.avi`` (MJPG; the
    name from :class:`OutputNames`, so ``a/cam.avi`` and ``a/cam.mp4`` do not share one), one
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
        self._names = OutputNames(self.readable_name)
        self._names.plan(sorted(self.source_ids))
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

    @staticmethod
    def readable_name(source_id: str) -> str:
        """The name of a source's annotated video, before a hash and without a video extension."""
        root, ext = os.path.splitext(safe_name(source_id))
        return root if ext.lower() in VIDEO_EXTENSIONS else root + ext

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
        path = self.directory / f"{self._names(source_id)}_annotated.avi"
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
        self.error: OSError | None = None  # why the summary could not be written
        self._pipeline: Any = None

    def open(self, pipeline: Any) -> None:
        self._pipeline = pipeline

    def write(self, record: Record, frame: np.ndarray | None = None) -> None:
        pass  # the counts come from the pipeline's ledger, not from recounting records

    def close(self) -> dict[str, Any]:
        if self._pipeline is not None:
            self.summary = self._pipeline.summary(**self.extra)
            self.summary["outputs"]["summary"] = str(self.path)
            try:
                write_json_atomic(self.path, self.summary)
            except OSError as err:  # a full disk: the caller says so (maskrt score exits 2)
                self.error = err
                log.error("%s: cannot write the summary: %s", self.path, err)
        return {"summary": str(self.path)}


def build_sinks(out: Path, *, explain: bool, video_sources: Iterable[str],
                fps_of: Callable[[str], float | None], metrics_port: int | None = None,
                metrics_addr: str = "0.0.0.0", mqtt: str | None = None,
                mqtt_topic: str = "maskrt", mqtt_options: dict[str, Any] | None = None,
                tracks: bool = False, **summary_extra: Any) -> list[Sink]:
    """The sinks of ``maskrt score``: overlays (``--explain``; before the JSONL sink, which
    records their paths), records.jsonl, annotated videos (given video sources), Prometheus
    metrics (``metrics_port``), MQTT events (``mqtt``: ``HOST[:PORT]``; ``mqtt_options``: more
    MqttSink keywords), tracks.jsonl and events.jsonl (``tracks``), summary.json (last, so the
    others' parts are in it). ImportError: an optional package is missing; ValueError: a
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
