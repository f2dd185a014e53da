"""The accounting of a pipeline: every frame read ends in exactly one status, counted here.

The :class:`Ledger` is the only place that counts frames and the only way records reach the
consumer, so the identity ``read == scored + dropped + failed`` (per source and overall) holds by
construction once nothing is in flight. The summary of ``maskrt score`` is built from these
counters, not recounted from records.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import Counter, deque
from typing import Any, Iterable

import numpy as np

from maskrt.labels import CLASSES
from maskrt.stream.queue import BoundedQueue
from maskrt.stream.records import DROPPED, FAILED, SCORED, Record, empty_counts
from maskrt.stream.work import FrameTask, SourceHandle

#: at most this many distinct failure/drop reasons are kept per source
MAX_REASONS = 100
#: window of the per-source frames/s figures
RATE_WINDOW_S = 5.0
#: a pause between frame events (a read, a record) up to this long still counts as frames
#: flowing (a 1 fps camera); a longer one with nothing in flight is time spent waiting
FLOW_GAP_S = 2.0
#: source states that say the source's reader is done
_DONE_STATES = ("finished", "failed", "removed")


class FlowClock:
    """The time frames were actually flowing: between two frame events, the pipeline was busy
    if a frame was in flight, or the pause was short (a slow source still delivering). Long
    idle pauses - waiting on a dead camera after the files are done - are left out, so
    throughput is not diluted by them."""

    def __init__(self) -> None:
        self.flowing_s = 0.0
        self._last: float | None = None

    def note(self, now: float, busy: bool) -> None:
        """A frame event at ``now``; ``busy``: frames were in flight since the last one."""
        if self._last is not None and (busy or now - self._last <= FLOW_GAP_S):
            self.flowing_s += now - self._last
        self._last = now

    def current(self, now: float, busy: bool) -> float:
        """flowing_s including the pause in progress when frames are in flight."""
        if busy and self._last is not None:
            return self.flowing_s + now - self._last
        return self.flowing_s


class _Account:
    def __init__(self, handle: SourceHandle) -> None:
        self.handle = handle
        self.counts = empty_counts()
        self.labels: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.scored_times: deque[float] = deque()
        self.next_index = 0

    def note_reason(self, reason: str | None) -> None:
        if reason is not None and (len(self.reasons) < MAX_REASONS or reason in self.reasons):
            self.reasons[reason] += 1


class Ledger:
    """Per-source counters, latencies and labels; hands every record to ``output``."""

    def __init__(self, output: BoundedQueue[Record], max_frames: int | None = None) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames: expected None or >= 1, got {max_frames}")
        self.output = output
        self.max_frames = max_frames
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}
        self._latencies = array("d")  # of scored frames, ms
        self._read_total = 0
        self._in_flight = 0
        self._flow = FlowClock()
        #: the frames in flight, by (source id, frame index): what abort() records as dropped
        self._flying: dict[tuple[str, int], FrameTask] = {}
        self._aborted = False
        #: records counted whose put into ``output`` has not returned yet (abort waits for them)
        self._emitting = 0
        self._emitted = threading.Condition(self._lock)

    def open(self, handle: SourceHandle) -> None:
        with self._lock:
            self._accounts[handle.id] = _Account(handle)

    def read(self, task: FrameTask) -> bool:
        """A source yielded ``task``'s frame: it is now in flight. False (and not counted) once
        ``max_frames`` were read: the reader stops instead."""
        with self._lock:
            if self.limit_reached or self._aborted:
                return False
            account = self._accounts[task.source_id]
            account.counts["read"] += 1
            self._flying[_key(task)] = task
            account.next_index = max(account.next_index, task.frame.index + 1)
            self._flow.note(time.perf_counter(), self._in_flight > 0)
            self._in_flight += 1
            self._read_total += 1
            if self.limit_reached:
                # Readers waiting for input (a drop folder, a silent stream) would not notice
                # the limit until their next frame: tell every one to stop now.
                for other in self._accounts.values():
                    other.handle.stop.set()
        return True

    @property
    def limit_reached(self) -> bool:
        return self.max_frames is not None and self._read_total >= self.max_frames

    def flowing_s(self) -> float:
        """Seconds frames were flowing so far (see :class:`FlowClock`)."""
        with self._lock:
            return self._flow.current(time.perf_counter(), self._in_flight > 0)

    def next_index(self, source_id: str) -> int:
        with self._lock:
            return self._accounts[source_id].next_index

    def drop(self, task: FrameTask, reason: str) -> None:
        task.release()
        self._finish(task, DROPPED, [frame_record(task, DROPPED, reason)])

    def fail(self, task: FrameTask, reason: str) -> None:
        task.release()
        self._finish(task, FAILED, [frame_record(task, FAILED, reason)])

    def scored(self, task: FrameTask, records: list[Record]) -> None:
        """The frame was scored; ``records``: one per region (or the one region-less record)."""
        self._finish(task, SCORED, records)

    def _finish(self, task: FrameTask, status: str, records: list[Record]) -> None:
        with self._lock:
            if self._aborted:  # abort() recorded this frame as dropped already
                return
            self._flying.pop(_key(task), None)
            account = self._accounts[task.source_id]
            account.counts[status] += 1
            self._flow.note(time.perf_counter(), True)
            self._in_flight -= 1
            if status == SCORED:
                account.scored_times.append(time.perf_counter())
                self._latencies.append(records[0].latency_ms)
                account.labels.update(r.label for r in records if r.label is not None)
            account.note_reason(records[0].reason)
            self._emitting += 1
        try:
            # Dropped and failed records are small and never wait for the consumer, so a slow
            # consumer makes live sources drop rather than stall; scored ones wait for room.
            for record in records:
                self.output.put(record, force=status != SCORED)
        finally:
            with self._lock:
                self._emitting -= 1
                self._emitted.notify_all()

    def abort(self, reason: str, timeout: float = 5.0) -> int:
        """Give up on the frames in flight without waiting for them (a second Ctrl-C): each is
        recorded as dropped with ``reason`` now; from then on nothing is read, counted or
        recorded (a thread still busy with a frame finishes into nothing), and ``output`` is
        closed once every record counted before has reached it, so the consumer gets exactly the
        records of what the counters say. Returns the number of frames given up on."""
        self.output.overflow()  # records on their way must not wait for room
        with self._lock:
            if self._aborted:
                return 0
            self._aborted = True
            given_up = list(self._flying.values())
            self._flying.clear()
            records = []
            for task in given_up:
                account = self._accounts[task.source_id]
                account.counts[DROPPED] += 1
                account.note_reason(reason)
                self._in_flight -= 1
                records.append(frame_record(task, DROPPED, reason))
            # A record counted just before is put outside the lock: it must be in before the end.
            self._emitted.wait_for(lambda: self._emitting == 0, timeout)
        for record in records:
            self.output.put(record, force=True)
        self.output.close()
        return len(given_up)

    @property
    def aborted(self) -> bool:
        return self._aborted

    def source_counters(self, source_id: str, t_start: float | None) -> dict[str, Any]:
        now = time.perf_counter()
        with self._lock:
            account = self._accounts[source_id]
            times = account.scored_times
            while times and times[0] < now - RATE_WINDOW_S:
                times.popleft()
            counts = dict(account.counts)
            window = min(RATE_WINDOW_S, now - (t_start or now)) or 1.0
            source = account.handle.source
            in_flight = counts["read"] - counts[SCORED] - counts[DROPPED] - counts[FAILED]
            return {
                **counts,
                "in_flight": in_flight,
                "kind": source.kind,
                "live": source.live,
                "state": shown_state(account.handle, in_flight),
                "fps": len(times) / window,
                "waiting_s": round(source.waiting_s(), 3),
                "reconnects": source.reconnects,
                "connect_failures": source.connect_failures,
                "skipped_files": source.skipped_files,
                "last_error": source.last_error,
                "reasons": dict(account.reasons.most_common()),
                "labels": {c: account.labels[c] for c in CLASSES},
            }

    def source_ids(self) -> list[str]:
        with self._lock:
            return list(self._accounts)

    def only_in_flight(self, tasks: list[FrameTask]) -> bool:
        """Whether ``tasks`` (frames of one source, not yet recorded) are the last its source
        will give: the reader is done and nothing else of the source is in flight."""
        with self._lock:
            counts = self._accounts[tasks[0].source_id].counts
            in_flight = counts["read"] - counts[SCORED] - counts[DROPPED] - counts[FAILED]
            return tasks[0].handle.reader_done and in_flight == len(tasks)

    def latencies(self) -> np.ndarray:
        with self._lock:
            # a copy: a view would pin the array, and the next scored frame could not append
            # to it (BufferError) while the caller holds the view
            return np.array(self._latencies, dtype=np.float64)


def _key(task: FrameTask) -> tuple[str, int]:
    """A frame's identity (its records'): a stage may pass on another FrameTask object."""
    return task.source_id, task.frame.index


def sum_counts(per_source: Iterable[dict[str, Any]]) -> dict[str, int]:
    """The sources' read/scored/dropped/failed counts added up, and ``in_flight``."""
    total = empty_counts()
    for counts in per_source:
        for key in total:
            total[key] += counts[key]
    total["in_flight"] = total["read"] - total[SCORED] - total[DROPPED] - total[FAILED]
    return total


def shown_state(handle: SourceHandle, in_flight: int) -> str:
    """The state to show for a source: a source that is done reading is "scoring" until its
    last frame was recorded, and only then "finished" (or "failed"); a reader that ended
    without its source saying why (stopped, frame limit) is "stopped"."""
    if handle.removed:
        return "removed"
    state = handle.source.state
    if state in _DONE_STATES or handle.reader_done:
        if in_flight > 0:
            return "scoring"
        if state not in _DONE_STATES:
            return "stopped"
    return state


def frame_record(task: FrameTask, status: str, reason: str | None, **fields: Any) -> Record:
    """The record of ``task``'s frame (no region yet): its identity, status, reason, latency."""
    frame = task.frame
    return Record(source_id=task.source_id, frame_index=frame.index,
                  source_timestamp=frame.timestamp, status=status, reason=reason,
                  latency_ms=(time.perf_counter() - frame.t_read) * 1000.0, uri=frame.uri,
                  **fields)
