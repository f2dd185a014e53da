"""Ledger.abort (a second Ctrl-C in ``maskrt score``): the frames in flight are recorded as
dropped at once, nothing is counted after it, and the record stream ends with exactly the
records of what the counters say."""

from __future__ import annotations

import time

import numpy as np

from maskrt.stream.accounting import Ledger, frame_record
from maskrt.stream.queue import CLOSED, BoundedQueue
from maskrt.stream.records import SCORED
from maskrt.stream.sources.base import Frame, Source
from maskrt.stream.work import FrameTask, SourceHandle


def _drain(output: BoundedQueue) -> list:
    records = []
    while True:
        item = output.get(timeout=1.0)
        assert item is not None, "the record stream did not end"
        if item is CLOSED:
            return records
        records.append(item)


def _ledger_with_frames_read(capacity: int, frames: int):
    """A ledger over an output queue of ``capacity`` records, source "cam" open and ``frames``
    frames read: (output, ledger, handle, tasks)."""
    output: BoundedQueue = BoundedQueue(capacity, name="records")
    ledger = Ledger(output)
    handle = SourceHandle(Source("cam"))
    ledger.open(handle)
    tasks = [FrameTask(handle, Frame(i, time.time(), image=np.zeros((4, 4, 3), np.uint8)))
             for i in range(frames)]
    for task in tasks:
        assert ledger.read(task)
    return output, ledger, handle, tasks


def test_abort_records_the_frames_in_flight_and_counts_nothing_after() -> None:
    # the output queue is full once 2 records are in: abort's records still go in
    output, ledger, handle, tasks = _ledger_with_frames_read(capacity=2, frames=4)
    ledger.drop(tasks[0], "late")
    ledger.scored(tasks[1], [frame_record(tasks[1], SCORED, None)])
    assert ledger.abort("aborted (second SIGINT)") == 2
    # A thread that was still busy with a frame finishes into nothing; nothing more is read.
    ledger.scored(tasks[2], [frame_record(tasks[2], SCORED, None)])
    late = FrameTask(handle, Frame(4, time.time(), image=np.zeros((4, 4, 3), np.uint8)))
    assert not ledger.read(late)
    assert ledger.abort("again") == 0
    records = _drain(output)
    counts = ledger.source_counters("cam", None)
    assert (counts["read"], counts["scored"], counts["dropped"], counts["in_flight"]) == (4, 1, 3, 0)
    assert sorted((r.frame_index, r.status) for r in records) == [
        (0, "dropped"), (1, "scored"), (2, "dropped"), (3, "dropped")]
    assert {r.reason for r in records if r.frame_index in (2, 3)} == {"aborted (second SIGINT)"}


def test_latencies_are_a_copy_that_scoring_can_go_on_past() -> None:
    # The live view asks for the summary (latencies) from its own threads while frames are
    # scored: a view of the ledger's array would make the next append raise BufferError.
    _, ledger, _, tasks = _ledger_with_frames_read(capacity=8, frames=2)
    ledger.scored(tasks[0], [frame_record(tasks[0], SCORED, None)])
    held = ledger.latencies()
    ledger.scored(tasks[1], [frame_record(tasks[1], SCORED, None)])
    assert len(held) == 1 and len(ledger.latencies()) == 2
