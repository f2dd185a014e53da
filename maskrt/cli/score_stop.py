"""How a ``maskrt score`` run stops: the loop that takes records until the sources end, a
stop signal, ``--duration`` or ``--frames``, and the signal handlers it watches.

The first SIGINT, SIGTERM or SIGHUP stops reading; the frames in flight are still scored (or
dropped saying why) and the summary is written. A second one stops waiting for the frames
still at the backend: :meth:`maskrt.stream.accounting.Ledger.abort` records them as dropped at
once, so every frame counted has its record and the summary still agrees with records.jsonl. A
third ends the process at once (the signals' own handlers are back).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

#: the signals that stop a run cleanly: what the summary calls the stop, the exit status
STOP_SIGNALS = {signal.SIGINT: ("interrupt", 130), signal.SIGTERM: ("terminate", 143)}
if hasattr(signal, "SIGHUP"):  # not on Windows
    STOP_SIGNALS[signal.SIGHUP] = ("hangup", 129)


def consume(pipeline: Any, args: argparse.Namespace, signals: "StopSignals") -> str | None:
    """Take records (into the sinks) until the sources end, a stop signal, ``--duration`` or
    ``--frames``; returns what stopped the run early (None: the sources ended). The summary
    sink is told as soon as it is known: it may close inside this loop."""
    from maskrt.cli.score_report import Progress

    progress = Progress(pipeline, sys.stderr, args.progress_interval)
    extra = pipeline.sinks[-1].extra
    extra.update(stopped_by=None, interrupted=False, signal=None, aborted=False)
    stopped_by = None
    stopper: threading.Thread | None = None
    signals.polled = True  # a second signal is seen below, between records
    t0 = time.perf_counter()
    try:
        pipeline.start()
        while not pipeline.finished:
            if stopped_by is None:
                stopped_by, why = signals.name, signals.signal_name
                if (stopped_by is None and args.duration is not None
                        and time.perf_counter() - t0 >= args.duration):
                    stopped_by, why = "duration", f"--duration {args.duration:g}"
                if stopped_by is not None:
                    extra.update(stopped_by=stopped_by, interrupted=signals.name is not None,
                                 signal=signals.signal_name)
                    print(f"\nmaskrt score: stopping ({stopped_by})...", file=sys.stderr)
                    stopper = _stop_in_background(
                        pipeline, f"pipeline stopped ({why}) before the frame was scored")
                elif pipeline.ledger.limit_reached:  # readers stop; what was read is scored
                    stopped_by = extra["stopped_by"] = "frames"
            if signals.aborted and not extra["aborted"]:
                extra["aborted"] = True
                given_up = pipeline.ledger.abort(
                    f"pipeline aborted (second {signals.second_signal_name}) before the frame "
                    f"was scored")
                print(f"\nmaskrt score: second signal: not waiting for the {given_up} frames in "
                      f"flight (recorded as dropped); writing the records and summary...",
                      file=sys.stderr)
            pipeline.get(timeout=0.2)
            progress.maybe_print()
    finally:
        if stopper is None:
            pipeline.stop()
        while stopper is not None and stopper.is_alive() and not signals.aborted:
            stopper.join(0.2)
        progress.finish()
    return stopped_by


def _stop_in_background(pipeline: Any, reason: str) -> threading.Thread:
    """``pipeline.stop`` in a thread of its own: it waits (up to 15 s) for the batches at the
    backend, while the main thread goes on taking their records and watching for a second
    signal, which must not have to wait for them."""
    thread = threading.Thread(target=pipeline.stop, kwargs={"reason": reason}, daemon=True,
                              name="maskrt-stop")
    thread.start()
    return thread


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP: the first one asks the run to stop cleanly (``name`` is set
    and the main loop stops the pipeline); a second one sets ``aborted`` (the main loop stops
    waiting for frames in flight, see :meth:`Ledger.abort`) once the loop polls it, else (the
    model still loading, nothing read) raises KeyboardInterrupt; after it, the signals' own
    handlers are back, so a third ends the process at once."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.signum: int | None = None
        self.aborted = False
        self.second_signal_name: str | None = None
        #: whether the main loop watches ``aborted`` (raising there could cut a record in two)
        self.polled = False
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.name is not None:
            self.restore()
            if not self.polled:
                raise KeyboardInterrupt
            self.second_signal_name = signal.Signals(signum).name
            self.aborted = True
            return
        self.signum = signum
        self.name = STOP_SIGNALS[signal.Signals(signum)][0]

    def exit_now_if_aborted(self, status: int) -> None:
        """After a second signal, end the process with ``status`` once the outputs are written,
        without the interpreter's teardown: backend threads may still run the batch given up
        on, and tearing the runtime down under them aborts the process (ONNX Runtime:
        "terminate called", status -6) instead of exiting with ``status``."""
        if not self.aborted:
            return
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or broken stream: nothing more to say
                pass
        os._exit(status)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, the shell's convention (0 when no signal came)."""
        return 0 if self.signum is None else STOP_SIGNALS[signal.Signals(self.signum)][1]
