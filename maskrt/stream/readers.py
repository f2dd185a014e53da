"""The read stage: one thread per source puts its frames into the source's own bounded queue, and
the decode stage takes them round-robin across sources (:class:`SourceQueues`), so one busy
source cannot starve the others.

Lossless sources (files, folders, videos, drop folders) get a ``BLOCK`` queue: their reader waits
while the pipeline is busy. Live sources (cameras, streams) get a small ``DROP_OLDEST`` queue: the
oldest frame is recorded as ``dropped`` and the newest is kept.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from maskrt.stream.accounting import Ledger
from maskrt.stream.queue import CLOSED, BoundedQueue, Policy
from maskrt.stream.sources.base import Frame
from maskrt.stream.work import REASON_QUEUE_FULL, FrameTask, SourceHandle

log = logging.getLogger("maskrt.pipeline")

#: queue capacity of a live source (cameras, streams): small, so records stay fresh
LIVE_QUEUE_SIZE = 4


class SourceQueues:
    """The per-source queues, read round-robin; closed once input is closed and all are empty."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._cond = threading.Condition()
        self._queues: dict[str, BoundedQueue[FrameTask]] = {}
        self._order: list[str] = []
        self._next = 0
        self._input_closed = False

    def add(self, handle: SourceHandle, capacity: int) -> BoundedQueue[FrameTask]:
        policy = Policy.DROP_OLDEST if handle.source.live else Policy.BLOCK
        queue: BoundedQueue[FrameTask] = BoundedQueue(
            capacity, policy, on_drop=self.ledger.drop, drop_reason=REASON_QUEUE_FULL,
            cond=self._cond, name=handle.id)
        with self._cond:
            self._queues[handle.id] = queue
            self._order.append(handle.id)
        return queue

    def queue(self, source_id: str) -> BoundedQueue[FrameTask]:
        return self._queues[source_id]

    def close_input(self) -> None:
        """No source will be added or put into any more: consumers finish with what is queued."""
        with self._cond:
            self._input_closed = True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> FrameTask | object | None:
        """The next task round-robin; CLOSED when input is closed and every queue is empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                task = self._take_locked()
                if task is not None:
                    return task
                if self._input_closed:
                    return CLOSED
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def _take_locked(self) -> FrameTask | None:
        n = len(self._order)
        for k in range(n):
            source_id = self._order[(self._next + k) % n]
            task = self._queues[source_id].try_get()
            if task is not None:
                self._next = (self._next + k + 1) % n
                return task
        if n > 64:  # forget drained, closed queues so the round robin stays short
            self._order = [s for s in self._order if len(self._queues[s]) or not self._queues[s].closed]
        return None


def run_reader(handle: SourceHandle, queue: BoundedQueue[FrameTask], ledger: Ledger,
               on_done: Callable[[SourceHandle], None]) -> None:
    """The loop of a source's reader thread: every frame it yields is accounted for."""
    source = handle.source
    frames = None
    try:
        frames = source.frames(handle.stop)
        for frame in frames:
            if not _put(handle, frame, queue, ledger):
                break
    except Exception as err:  # noqa: BLE001 - a bug or unexpected error in one source: record, go on
        log.exception("%s: reader failed", handle.id)
        source.state = "failed"
        source.last_error = f"{handle.id}: reader error: {type(err).__name__}: {err}"
        _put(handle, Frame(ledger.next_index(handle.id), time.time(), error=source.last_error),
             queue, ledger)
    finally:
        if frames is not None:
            try:
                frames.close()
            except Exception:  # noqa: BLE001 - closing must not take the reader down
                log.exception("%s: error while closing the source", handle.id)
        queue.close()
        on_done(handle)


def _put(handle: SourceHandle, frame: Frame, queue: BoundedQueue[FrameTask], ledger: Ledger) -> bool:
    """Account for a frame just read and queue it; False when the reader should stop."""
    frame.t_read = time.perf_counter()
    task = FrameTask(handle, frame)
    if not ledger.read(task):  # the run's frame limit was reached: this frame is not read
        return False
    if frame.error is not None:
        ledger.fail(task, frame.error)
        return True
    if queue.put(task):
        return True
    ledger.drop(task, handle.discard_reason)
    return False
