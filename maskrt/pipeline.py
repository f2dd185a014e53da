"""The streaming batch pipeline: many sources -> cross-source batches -> one backend -> records.

Threads (all named ``maskrt-*``, all joined by :meth:`Pipeline.stop`)::

    reader per source --> bounded queue per source --+
    reader per source --> bounded queue per source --+--> preprocess worker(s): decode, 224x224 BGR
                                                                |
                     records <-- postprocess (results, overlays) <-- inference: batch + backend

* Readers run each source's :meth:`~maskrt.sources.Source.frames` generator. Files, folders,
  videos and drop folders block when their queue is full (nothing is lost); cameras and streams
  drop their oldest queued frame and record it as ``dropped``.
* Preprocessing workers take frames round-robin across sources (so one busy source cannot starve
  the others), decode encoded images, convert to uint8 BGR and resize to 224x224, into a bounded
  "prepared" queue of ``max_batch`` frames, so a full next batch is ready while the backend runs
  the current one (and no more than that waits there: beyond it live sources drop, not queue).
* The inference thread sends a batch when ``max_batch`` frames are prepared, or ``max_wait_ms``
  after the batch's first frame was prepared (DeepStream's batched-push-timeout, Triton's max
  queue delay), or at once when no more frames can come. It calls only ``engine.infer``.
* The postprocess thread turns outputs into records with ``engine.results_from`` (so the pipeline
  and ``Engine.classify`` decide identically), draws overlays when explaining, and hands records
  to the consumer through a bounded output queue (a slow consumer slows scoring; live sources then
  drop, lossless sources wait).

Accounting: every frame a source yields produces exactly one record, so per source and overall
``read == scored + dropped + failed`` once nothing is in flight: after the pipeline finished or
was stopped, and for a removed source once its in-flight frames came out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Iterable, Iterator

import numpy as np

from maskrt.preprocess import ImageError, resize_to_input, to_bgr8
from maskrt.records import DROPPED, FAILED, SCORED, Record, empty_counts
from maskrt.sources import Frame, Source, SourceSpec, image_size, open_source, truncation_reason

log = logging.getLogger("maskrt.pipeline")

#: queue capacity of a live source (cameras, streams): small, so records stay fresh
LIVE_QUEUE_SIZE = 4
#: at most this many distinct failure/drop reasons are kept per source
MAX_REASONS = 100
#: window of the per-source frames/s figures
RATE_WINDOW_S = 5.0

REASON_QUEUE_FULL = "live queue full: dropped the oldest frame"
REASON_STOPPED = "pipeline stopped before the frame was scored"
REASON_REMOVED = "source removed before the frame was scored"


@dataclass
class _Item:
    state: "_SourceState"
    frame: Frame
    input: np.ndarray | None = None
    original: np.ndarray | None = None
    t_prepared: float = 0.0


class _SourceState:
    def __init__(self, source: Source, capacity: int, lock: threading.Lock) -> None:
        self.source = source
        self.id = source.id
        self.capacity = capacity
        self.queue: deque[_Item] = deque()
        self.space = threading.Condition(lock)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.counts = empty_counts()
        self.reasons: Counter[str] = Counter()
        self.scored_times: deque[float] = deque()
        self.next_index = 0
        self.discard = False
        self.discard_reason = REASON_STOPPED
        self.removed = False
        self.reader_done = False


class Pipeline:
    """Score (and explain) frames from many sources in cross-source batches.

    engine: an :class:`~maskrt.engine.Engine`, a backend name (an Engine is made and closed with
        the pipeline), or None for the default Engine.
    sources: specs for :func:`~maskrt.sources.open_source` (paths, URLs, camera indices,
        ``drop:DIR``) or :class:`~maskrt.sources.Source` objects.
    max_batch: frames per backend call at most. max_wait_ms: how long a batch waits for more
        frames after its first one.
    explain: draw the CAM overlay of each scored frame (``record.overlay``, at the frame's size).
    keep_frames: attach each scored frame to its record (``record.frame``; annotated videos).
    queue_size: per-source queue capacity (default: 4 for live sources, max(8, max_batch) for
        others); a source's own ``queue_size`` wins.
    preprocess_threads: decode/resize workers (1 keeps each source's records in frame order).
    max_side: frames whose longer side exceeds this are scaled down right after decoding (large
        JPEGs are decoded at reduced size directly), bounding memory for huge images; overlays
        are drawn at the reduced size.
    output_capacity: scored records waiting for the consumer before scoring pauses (records of
        dropped or unreadable frames are small and never wait, so a slow consumer makes live
        sources drop rather than stall).
    stop_when_done: end the record stream when every source has finished (False: keep running,
        for sources added later, until :meth:`stop`).
    source_options: options for the sources made from specs (``retries``, ``timeout_s``,
        ``backoff``, ``settle_s``, ...).

    Iterate over the pipeline for records (it starts on first use); use it as a context manager
    to stop it cleanly. :meth:`counters` gives live totals; :meth:`add_source` and
    :meth:`remove_source` work while it runs.
    """

    def __init__(self, engine: Any = None, sources: Iterable[SourceSpec] | SourceSpec = (), *,
                 max_batch: int = 32, max_wait_ms: float = 20.0, explain: bool = False,
                 keep_frames: bool = False, queue_size: int | None = None,
                 preprocess_threads: int = 1, max_side: int = 4096, output_capacity: int = 1024,
                 stop_when_done: bool = True, source_options: dict[str, Any] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch: expected >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms: expected >= 0, got {max_wait_ms}")
        if preprocess_threads < 1:
            raise ValueError(f"preprocess_threads: expected >= 1, got {preprocess_threads}")
        if queue_size is not None and queue_size < 1:
            raise ValueError(f"queue_size: expected >= 1, got {queue_size}")
        if max_side < 224:
            raise ValueError(f"max_side: expected >= 224, got {max_side}")
        if output_capacity < 1:
            raise ValueError(f"output_capacity: expected >= 1, got {output_capacity}")
        if isinstance(sources, (str, int, Source)) or hasattr(sources, "__fspath__"):
            sources = [sources]  # type: ignore[list-item]
        specs = list(sources)  # type: ignore[arg-type]
        self._source_options = dict(source_options or {})
        opened = [open_source(spec, **self._source_options) for spec in specs]  # fail early

        self._owns_engine = engine is None or isinstance(engine, str)
        if self._owns_engine:
            from maskrt.engine import Engine

            engine = Engine(backend=engine) if engine else Engine()
        self.engine = engine
        self.max_batch = max_batch
        self.max_wait_ms = float(max_wait_ms)
        self.explain = explain
        self.keep_frames = keep_frames
        self.queue_size = queue_size
        self.preprocess_threads = preprocess_threads
        self.max_side = max_side
        self.output_capacity = output_capacity
        self.stop_when_done = stop_when_done

        self._lock = threading.Lock()
        self._items_cv = threading.Condition(self._lock)     # frames queued for preprocessing
        self._prepared_cv = threading.Condition(self._lock)  # prepared frames / space for them
        self._results_cv = threading.Condition(self._lock)   # backend outputs / space for them
        self._output_cv = threading.Condition(self._lock)    # records for the consumer
        self._out_space_cv = threading.Condition(self._lock)  # space in the output queue
        self._states: dict[str, _SourceState] = {}  # every source ever added, removed ones too
        self._order: list[_SourceState] = []        # round-robin order of the preprocessing
        self._rr = 0
        self._prepared: deque[_Item] = deque()
        self._prepared_capacity = max_batch  # the next batch, ready while one runs
        self._results: deque[tuple[list[_Item], Any, Any, str | None]] = deque()
        self._output: deque[Record] = deque()
        self._results_waiting = 0  # records from the backend in _output (output_capacity)
        self._busy = 0
        self._workers_alive = 0
        self._inference_alive = False
        self._post_done = False
        self._threads: list[threading.Thread] = []
        self._started = False
        self._stopping = False
        self._aborting = False
        self._input_closed = False
        self._finished = False
        self._t_start: float | None = None
        self._t_end: float | None = None
        self._batches = 0
        self._batched_frames = 0
        self._largest_batch = 0
        self._mixed_batches = 0
        self._backend_seconds = 0.0
        self._overlay_error_logged = False
        for source in opened:
            self._register(source)

    # ------------------------------------------------------------------ public API

    def start(self) -> "Pipeline":
        """Start the threads (iteration and ``with`` do this). Idempotent."""
        with self._lock:
            if self._started:
                return self
            if self._finished:
                raise RuntimeError("pipeline: already stopped; create a new one")
            self._started = True
            self._t_start = time.perf_counter()
            states = list(self._states.values())
            self._workers_alive = self.preprocess_threads
            self._inference_alive = True
        for state in states:
            self._start_reader(state)
        for i in range(self.preprocess_threads):
            self._spawn(self._worker_loop, f"maskrt-preprocess-{i}")
        self._spawn(self._inference_loop, "maskrt-inference")
        self._spawn(self._post_loop, "maskrt-postprocess")
        with self._lock:
            self._check_input_closed()
        return self

    def add_source(self, spec: SourceSpec, **options: Any) -> str:
        """Add a source (spec or Source) to the running pipeline; returns its id (made unique)."""
        source = open_source(spec, **{**self._source_options, **options})
        with self._lock:
            if self._input_closed or self._stopping:
                raise RuntimeError("pipeline: cannot add a source after the pipeline finished or "
                                   "was stopped (use stop_when_done=False to add sources later)")
        state = self._register(source)
        if self._started:
            self._start_reader(state)
        return state.id

    def remove_source(self, source_id: str, *, drain: bool = False,
                      timeout: float = 10.0) -> dict[str, Any]:
        """Stop a source's reader and account for its frames.

        Frames still in its queue are scored with ``drain=True``, else recorded as ``dropped``
        (reason: source removed). Frames already being preprocessed or in a batch are scored.
        Returns the source's counters at that moment (see :meth:`counters`; ``in_flight`` frames
        come out as records shortly after).
        """
        with self._lock:
            state = self._states.get(source_id)
            if state is None or state.removed:
                active = [s.id for s in self._states.values() if not s.removed]
                raise KeyError(f"remove_source: no active source {source_id!r}; active: {active}")
            state.removed = True
            state.discard_reason = REASON_REMOVED
            state.stop.set()
            if not drain:
                state.discard = True
                self._flush_queue(state, REASON_REMOVED)
            state.space.notify_all()
        if state.thread is not None:
            state.thread.join(timeout)
            if state.thread.is_alive():
                log.warning("%s: reader still busy %.1f s after removal; its frames will be "
                            "recorded as dropped", source_id, timeout)
                with self._lock:
                    state.discard = True
                    self._flush_queue(state, REASON_REMOVED)
        with self._lock:
            state.source.state = "removed"
            self._check_input_closed()
            return self._source_counters(state, time.perf_counter())

    def stop(self, *, drain: bool = False, timeout: float = 15.0) -> None:
        """Stop reading and shut every thread down (idempotent).

        drain=False: frames still queued or prepared are recorded as ``dropped`` (reason:
        pipeline stopped); batches already at the backend finish. drain=True: everything read so
        far is scored first. Records not yet consumed stay available to iteration.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            if not self._started:
                self._finished = True
                self._stopping = True
                self._output_cv.notify_all()
                started = False
            else:
                started = True
                self._stopping = True
                for state in self._states.values():
                    state.stop.set()
                    if not drain:
                        state.discard = True
                        state.discard_reason = (REASON_REMOVED if state.removed
                                                else REASON_STOPPED)
                if not drain:
                    self._abort_locked()
                self._check_input_closed()
                self._notify_all()
        if started:
            for state in list(self._states.values()):
                if state.thread is not None:
                    state.thread.join(max(0.0, deadline - time.monotonic()))
            with self._lock:
                stuck = [s.id for s in self._states.values() if s.thread and s.thread.is_alive()]
                if stuck:
                    log.warning("readers of %s did not stop within %.1f s; their frames are "
                                "recorded as dropped", stuck, timeout)
                    for state in self._states.values():
                        state.discard = True
                        state.reader_done = True
                        self._flush_queue(state, REASON_STOPPED)
                    self._check_input_closed()
                    self._notify_all()
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            with self._lock:
                alive = [t.name for t in self._threads if t.is_alive()]
                if alive:
                    log.warning("pipeline threads %s still running after %.1f s", alive, timeout)
                self._finished = True
                self._t_end = self._t_end or time.perf_counter()
                self._output_cv.notify_all()
        if self._owns_engine:
            self.engine.close()

    close = stop

    def get(self, timeout: float | None = None) -> Record | None:
        """The next record; None when ``timeout`` seconds passed without one or the pipeline has
        finished and every record was taken (then :attr:`finished` is True)."""
        if not self._started and not self._finished:
            self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._output:
                if self._finished:
                    return None
                remaining = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
                if remaining <= 0:
                    return None
                self._output_cv.wait(remaining)
            record = self._output.popleft()
            if record.__dict__.pop("_from_backend", False):
                self._results_waiting -= 1
                self._out_space_cv.notify()
            return record

    def __iter__(self) -> Iterator[Record]:
        while True:
            record = self.get()
            if record is None:
                return
            yield record

    @property
    def finished(self) -> bool:
        """Every thread is done and every record was taken."""
        with self._lock:
            return self._finished and not self._output

    @property
    def source_ids(self) -> list[str]:
        with self._lock:
            return [s.id for s in self._states.values() if not s.removed]

    def sources(self) -> dict[str, Source]:
        """Every source ever added (removed ones too), by id."""
        with self._lock:
            return {s.id: s.source for s in self._states.values()}

    def counters(self) -> dict[str, Any]:
        """Live counters: per source and in total ``read``, ``scored``, ``dropped``, ``failed``,
        ``in_flight`` (read but not yet recorded), plus per source its kind, state, frames/s
        scored over the last few seconds, reconnects, and drop/failure reasons."""
        now = time.perf_counter()
        with self._lock:
            per = {s.id: self._source_counters(s, now) for s in self._states.values()}
            total = empty_counts()
            for counts in per.values():
                for key in total:
                    total[key] += counts[key]
            total["in_flight"] = total["read"] - total[SCORED] - total[DROPPED] - total[FAILED]
            start = self._t_start or now
            elapsed = (self._t_end or now) - start if self._started else 0.0
            return {
                "sources": per,
                "total": total,
                "elapsed_s": elapsed,
                "fps": total[SCORED] / elapsed if elapsed > 0 else 0.0,
                "batches": self._batches,
                "mean_batch_size": self._batched_frames / self._batches if self._batches else 0.0,
                "largest_batch": self._largest_batch,
                "mixed_batches": self._mixed_batches,
                "backend_busy_s": self._backend_seconds,
                "finished": self._finished,
            }

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ sources and readers

    def _register(self, source: Source) -> _SourceState:
        capacity = source.queue_size or self.queue_size or (
            LIVE_QUEUE_SIZE if source.live else max(8, self.max_batch))
        with self._lock:
            base, k = source.id, 2
            while source.id in self._states:
                source.id = f"{base}#{k}"
                k += 1
            state = _SourceState(source, capacity, self._lock)
            self._states[source.id] = state
            self._order.append(state)
        return state

    def _start_reader(self, state: _SourceState) -> None:
        state.thread = threading.Thread(target=self._reader_loop, args=(state,), daemon=True,
                                        name=f"maskrt-reader-{state.id}")
        state.thread.start()

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _reader_loop(self, state: _SourceState) -> None:
        source = state.source
        frames = None
        try:
            frames = source.frames(state.stop)
            for frame in frames:
                frame.t_read = time.perf_counter()
                if not self._put(state, frame):
                    break
        except Exception as err:  # a bug or an unexpected error in one source: record, go on
            log.exception("%s: reader failed", state.id)
            source.state = "failed"
            source.last_error = f"{state.id}: reader error: {type(err).__name__}: {err}"
            self._put(state, Frame(state.next_index, time.time(), error=source.last_error,
                                   t_read=time.perf_counter()))
        finally:
            if frames is not None:
                try:
                    frames.close()
                except Exception:  # noqa: BLE001 - closing must not take the reader down
                    log.exception("%s: error while closing the source", state.id)
            with self._lock:
                state.reader_done = True
                self._check_input_closed()
                self._check_finished()
                self._notify_all()

    def _put(self, state: _SourceState, frame: Frame) -> bool:
        """Account for a frame just read and queue it; False when the reader should stop."""
        with self._lock:
            state.counts["read"] += 1
            state.next_index = max(state.next_index, frame.index + 1)
            item = _Item(state, frame)
            if frame.error is not None:
                self._emit(self._record(item, FAILED, frame.error))
                return True
            if state.discard:
                self._emit(self._record(item, DROPPED, state.discard_reason))
                return False
            if len(state.queue) >= state.capacity:
                if state.source.live:
                    self._emit(self._record(state.queue.popleft(), DROPPED, REASON_QUEUE_FULL))
                else:
                    while len(state.queue) >= state.capacity and not state.discard:
                        state.space.wait(0.25)
                    if state.discard:
                        self._emit(self._record(item, DROPPED, state.discard_reason))
                        return False
            state.queue.append(item)
            self._items_cv.notify()
            return True

    def _flush_queue(self, state: _SourceState, reason: str) -> None:
        while state.queue:
            self._emit(self._record(state.queue.popleft(), DROPPED, reason))
        state.space.notify_all()

    def _abort_locked(self) -> None:
        self._aborting = True
        for state in self._states.values():
            self._flush_queue(state, state.discard_reason)
        while self._prepared:
            item = self._prepared.popleft()
            self._emit(self._record(item, DROPPED, item.state.discard_reason))

    def _check_input_closed(self) -> None:
        """Input is closed (no frame will ever be queued again) once every reader is done and the
        pipeline is stopping or stops when its sources are done."""
        if self._input_closed or not self._started:
            return
        if (self._stopping or self.stop_when_done) and all(
                s.reader_done or (s.thread is None and s.removed) for s in self._states.values()):
            self._input_closed = True
            self._notify_all()

    def _check_finished(self) -> None:
        """Finished once no thread can produce another record (lock held)."""
        if (self._post_done and self._input_closed and self._workers_alive == 0
                and not self._finished):
            self._finished = True
            self._t_end = time.perf_counter()
            self._output_cv.notify_all()

    def _notify_all(self) -> None:
        for cv in (self._items_cv, self._prepared_cv, self._results_cv, self._output_cv,
                   self._out_space_cv):
            cv.notify_all()
        for state in self._states.values():
            state.space.notify_all()

    # ------------------------------------------------------------------ preprocessing

    def _take(self) -> _Item | None:
        n = len(self._order)
        for k in range(n):
            state = self._order[(self._rr + k) % n]
            if state.queue:
                self._rr = (self._rr + k + 1) % n
                item = state.queue.popleft()
                state.space.notify()
                return item
        if n > 64:  # forget drained, removed sources so the round robin stays short
            self._order = [s for s in self._order
                           if s.queue or not (s.removed and s.reader_done)]
        return None

    def _worker_loop(self) -> None:
        try:
            while True:
                with self._lock:
                    item = self._take()
                    while item is None:
                        if self._input_closed or self._aborting:
                            return
                        self._items_cv.wait(0.25)
                        item = self._take()
                    self._busy += 1
                reason = None
                try:
                    item.input, item.original = self._prepare(item.frame)
                except ImageError as err:
                    reason = str(err)
                except Exception as err:  # noqa: BLE001 - one bad frame must not stop the stream
                    reason = f"preprocessing error: {type(err).__name__}: {err}"
                item.frame.data = None
                with self._lock:
                    self._busy -= 1
                    if reason is not None:
                        self._emit(self._record(item, FAILED, reason))
                        continue
                    while len(self._prepared) >= self._prepared_capacity and not self._aborting:
                        self._prepared_cv.wait(0.25)
                    if self._aborting:
                        self._emit(self._record(item, DROPPED, item.state.discard_reason))
                        continue
                    item.t_prepared = time.perf_counter()
                    self._prepared.append(item)
                    self._prepared_cv.notify_all()
        finally:
            with self._lock:
                self._workers_alive -= 1
                self._check_finished()
                self._prepared_cv.notify_all()

    def _prepare(self, frame: Frame) -> tuple[np.ndarray, np.ndarray | None]:
        what = frame.uri or f"frame {frame.index}"
        if frame.image is not None:
            image = to_bgr8(frame.image, what=what)
        else:
            image = decode_bytes(frame.data or b"", what=what, max_side=self.max_side)
        image = limit_side(image, self.max_side)
        keep = self.explain or self.keep_frames
        return np.ascontiguousarray(resize_to_input(image)), (image if keep else None)

    # ------------------------------------------------------------------ inference

    def _inference_loop(self) -> None:
        max_wait = self.max_wait_ms / 1000.0
        try:
            while True:
                with self._lock:
                    while not self._prepared:
                        if self._aborting or self._workers_alive == 0:
                            return
                        self._prepared_cv.wait(0.25)
                    deadline = self._prepared[0].t_prepared + max_wait
                    while len(self._prepared) < self.max_batch and not self._aborting:
                        if self._upstream_exhausted():
                            break
                        remaining = deadline - time.perf_counter()
                        if remaining <= 0:
                            break
                        self._prepared_cv.wait(remaining)
                    if self._aborting:
                        return
                    n = min(self.max_batch, len(self._prepared))
                    items = [self._prepared.popleft() for _ in range(n)]
                    self._prepared_cv.notify_all()
                batch = np.stack([item.input for item in items])
                for item in items:
                    item.input = None
                error = None
                logits = features = None
                t0 = time.perf_counter()
                try:
                    logits, features = self.engine.infer(batch)
                except Exception as err:  # noqa: BLE001 - a backend error fails this batch only
                    log.exception("backend failed on a batch of %d", n)
                    error = f"backend error: {type(err).__name__}: {err}"
                elapsed = time.perf_counter() - t0
                with self._lock:
                    self._batches += 1
                    self._batched_frames += n
                    self._largest_batch = max(self._largest_batch, n)
                    if len({item.state.id for item in items}) > 1:
                        self._mixed_batches += 1
                    self._backend_seconds += elapsed
                    while len(self._results) >= 2 and not self._aborting:
                        self._results_cv.wait(0.25)
                    self._results.append((items, logits, features, error))
                    self._results_cv.notify_all()
        finally:
            with self._lock:
                self._inference_alive = False
                self._results_cv.notify_all()

    def _upstream_exhausted(self) -> bool:
        """No more frames can be prepared: input closed, queues empty, no worker busy."""
        return (self._input_closed and self._busy == 0
                and not any(s.queue for s in self._order))

    # ------------------------------------------------------------------ results

    def _post_loop(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._results:
                        if not self._inference_alive:
                            return
                        self._results_cv.wait(0.25)
                    items, logits, features, error = self._results.popleft()
                    self._results_cv.notify_all()
                try:
                    records = self._make_records(items, logits, features, error)
                except Exception as err:  # noqa: BLE001 - account for the batch whatever happens
                    log.exception("postprocessing failed on a batch of %d", len(items))
                    reason = f"postprocessing error: {type(err).__name__}: {err}"
                    records = [self._record(item, FAILED, reason) for item in items]
                with self._lock:
                    for record, item in zip(records, items):
                        while (self._results_waiting >= self.output_capacity
                               and not (self._aborting or self._stopping)):
                            self._out_space_cv.wait(0.25)
                        self._emit(record, item.state)
                        self._results_waiting += 1
                        record._from_backend = True  # type: ignore[attr-defined]
        finally:
            with self._lock:
                self._post_done = True
                self._check_finished()

    def _make_records(self, items: list[_Item], logits: Any, features: Any,
                      error: str | None) -> list[Record]:
        if error is not None:
            return [self._record(item, FAILED, error) for item in items]
        overlay_error = None
        results = None
        if self.explain:
            try:
                results = self.engine.results_from(logits, features,
                                                   [item.original for item in items])
            except Exception as err:  # noqa: BLE001 - score even when overlays cannot be drawn
                overlay_error = f"no overlay: {type(err).__name__}: {err}"
                if not self._overlay_error_logged:
                    self._overlay_error_logged = True
                    log.error("explain: overlays cannot be drawn (%s); scoring without them", err)
        if results is None:
            results = self.engine.results_from(logits)
        records = []
        for item, result in zip(items, results):
            record = self._record(item, SCORED, overlay_error)
            record.label = result.label
            record.p_with_mask = result.p_with_mask
            record.p_without_mask = result.p_without_mask
            record.overlay = result.overlay
            if self.keep_frames:
                record.frame = item.original
            item.original = None
            records.append(record)
        return records

    def _record(self, item: _Item, status: str, reason: str | None) -> Record:
        frame = item.frame
        return Record(source_id=item.state.id, frame_index=frame.index,
                      source_timestamp=frame.timestamp, status=status, reason=reason,
                      latency_ms=(time.perf_counter() - frame.t_read) * 1000.0, uri=frame.uri)

    def _emit(self, record: Record, state: _SourceState | None = None) -> None:
        """Count a record and hand it to the consumer (lock held)."""
        state = state or self._states[record.source_id]
        state.counts[record.status] += 1
        if record.status == SCORED:
            state.scored_times.append(time.perf_counter())
        elif record.reason is not None and (len(state.reasons) < MAX_REASONS
                                            or record.reason in state.reasons):
            state.reasons[record.reason] += 1
        self._output.append(record)
        self._output_cv.notify()

    def _source_counters(self, state: _SourceState, now: float) -> dict[str, Any]:
        times = state.scored_times
        while times and times[0] < now - RATE_WINDOW_S:
            times.popleft()
        counts = state.counts
        source = state.source
        window = min(RATE_WINDOW_S, now - (self._t_start or now)) or 1.0
        return {
            **counts,
            "in_flight": counts["read"] - counts[SCORED] - counts[DROPPED] - counts[FAILED],
            "kind": source.kind,
            "live": source.live,
            "state": "removed" if state.removed else source.state,
            "fps": len(times) / window,
            "queued": len(state.queue),
            "reconnects": source.reconnects,
            "connect_failures": source.connect_failures,
            "last_error": source.last_error,
            "reasons": dict(state.reasons.most_common()),
        }


# --------------------------------------------------------------------------- decoding helpers

def decode_bytes(data: bytes, *, what: str = "image", max_side: int = 4096) -> np.ndarray:
    """Encoded image bytes -> uint8[H, W, 3] BGR, with the pipeline's checks.

    Raises ImageError for empty, truncated (JPEG without end marker, PNG without IEND) or
    undecodable data. Images whose header says they exceed ``max_side`` are decoded at 1/2, 1/4
    or 1/8 size (JPEG decodes straight to the smaller size, so a 10000x10000 JPEG never exists at
    full size in memory).
    """
    import cv2

    if len(data) == 0:
        raise ImageError(f"{what}: expected an encoded image, got 0 bytes")
    truncated = truncation_reason(data)
    if truncated is not None:
        raise ImageError(f"{what}: {truncated}")
    flag = cv2.IMREAD_UNCHANGED
    size = image_size(data)
    if size is not None and max(size) > max_side:
        factor = next((f for f in (2, 4) if max(size) / f <= max_side), 8)
        flag = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                8: cv2.IMREAD_REDUCED_COLOR_8}[factor]
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if image is None:
        raise ImageError(f"{what}: not a decodable image ({len(data)} bytes; not an image, or a "
                         "corrupt one)")
    return to_bgr8(image, what=what)


def limit_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """Scale ``image`` down (area averaging, aspect kept) so its longer side is <= max_side."""
    import cv2

    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
