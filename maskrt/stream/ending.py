"""When a pipeline's record stream ends: only once no thread can count a frame any more.

The consumer closes the sinks (and ``maskrt score`` writes summary.json) when the record stream
ends, so it must not end while a frame read has no record yet. A stop aborts the queues between
the stages: the stages after a busy one then see their input closed and end before it, and the
frame it holds is recorded (as dropped) only when it is done with it; the stop itself records the
frames it took out of the queues one by one. So the stream ends when the explain stage, every
stage thread and every reader have ended, and no stop or removal is still recording frames it
took out of queues (:meth:`RecordsEnd.discarding`).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator


class RecordsEnd:
    """Closes ``output`` (the record stream) once the explain stage has ended, ``readers_done()``
    is true and nothing entered (a stage thread, a discard) is still busy."""

    def __init__(self, output: Any, readers_done: Callable[[], bool]) -> None:
        self._output = output
        self._readers_done = readers_done
        self._lock = threading.Lock()
        self._busy = 0
        self._explain_done = False
        #: when the pipeline's work ended (perf_counter): the stream's end, or the stop's
        self.t_end: float | None = None

    def enter(self) -> None:
        """Something that may still record frames (a stage thread) started."""
        with self._lock:
            self._busy += 1

    def leave(self) -> None:
        """It ended: every frame it had is recorded."""
        with self._lock:
            self._busy -= 1
        self.check()

    @contextmanager
    def discarding(self) -> Iterator[None]:
        """Around taking frames out of queues and recording them as dropped (a stop, a source
        removed): the stream does not end before the last of them is recorded."""
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def explain_ended(self) -> None:
        with self._lock:
            self._explain_done = True
        self.check()

    def stamp(self) -> None:
        """The pipeline's work ended now, unless it had already."""
        with self._lock:
            self.t_end = self.t_end or time.perf_counter()

    def check(self) -> None:
        """End the stream if nothing can count a frame any more (each party calls this after
        its own end, so the last one to end sees every other one done)."""
        readers_done = self._readers_done()
        with self._lock:
            done = self._explain_done and self._busy == 0 and readers_done
            if done:
                self.t_end = self.t_end or time.perf_counter()
        if done:
            self._output.close()
