"""The streaming pipeline: the composition root that wires sources, stages, queues and sinks.

    reader per source -> source queue -+-> decode -> faces -> [user stages] -> track -> prepare
    reader per source -> source queue -+                                                  |
    sinks <- consumer (iteration, ``get``) <- records <- ledger <- explain <- infer <------+

Every arrow is a :class:`~maskrt.stream.queue.BoundedQueue`; every stage runs in its own named
``maskrt-*`` thread(s); every frame read ends in the :class:`~maskrt.stream.accounting.Ledger` as
scored, dropped or failed. See ARCHITECTURE.md for the contracts and where to add things.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from types import TracebackType
from typing import Any, Iterable, Iterator, Sequence

from maskrt.image import MAX_PIXELS, MAX_SIDE
from maskrt.stream.accounting import Ledger, sum_counts
from maskrt.stream.batching import ExplainStage, InferStage, InferredBatch
from maskrt.stream.checks import check_settings
from maskrt.stream.consumer import SinkFanout
from maskrt.stream.ending import RecordsEnd
from maskrt.stream.queue import BoundedQueue
from maskrt.stream.readers import LIVE_QUEUE_SIZE, SourceQueues, run_reader
from maskrt.stream.records import Record
from maskrt.stream.sinks import Sink
from maskrt.stream.sources import Source, SourceSpec, open_source
from maskrt.stream.stages import DecodeStage, PrepareStage, Stage, start_stage
from maskrt.stream.summary import build_summary
from maskrt.stream.work import (REASON_REMOVED, REASON_STOPPED, REASON_SUPERSEDED, FrameTask,
                               SourceHandle)

log = logging.getLogger("maskrt.pipeline")

STAGE_QUEUE_SIZE = 4  #: capacity of the queues between per-frame stages (decode ... prepare)


class Pipeline:
    """Score (and explain) frames from many sources in cross-source batches.

    engine: an :class:`~maskrt.engine.Engine`, a backend name (an Engine is made and closed with
        the pipeline), or None for the default Engine.
    sources: specs for :func:`~maskrt.stream.sources.open_source` (paths, URLs, camera indices,
        ``drop:DIR``) or :class:`~maskrt.stream.sources.Source` objects.
    batch_size: regions per backend call at most. max_wait_ms: how long a batch waits for more
        after its first region was prepared.
    explain: draw the CAM overlay of each scored region (``record.overlay``, at its size).
    keep_frames: attach the decoded frame to its records (``record.frame``; annotated videos).
    stages: user :class:`~maskrt.stream.stages.Stage` objects run, in order, on each decoded frame.
    sinks: :class:`~maskrt.stream.sinks.Sink` objects given every record the consumer takes.
    regions: "faces" (default: a face detector makes one region per face, ``preset`` "default"
        or "fast", or your ``detector``; ``face_options`` override the preset's report_threshold,
        score_threshold, nms_iou, upscale, widen, ...) or "frame" (the whole frame is the one
        region: inputs that already are face crops).
    queue_size: per-source queue capacity (default: 4 for live sources, max(8, batch_size) for
        others); a source's own ``queue_size`` wins.
    preprocess_threads: decode threads (1 keeps each source's records in frame order).
    max_side, max_pixels: frames are scaled down to max_side a side; images over max_pixels fail.
    output_capacity: scored records waiting for the consumer before scoring pauses.
    stop_when_done: end the record stream when every source has finished (False: keep running,
        for sources added later, until :meth:`stop`).
    source_options: options for the sources made from specs (``reconnect``, ``timeout_s``, ...).
    max_frames: stop reading once this many frames were read in all (each is still scored).
    track: "auto" (videos and live sources, not photos), "on"/True or "off"/False: faces get
        track ids and per-person decisions (:mod:`maskrt.track`). reuse: tracked faces take
        their track's decision when classifying again is not worth it. track_options:
        :class:`~maskrt.track.TrackSettings` fields. max_latency_ms: a live frame not scored
        this long after its read is dropped (late) where first seen late; None: never.
    """

    def __init__(self, engine: Any = None, sources: Iterable[SourceSpec] | SourceSpec = (), *,
                 batch_size: int = 32, max_wait_ms: float = 20.0, explain: bool = False,
                 keep_frames: bool = False, stages: Sequence[Stage] = (),
                 sinks: Sequence[Sink] = (), queue_size: int | None = None,
                 preprocess_threads: int = 1, max_side: int = MAX_SIDE, max_pixels: int | None = MAX_PIXELS,
                 output_capacity: int = 1024, stop_when_done: bool = True,
                 source_options: dict[str, Any] | None = None, max_batch: int | None = None,
                 regions: str = "faces", preset: str = "default", detector: Any = None,
                 face_options: dict[str, Any] | None = None, max_frames: int | None = None,
                 track: Any = "auto", reuse: bool = True, track_options: dict | None = None,
                 max_latency_ms: float | None = 1000.0) -> None:
        if max_batch is not None:
            warnings.warn("Pipeline(max_batch=) is now batch_size=", DeprecationWarning, 2)
            batch_size = max_batch
        check_settings(batch_size, max_wait_ms, preprocess_threads, queue_size, max_side,
                        output_capacity, max_latency_ms, stages, max_pixels)
        from maskrt.detect import region_stages  # the detector is loaded only when used
        from maskrt.track import TrackSettings, TrackStage

        self.tracking = TrackStage(track, reuse, TrackSettings().with_options(track_options))
        self.max_latency_s = None if max_latency_ms is None else max_latency_ms / 1000.0
        if isinstance(sources, (str, int, Source)) or hasattr(sources, "__fspath__"):
            sources = [sources]  # type: ignore[list-item]
        self._source_options = dict(source_options or {})
        opened = [open_source(spec, **self._source_options) for spec in sources]  # fail early
        self._owns_engine = engine is None or isinstance(engine, str)
        if self._owns_engine:
            from maskrt.engine import Engine

            engine = Engine(backend=engine) if engine else Engine()
        self.engine = engine
        self.batch_size = batch_size
        self.explain = explain
        self.sinks = list(sinks)
        self.keep_frames = keep_frames or any(getattr(s, "needs_frames", False) for s in self.sinks)
        self.queue_size = queue_size
        self.stop_when_done = stop_when_done
        self._output: BoundedQueue[Record] = BoundedQueue(output_capacity, name="records")
        self.ledger = Ledger(self._output, max_frames)
        self._sources = SourceQueues(self.ledger)
        served = getattr(getattr(engine, "backend", None), "faces_service", None)
        self._chain: list[Stage] = [DecodeStage(max_side, preprocess_threads, max_pixels),
                                    *region_stages(regions, preset, detector, face_options,
                                                   getattr(engine, "input_device", None),
                                                   served=served, features=explain),
                                    *stages, self.tracking,
                                    PrepareStage(keep_image=explain or self.keep_frames)]
        self.tracking.attach(self._chain)
        self._infer = InferStage(engine, batch_size, max_wait_ms / 1000.0, self.ledger)
        self._explain = ExplainStage(engine, self.ledger, explain=explain,
                                     keep_frames=self.keep_frames)
        self._stage_queues: list[BoundedQueue[Any]] = []
        self._handles: dict[str, SourceHandle] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._state = "new"  # new -> running -> stopping -> finished
        self._end = RecordsEnd(self._output, self._readers_done)
        self._t_start: float | None = None
        self._fanout = SinkFanout(self.sinks, self.tracking.finish)
        for source in opened:
            self._register(source)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "Pipeline":
        """Start the threads (iteration and ``with`` do this). Idempotent."""
        with self._lock:
            if self._state != "new":
                if self._state == "finished" and self._t_start is None:
                    raise RuntimeError("pipeline: already stopped; create a new one")
                return self
            self._state = "running"
            self._t_start = time.perf_counter()
            handles = list(self._handles.values())
        for sink in self.sinks:
            sink.open(self)
        inbox: Any = self._sources
        before_detector = self.tracking.before_detector(self._chain)
        for stage in self._chain:
            # The last holds the next batch (in faces to classify) while the backend runs; the
            # others smooth hand-offs. Live frames: see TrackStage.before_detector.
            first, last = stage is self._chain[0], stage is self._chain[-1]
            outbox: BoundedQueue[FrameTask] = BoundedQueue(
                self.batch_size if last else STAGE_QUEUE_SIZE, name=stage.name,
                weight=FrameTask.queue_weight if last else None, on_drop=self.ledger.drop,
                supersede=before_detector if first else FrameTask.supersedes,
                drop_reason=REASON_SUPERSEDED)
            self._stage_queues.append(outbox)
            self._end.enter()  # the stream ends only after the stage (and its frames)
            self._threads.append(start_stage(stage, inbox, outbox, self.ledger, self._end.leave))
            inbox = outbox
        results: BoundedQueue[InferredBatch] = BoundedQueue(2, name="results")
        self._spawn(lambda: self._infer.run(inbox, results), "maskrt-infer")
        self._spawn(lambda: self._run_explain(results), "maskrt-explain")
        for handle in handles:
            self._start_reader(handle)
        self._check_input_closed()
        return self

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run_explain(self, results: BoundedQueue[InferredBatch]) -> None:
        try:
            self._explain.run(results)
        finally:
            self._end.explain_ended()

    def stop(self, *, drain: bool = False, timeout: float = 15.0,
             reason: str = REASON_STOPPED) -> None:
        """Stop reading and shut every thread down (idempotent).

        drain=False: frames still queued are recorded as ``dropped`` with ``reason`` (default:
        pipeline stopped); batches already at the backend finish. drain=True: everything read
        so far is scored first. Records not yet taken stay available to iteration; they end once
        each frame read has its record (those in flight after ``timeout`` s: dropped, then).
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            started = self._state not in ("new", "finished")
            if self._state == "new":
                self._state = "finished"
            elif self._state == "running":
                self._state = "stopping"
            handles = list(self._handles.values())
        if started:
            for handle in handles:
                handle.stop.set()
                if not handle.removed:
                    handle.discard_reason = reason
            if not drain:
                with self._end.discarding():
                    self._abort_queues(handles)
            self._output.overflow()  # records must not wait for a consumer that stopped
            self._join(handles, deadline, timeout, reason)
        self._output.close()
        if self._owns_engine:
            self.engine.close()

    close = stop

    def _abort_queues(self, handles: list[SourceHandle]) -> None:
        for handle in handles:
            for task in self._sources.queue(handle.id).abort():
                self.ledger.drop(task, handle.discard_reason)
        for queue in self._stage_queues:
            for task in queue.abort():
                self.ledger.drop(task, task.handle.discard_reason)

    def _join(self, handles: list[SourceHandle], deadline: float, timeout: float,
              reason: str) -> None:
        self._check_input_closed()
        for thread in [h.thread for h in handles if h.thread] + self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in [*self._threads, *(h.thread for h in handles if h.thread)]
                 if t.is_alive()]
        if alive:  # the records must end: their frames are recorded as dropped now
            given_up = self.ledger.abort(f"{reason} (given up {timeout:g} s after the stop)")
            log.warning("pipeline threads %s still running after %.1f s; their %d frames in "
                        "flight are recorded as dropped", alive, timeout, given_up)
        with self._lock:
            self._state = "finished"
        self._end.stamp()
        for stage in self._chain:
            stage.close()

    # ------------------------------------------------------------------ sources

    def add_source(self, spec: SourceSpec, **options: Any) -> str:
        """Add a source (spec or Source) to the running pipeline; returns its id (made unique)."""
        source = open_source(spec, **{**self._source_options, **options})
        with self._lock:
            if self._state in ("stopping", "finished") or self._input_closed():
                raise RuntimeError("pipeline: cannot add a source after the pipeline finished or "
                                   "was stopped (use stop_when_done=False to add sources later)")
        handle = self._register(source)
        if self._state == "running":
            self._start_reader(handle)
        return handle.id

    def remove_source(self, source_id: str, *, drain: bool = False,
                      timeout: float = 10.0) -> dict[str, Any]:
        """Stop a source's reader and account for its frames: those still queued are scored with
        ``drain=True``, else recorded as ``dropped`` (reason: source removed); frames already
        past its queue are scored. Returns the source's counters at that moment."""
        with self._lock:
            handle = self._handles.get(source_id)
            if handle is None or handle.removed:
                active = [h.id for h in self._handles.values() if not h.removed]
                raise KeyError(f"remove_source: no active source {source_id!r}; active: {active}")
            handle.removed = True
            handle.discard_reason = REASON_REMOVED
        handle.stop.set()
        queue = self._sources.queue(source_id)
        if not drain:
            with self._end.discarding():
                for task in queue.abort():
                    self.ledger.drop(task, REASON_REMOVED)
        if handle.thread is not None:
            handle.thread.join(timeout)
            if handle.thread.is_alive():
                log.warning("%s: reader still busy %.1f s after removal; its frames will be "
                            "recorded as dropped", source_id, timeout)
                with self._end.discarding():
                    for task in queue.abort():
                        self.ledger.drop(task, REASON_REMOVED)
        handle.source.state = "removed"
        self._check_input_closed()
        return self.ledger.source_counters(source_id, self._t_start)

    def _register(self, source: Source) -> SourceHandle:
        capacity = source.queue_size or self.queue_size or (
            LIVE_QUEUE_SIZE if source.live else max(8, self.batch_size))
        with self._lock:
            base, k = source.id, 2
            while source.id in self._handles:
                source.id = f"{base}#{k}"
                k += 1
            handle = SourceHandle(source)
            handle.max_latency_s = self.max_latency_s if source.live else None
            self._handles[source.id] = handle
        self.ledger.open(handle)
        self._sources.add(handle, capacity)
        return handle

    def _start_reader(self, handle: SourceHandle) -> None:
        handle.thread = threading.Thread(
            target=run_reader, args=(handle, self._sources.queue(handle.id), self.ledger,
                                     self._reader_done),
            daemon=True, name=f"maskrt-reader-{handle.id}")
        handle.thread.start()

    def _reader_done(self, handle: SourceHandle) -> None:
        handle.reader_done = True
        self._check_input_closed()
        self._end.check()

    def _readers_done(self) -> bool:
        with self._lock:
            return all(h.reader_done or h.thread is None for h in self._handles.values())

    def _input_closed(self) -> bool:
        """No frame will be read any more: every reader is done and the pipeline is stopping or
        stops when its sources are done."""
        return (self._state != "new" and (self._state != "running" or self.stop_when_done)
                and all(h.reader_done or (h.thread is None and h.removed)
                        for h in self._handles.values()))

    def _check_input_closed(self) -> None:
        if self._input_closed():
            self._sources.close_input()

    # ------------------------------------------------------------------ records

    def get(self, timeout: float | None = None) -> Record | None:
        """The next record (also given to the sinks); None when ``timeout`` seconds passed
        without one, or the pipeline has finished and every record was taken (then
        :attr:`finished` is True, open tracks have ended and the sinks are closed)."""
        if self._state == "new":
            self.start()
        record = self._output.get(timeout)
        if record is None:
            return None
        if not isinstance(record, Record):  # CLOSED: the end of the stream
            self._fanout.end()
            return None
        self._fanout.deliver(record)
        return record

    @property
    def final_events(self) -> list[dict[str, Any]]:
        """Track events of the tracks still open at the end (the others: ``record.events``)."""
        return self._fanout.final_events

    def __iter__(self) -> Iterator[Record]:
        while True:
            record = self.get()
            if record is None:
                return
            yield record

    def run(self) -> dict[str, Any]:
        """Consume every record into the sinks and return the summary."""
        with self:
            for _ in self:
                pass
        return self.summary()

    @property
    def finished(self) -> bool:
        """Every thread is done and every record was taken."""
        return self._output.closed and len(self._output) == 0 and self._state != "new"

    # ------------------------------------------------------------------ counters

    @property
    def source_ids(self) -> list[str]:
        with self._lock:
            return [h.id for h in self._handles.values() if not h.removed]

    def sources(self) -> dict[str, Source]:
        """Every source ever added (removed ones too), by id."""
        with self._lock:
            return {h.id: h.source for h in self._handles.values()}

    def counters(self) -> dict[str, Any]:
        """Live counters: per source and in total ``read``, ``scored``, ``dropped``, ``failed``,
        ``in_flight``, plus per source its kind, state, recent frames/s, queued frames,
        reconnects, waiting seconds, labels, drop/failure reasons; the seconds frames were
        flowing; the batching figures; confirmed tracks alive per source."""
        now = time.perf_counter()
        per = {}
        for source_id in self.ledger.source_ids():
            per[source_id] = self.ledger.source_counters(source_id, self._t_start)
            per[source_id]["queued"] = len(self._sources.queue(source_id))
        total = sum_counts(per.values())
        elapsed = ((self._end.t_end or now) - self._t_start) if self._t_start else 0.0
        # fps: over the recent window (what is flowing now), never a whole-run average that
        # decays while a source is idle; flowing_s: the time frames were flowing (throughput)
        return {"sources": per, "total": total, "elapsed_s": elapsed,
                "fps": sum(c["fps"] for c in per.values()),
                "flowing_s": self.ledger.flowing_s(),
                "frame_limit_reached": self.ledger.limit_reached,
                "active_tracks": self.tracking.active_tracks(),
                **self._infer.counters(), "finished": self.finished}

    def observe_batches(self, observer: Any) -> None:
        """``observer(regions, seconds)`` after every backend call (in the infer thread)."""
        self._infer.observers.append(observer)

    def summary(self, **extra: Any) -> dict[str, Any]:
        """The run's summary (what ``summary.json`` holds), from the counters, plus ``extra``."""
        return build_summary(self.counters(), self.ledger.latencies(),
                             outputs=dict(self._fanout.parts), **extra)

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        if self.sinks:  # with sinks, what the consumer left goes to them before they close
            for _ in self:
                pass
