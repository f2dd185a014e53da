"""Stopping a pipeline while frames are in flight: the record stream (and so the sinks, the
summary) ends only once every frame read has its record.

``maskrt score --duration`` stops the pipeline from a thread of its own while the main thread
goes on taking records; the summary is written when the record stream ends. A frame a stage was
still busy with when the stop aborted the queues, or one the stop had taken out of a queue and
not yet recorded as dropped, must not be counted after the stream ended (seen as read 200,
scored 70, dropped 129 in summary.json, 199 records, and dropped 130 in the live view after).

Each test holds a frame where the race was, waits (on conditions, not on time) until every other
thread that ends the stream is done, and checks the stream is still open; without the fix it
had ended, its sinks closed with a frame in flight.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import numpy as np
import pytest

from maskrt.stream.pipeline import Pipeline as FacesPipeline
from maskrt.stream.sinks import Sink
from maskrt.stream.sources import Frame, Source
from maskrt.stream.stages import Stage
from streaming_fixtures import assert_threads_end, check_accounting, maskrt_threads, shared_engine, write_video

Pipeline = functools.partial(FacesPipeline, regions="frame")

#: how long a test waits for a condition before failing (never reached when things work)
PATIENCE_S = 120.0
STOP_REASON = "pipeline stopped (--duration 25) before the frame was scored"


@pytest.fixture(scope="module")
def engine():
    return shared_engine()


@pytest.fixture(autouse=True)
def no_leaked_threads():
    yield
    assert_threads_end(10)


class _Camera(Source):
    """A live camera that delivers a frame every 10 ms until stopped."""

    kind = "camera"
    live = True
    finite = False

    def frames(self, stop: threading.Event):
        self.state = "streaming"
        index = 0
        while not stop.is_set():
            image = np.full((120, 160, 3), 40 + index % 200, np.uint8)
            yield Frame(index, time.time(), image=image)
            index += 1
            stop.wait(0.01)


class _Gate(Stage):
    """Holds the first frame it gets until opened (a slow face detector on a loaded machine)."""

    name = "gate"

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.opened = threading.Event()

    def process(self, task):
        if not self.holding.is_set():
            self.holding.set()
            assert self.opened.wait(PATIENCE_S), "the test never opened the gate"
        return task


class _EndSink(Sink):
    """What the summary sink sees: the counters when the record stream ends, and the records
    given to the sinks before."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.counters: dict[str, Any] | None = None

    def open(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def write(self, record: Any, frame: Any) -> None:
        self.records.append(record)

    def close(self) -> None:
        self.counters = self.pipeline.counters()


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _ending_threads_done() -> bool:
    """The readers and the explain stage (whose ends closed the record stream) have ended."""
    return not [name for name in maskrt_threads()
                if name == "maskrt-explain" or name.startswith("maskrt-reader-")]


def _take_what_is_there(pipeline: Any) -> None:
    """Give the sinks every record there is now, without waiting for more (with the record
    stream closed, this ends it: the sinks close)."""
    while pipeline.get(timeout=0) is not None:
        pass


def _stop_in_background(pipeline: Any) -> threading.Thread:
    """As ``maskrt score`` stops on --duration: the stop in its own thread, the main thread
    taking records meanwhile."""
    stopper = threading.Thread(target=pipeline.stop, name="maskrt-stop",
                               kwargs={"reason": STOP_REASON, "timeout": PATIENCE_S})
    stopper.start()
    return stopper


def _check_ended_with_every_frame(pipeline: Any, sink: _EndSink,
                                  stopper: threading.Thread) -> None:
    for _ in pipeline:  # the rest, into the sinks
        pass
    stopper.join(PATIENCE_S)
    assert not stopper.is_alive()
    assert sink.counters is not None, "the record stream never ended"
    check_accounting(sink.records, sink.counters)  # as summary.json and records.jsonl saw it
    check_accounting(sink.records, pipeline.counters())  # nothing counted after the end
    assert sink.counters["total"]["dropped"] > 0
    dropped = [r for r in sink.records if r.status == "dropped"]
    assert all(r.reason for r in dropped)


def _gated_pipeline(engine, tmp_path):
    """A live camera and a 40-frame video through a gate stage, with a sink that notes the end."""
    video = str(write_video(tmp_path / "clip.avi", 40))
    gate, sink = _Gate(), _EndSink()
    pipeline = Pipeline(engine, [_Camera(id="camera"), video], stages=[gate], sinks=[sink],
                        batch_size=4, max_wait_ms=5)
    return pipeline, gate, sink


@pytest.mark.parametrize("repeat", range(3))
def test_a_frame_a_stage_holds_when_the_stop_comes_is_recorded_before_the_end(
        engine, tmp_path, repeat):
    pipeline, gate, sink = _gated_pipeline(engine, tmp_path)
    pipeline.start()
    try:
        assert gate.holding.wait(PATIENCE_S)
        _wait_for(lambda: pipeline.counters()["total"]["read"] >= 20, "frames read behind it")
        stopper = _stop_in_background(pipeline)
        _wait_for(_ending_threads_done, "the readers and the explain stage to end")
        _take_what_is_there(pipeline)
        # Without the fix the stream had ended here, the sinks closed, the held frame uncounted.
        assert sink.counters is None, (
            f"the record stream ended with a frame still in a stage: {sink.counters['total']}")
        assert not pipeline.finished
    finally:
        gate.opened.set()
    _check_ended_with_every_frame(pipeline, sink, stopper)
    held = [r for r in sink.records if r.status == "dropped" and r.reason == STOP_REASON]
    assert held, "the held frame is recorded as dropped by the stop"


@pytest.mark.parametrize("repeat", range(3))
def test_frames_the_stop_takes_out_of_the_queues_are_recorded_before_the_end(
        engine, tmp_path, repeat, monkeypatch):
    pipeline, gate, sink = _gated_pipeline(engine, tmp_path)
    resume = threading.Event()
    drop = pipeline.ledger.drop

    def slow_drop(task, reason):
        # The stop takes the decoded frames waiting for the gate out of its queue: the first of
        # them is recorded only once the rest of the pipeline has ended (the gate lets its frame
        # go on, downstream drains, the explain stage ends).
        if threading.current_thread().name == "maskrt-stop" and task.image is not None \
                and not gate.opened.is_set():
            gate.opened.set()
            assert resume.wait(PATIENCE_S), "the test never resumed the stop"
        drop(task, reason)

    monkeypatch.setattr(pipeline.ledger, "drop", slow_drop)
    pipeline.start()
    try:
        assert gate.holding.wait(PATIENCE_S)
        _wait_for(lambda: pipeline.counters()["total"]["read"] >= 20, "frames read behind it")
        _wait_for(lambda: len(pipeline._stage_queues[0]) > 0, "frames waiting for the gate")
        stopper = _stop_in_background(pipeline)
        _wait_for(gate.opened.is_set, "the stop to take the frames waiting for the gate")
        _wait_for(_ending_threads_done, "the readers and the explain stage to end")
        _take_what_is_there(pipeline)
        assert sink.counters is None, (
            f"the record stream ended while the stop was recording frames it took out of the "
            f"queues: {sink.counters['total']}")
        assert not pipeline.finished
    finally:
        gate.opened.set()
        resume.set()
    _check_ended_with_every_frame(pipeline, sink, stopper)


def test_a_frame_still_held_when_the_stop_gives_up_waiting_is_recorded_as_dropped(
        engine, tmp_path):
    pipeline, gate, sink = _gated_pipeline(engine, tmp_path)
    pipeline.start()
    try:
        assert gate.holding.wait(PATIENCE_S)
        pipeline.stop(reason=STOP_REASON, timeout=0.2)  # the gate holds its frame past that
        for _ in pipeline:
            pass
        assert sink.counters is not None
        check_accounting(sink.records, sink.counters)
        given_up = [r for r in sink.records if r.reason == f"{STOP_REASON} (given up 0.2 s after "
                    f"the stop)"]
        assert given_up and all(r.status == "dropped" for r in given_up)
    finally:
        gate.opened.set()
    _wait_for(lambda: not maskrt_threads(), "the gate's thread to end")
    check_accounting(sink.records, pipeline.counters())  # it finished into nothing
