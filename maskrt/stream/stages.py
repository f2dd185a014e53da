"""Stages: the steps a frame goes through, each in its own thread(s) between two bounded queues.

    read (one thread per source) -> decode -> [user stages] -> prepare -> infer -> explain -> records

A per-frame stage is a :class:`Stage`: ``process(task)`` returns the task (changed as it likes) to
pass it on, returns None to drop the frame (a filter; recorded as ``dropped`` with the stage's
name), or raises to fail the frame (recorded as ``failed`` with the error). A detector is a stage
that sets ``task.regions``. Users pass their own stages to ``Pipeline(..., stages=[...])``; they
run after decoding, on the decoded BGR frame (``task.image``), in order.

The infer and explain stages work on batches and live in ``batching.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from maskrt.image import (MAX_PIXELS, MAX_SIDE, ImageError, decode_with_size, limit_side,
                          resize_to_input, to_bgr8)
from maskrt.stream.accounting import Ledger
from maskrt.stream.queue import CLOSED, BoundedQueue
from maskrt.stream.records import Reduction
from maskrt.stream.work import REASON_LATE, FrameTask

log = logging.getLogger("maskrt.pipeline")


class Stage:
    """One step of per-frame work. Subclass it and override :meth:`process`.

    name: used in thread names and in the reasons of the frames it drops or fails.
    threads: how many threads run it (1 keeps each source's frames in order).
    batch_size: above 1, frames already waiting are handed to ``process_batch(tasks)`` together
    (up to this many; it returns one result per task, like ``process``).
    """

    name = "stage"
    threads = 1
    batch_size = 1

    def process(self, task: FrameTask) -> FrameTask | None:
        raise NotImplementedError

    def close(self) -> None:
        """Called once when the pipeline has stopped (release what the stage holds)."""


class DecodeStage(Stage):
    """Encoded bytes or a captured frame -> ``task.image``, uint8[H, W, 3] BGR, at most
    ``max_side`` pixels per side (through :func:`maskrt.image.decode_image`, the one decoder;
    an encoded image over ``max_pixels`` fails undecoded). A frame made smaller gets
    ``task.reduction``, so its records give boxes in the original's pixels."""

    name = "decode"

    def __init__(self, max_side: int = MAX_SIDE, threads: int = 1,
                 max_pixels: int | None = MAX_PIXELS) -> None:
        self.max_side = max_side
        self.threads = threads
        self.max_pixels = max_pixels

    def process(self, task: FrameTask) -> FrameTask:
        frame = task.frame
        what = frame.uri or f"frame {frame.index}"
        if frame.image is not None:
            image = to_bgr8(frame.image, what=what)
            original = (image.shape[1], image.shape[0])
            task.image = limit_side(image, self.max_side)
        else:
            task.image, original = decode_with_size(frame.data or b"", what=what,
                                                    max_side=self.max_side,
                                                    max_pixels=self.max_pixels)
        task.reduction = Reduction.of(original, task.image)
        frame.image = frame.data = None  # the task holds the decoded frame from now on
        return task


class PrepareStage(Stage):
    """One uint8[224, 224, 3] network input per region (the whole frame when no stage set
    regions): the region is squash-resized, as in training. The decoded frame is kept only when
    overlays or annotated videos need it."""

    name = "prepare"

    def __init__(self, keep_image: bool) -> None:
        self.keep_image = keep_image

    def process(self, task: FrameTask) -> FrameTask:
        if task.regions is None:
            task.regions = [task.whole_frame_region()]
            task.whole_frame = True
        for region in task.to_classify:  # tracked faces that reuse a decision need no input
            region.input = resize_to_input(region.crop(task.image))
        if not self.keep_image:
            task.image = None
        task.t_prepared = time.perf_counter()
        return task


def run_stage(stage: Stage, inbox: Any, outbox: BoundedQueue[FrameTask], ledger: Ledger) -> None:
    """The loop of one thread of ``stage``: take a task (or, for a stage with ``batch_size`` > 1,
    the tasks already waiting, up to that many), process, pass on; every task that does not go
    on is accounted for (failed, filtered, or dropped because the pipeline stops)."""
    limit = max(1, int(getattr(stage, "batch_size", 1)))
    closed = False
    while not closed:
        tasks, closed = _take(inbox, limit)
        tasks = _drop_late(tasks, ledger)
        for task, result in zip(tasks, _process(stage, tasks)):
            if isinstance(result, ImageError):
                ledger.fail(task, str(result))
            elif isinstance(result, Exception):
                ledger.fail(task, f"{stage.name} error: {type(result).__name__}: {result}")
            elif result is None:
                ledger.drop(task, f"filtered by stage {stage.name}")
            elif not outbox.put(result):
                ledger.drop(result, result.handle.discard_reason)


def _drop_late(tasks: list[FrameTask], ledger: Ledger) -> list[FrameTask]:
    """Live frames past their source's max latency are dropped here, before more work is spent
    on them (each stage checks: the earliest point that knows)."""
    now = time.perf_counter()
    kept = []
    for task in tasks:
        if task.late(now):
            ledger.drop(task, REASON_LATE)
        else:
            kept.append(task)
    return kept


def _take(inbox: Any, limit: int) -> tuple[list[FrameTask], bool]:
    """The next task (waiting for it) and those already queued behind it, up to ``limit``;
    and whether the inbox is closed and empty."""
    tasks: list[FrameTask] = []
    while len(tasks) < limit:
        task = inbox.get() if not tasks else inbox.get(timeout=0)
        if task is CLOSED:
            return tasks, True
        if task is None:
            if tasks:
                break
            continue
        tasks.append(task)
    return tasks, False


def _process(stage: Stage, tasks: list[FrameTask]) -> list[Any]:
    """The stage's result per task: a task, None, or the exception it raised. A batch that
    fails is retried one task at a time, so one bad frame fails alone."""
    batch = getattr(stage, "process_batch", None)
    if batch is not None and len(tasks) > 1:
        try:
            return list(batch(tasks))
        except Exception:  # noqa: BLE001 - find the frame that broke it, below
            log.debug("stage %s failed on a batch; retrying frame by frame", stage.name,
                      exc_info=True)
    results: list[Any] = []
    for task in tasks:
        try:
            results.append(stage.process(task))
        except Exception as err:  # noqa: BLE001 - one bad frame (or stage bug) must not stop the stream
            log.debug("stage %s failed on a frame", stage.name, exc_info=True)
            results.append(err)
    return results


def start_stage(stage: Stage, inbox: Any, outbox: BoundedQueue[FrameTask], ledger: Ledger,
                on_done: Callable[[], None] | None = None) -> threading.Thread:
    """Start ``stage.threads`` workers of ``stage`` and a supervisor that closes ``outbox`` when
    the last of them ends, so "no more input" flows down the chain, and then calls ``on_done``
    (every frame the stage had is recorded or passed on). Returns the supervisor."""
    workers = [threading.Thread(target=run_stage, args=(stage, inbox, outbox, ledger),
                                name=f"maskrt-{stage.name}-{i}", daemon=True)
               for i in range(max(1, int(getattr(stage, "threads", 1))))]

    def supervise() -> None:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        outbox.close()
        if on_done is not None:
            on_done()

    supervisor = threading.Thread(target=supervise, name=f"maskrt-{stage.name}", daemon=True)
    supervisor.start()
    return supervisor
