"""Live cameras at scale: ingest actors read maskrt's stream sources (cameras, RTSP/HTTP streams,
drop folders, and files and videos too) and send every frame to the Serve deployment.

One :class:`IngestWorker` actor per group of sources; in it, one reader thread per source (the
source's own ``frames()``, as in the pipeline) and the pipeline's decode stage. Each frame is
sent at once (``handle.score.remote``), at most ``max_in_flight`` per actor: a live source's frame
that finds no free slot is ``dropped`` (the pipeline's rule: live sources drop, they never
stall), a file's frame waits for one. When Serve answers with back-pressure (its queue is past
``max_queued_requests``) the frame is ``dropped`` with that reason; a request whose replica died
is sent again (:func:`~maskrt.ray.serve.score_with_retry`), and fails only after the retries.
So every frame read ends in one record (one per face of a scored frame), and ``read == scored +
dropped + failed`` holds for each source, actor and the whole cluster; :func:`ingest` gathers the
records and track events on the driver.

The actor owns its sources, so it also keeps each one's tracker: the faces Serve returns are put
back in frame order and tracked as ``maskrt score`` tracks them (track ids, per-person decisions,
track events; see :mod:`maskrt.ray.live_tracks`: Serve classifies every face, so no reuse).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence, TextIO

from maskrt.cli.common import error_line
from maskrt.ray import require_ray
from maskrt.ray.live_tracks import SourceOrder
from maskrt.ray.reading import frame_row, unique_ids
from maskrt.ray.scorer import ERROR, IMAGE
from maskrt.stream.records import DROPPED, FAILED, SCORED

REASON_BACK_PRESSURE = ("serve back-pressure: the deployment's queue was full "
                        "(max_queued_requests), the frame was not scored")
log = logging.getLogger("maskrt.ray.ingest")
REASON_IN_FLIGHT = "ingest: {n} requests already in flight, dropped the live frame"


class IngestWorker:
    """A Ray actor (threaded) reading ``sources`` ([(spec, id), ...]) and sending their frames to
    the deployment behind ``handle``; :meth:`poll` hands over the records and track events
    made so far. track, track_options: as ``maskrt score``'s (see :class:`SourceOrder`)."""

    def __init__(self, sources: Sequence[tuple[Any, str]], handle: Any, *,
                 max_in_flight: int = 32, retries: int = 3, timeout_s: float = 60.0,
                 source_options: dict[str, Any] | None = None, cwd: str | None = None,
                 track: Any = "auto", track_options: dict[str, Any] | None = None) -> None:
        from maskrt.ray.cluster import quiet_worker
        from maskrt.stream.sources.spec import open_sources
        from maskrt.track.settings import TrackSettings

        quiet_worker(cwd)
        # Serve warns once per request refused for back-pressure: each is a dropped record.
        logging.getLogger("ray.serve").setLevel(logging.ERROR)
        self.sources = {}
        for spec, source_id in sources:
            source = open_sources([spec], **dict(source_options or {}))[0][0]
            source.id = source_id
            self.sources[source_id] = source
        settings = TrackSettings().with_options(track_options)
        self.order = {source_id: SourceOrder(source, track, settings)
                      for source_id, source in self.sources.items()}
        self.handle = handle
        self.max_in_flight, self.retries, self.timeout_s = max_in_flight, retries, timeout_s
        self.counts = {source_id: Counter() for source_id in self.sources}
        self._records: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="maskrt-ingest-send")
        self._stop = threading.Event()
        self._readers: list[threading.Thread] = []
        self._in_flight = 0

    def start(self) -> str | None:
        """Start one reader thread per source; returns what the deployment scores (``regions``).
        One request first: until this process's router knows the replicas, Serve queues
        requests without limit, so ``max_queued_requests`` would not apply to the first frames."""
        stats = self.handle.stats.remote().result(timeout_s=self.timeout_s)
        for source in self.sources.values():
            thread = threading.Thread(target=self._read, args=(source,), daemon=True,
                                      name=f"maskrt-ingest-{source.id}")
            thread.start()
            self._readers.append(thread)
        return stats.get("regions")

    def _read(self, source: Any) -> None:
        try:
            self._read_frames(source)
        finally:
            events = self.order[source.id].end()
            with self._lock:
                self._events += events

    def _read_frames(self, source: Any) -> None:
        for frame in source.frames(self._stop):
            row = frame_row(source.id, frame)
            row["n"] = self.order[source.id].number()
            with self._lock:
                self.counts[source.id]["read"] += 1
            if row[ERROR]:
                self._record(row, FAILED, row[ERROR])
            elif not self._slots.acquire(blocking=not source.live):
                self._record(row, DROPPED, REASON_IN_FLIGHT.format(n=self.max_in_flight))
            else:
                with self._lock:
                    self._in_flight += 1
                self._pool.submit(self._send, row)
            if self._stop.is_set():
                break

    def _send(self, row: dict[str, Any]) -> None:
        from ray.serve.exceptions import BackPressureError

        from maskrt.ray.serve import score_with_retry

        try:
            answer = score_with_retry(self.handle, row[IMAGE], retries=self.retries,
                                      timeout_s=self.timeout_s)
            self._record(row, answer.get("status", FAILED), answer.get("reason"), answer)
        except BackPressureError as err:
            log.debug("back-pressure: %s", error_line(err))
            self._record(row, DROPPED, REASON_BACK_PRESSURE)
        except Exception as err:  # noqa: BLE001 - every frame ends in a record
            self._record(row, FAILED, f"serve error: {type(err).__name__}: {error_line(err)}")
        finally:
            with self._lock:
                self._in_flight -= 1
            self._slots.release()

    def _record(self, row: dict[str, Any], status: str, reason: str | None,
                answer: dict[str, Any] | None = None) -> None:
        records, events = self.order[row["source_id"]].outcome(row["n"], row, status, reason,
                                                                answer)
        with self._lock:
            self.counts[row["source_id"]][status] += 1
            self._records += records
            self._events += events

    def poll(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        """The records and track events made since the last poll, and the status: per source its
        counts and its connection figures, requests in flight, and ``done`` (every reader
        ended, nothing in flight)."""
        with self._lock:
            records, self._records = self._records, []
            events, self._events = self._events, []
            in_flight = self._in_flight
            counts = {source_id: dict(c) for source_id, c in self.counts.items()}
        readers_done = all(not t.is_alive() for t in self._readers)
        connections = {source_id: {"reconnects": s.reconnects,
                                   "connect_failures": s.connect_failures,
                                   "waiting_s": round(s.waiting_s(), 3)}
                       for source_id, s in self.sources.items()}
        return records, events, {"counts": counts, "connections": connections,
                                 "in_flight": in_flight, "done": readers_done and in_flight == 0}

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop reading; the frames already sent are answered (and recorded) first."""
        self._stop.set()
        for thread in self._readers:
            thread.join(timeout_s)
        self._pool.shutdown(wait=True)


def ingest(sources: Sequence[Any], out: str | Path, *, handle: Any = None, groups: int = 1,
           duration_s: float | None = None, max_in_flight: int = 32, retries: int = 3,
           cpus_per_actor: float = 0.25, source_options: dict[str, Any] | None = None,
           progress: TextIO | None = None, poll_s: float = 0.5,
           stop: threading.Event | None = None, track: Any = "auto",
           track_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``groups`` ingest actors over ``sources`` (split round-robin) against the deployment
    (``handle``, default: the running ``maskrt`` application's) until every source has ended,
    ``duration_s`` of reading passed (counted from when every actor reads: starting them is
    not reading) or ``stop`` (an Event another thread may set) is set; the actors then stop
    reading and what they sent is answered and recorded. Each actor tracks its sources' faces
    (``track``, ``track_options``: as ``maskrt score``'s). Writes ``out/records.jsonl`` (one
    record per face), ``out/events.jsonl`` and ``out/tracks.jsonl`` (track events, ended tracks)
    and ``out/summary.json``; returns the summary (``read`` per source is what the actors read,
    counted apart from the records; ``startup_s``: how long starting the actors took)."""
    ray = require_ray("serve")
    from maskrt.ray.records_out import RecordCounts, RecordWriter
    from maskrt.ray.serve import get_handle
    from maskrt.stream.sources.spec import open_sources
    from maskrt.stream.summary import write_json_atomic
    from maskrt.stream.track_sinks import TracksSink
    from maskrt.track.settings import TrackSettings, check_track_mode

    TrackSettings().with_options(track_options)  # ValueError before any actor starts
    track = check_track_mode(track)
    if groups < 1 or max_in_flight < 1:
        raise ValueError(f"groups, max_in_flight: expected >= 1, got {groups}, {max_in_flight}")
    opened, _ = open_sources(list(sources), **dict(source_options or {}))
    ids = unique_ids([s.id for s in opened])
    kinds = {source_id: s.kind for source_id, s in zip(ids, opened)}
    pairs = list(zip(sources, ids))
    handle = handle if handle is not None else get_handle()
    worker = ray.remote(num_cpus=cpus_per_actor, max_concurrency=max_in_flight + 8)(IngestWorker)
    actors = [worker.remote(pairs[k::groups], handle, max_in_flight=max_in_flight,
                            retries=retries, source_options=source_options, cwd=os.getcwd(),
                            track=track, track_options=track_options)
              for k in range(min(groups, len(pairs)))]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts, writer, tracks = RecordCounts(ids), RecordWriter(out, "jsonl"), TracksSink(out)
    t0 = time.perf_counter()
    try:
        regions = next(iter(ray.get([a.start.remote() for a in actors])), None)
        # Worker processes and each caller's first answer from the replicas: 30 s on a loaded
        # 2-core machine, which used to be the whole of a short --duration (sources read 1-2
        # frames). The duration is reading time, so it starts once every actor reads.
        startup_s = time.perf_counter() - t0
        status, stopped_by = _run(ray, actors, counts, (writer, tracks), time.perf_counter(),
                                  duration_s, progress, poll_s, stop)
    finally:
        writer.close()
        people = tracks.close()
        for actor in actors:
            ray.kill(actor)
    per_source = [(source_id, c.get("read", 0)) for s in status
                  for source_id, c in s["counts"].items()]
    read = dict(enumerate(per_source))
    connections = {source_id: c for s in status for source_id, c in s["connections"].items()}
    summary = counts.summary(read, kinds, connections, elapsed_s=time.perf_counter() - t0,
                             outputs={"records": str(writer.path), "tracks": people["tracks"],
                                      "events": people["events"]},
                             tracks_ended=people["tracks_ended"],
                             track_labels=people["track_labels"], groups=len(actors),
                             stopped_by=stopped_by, startup_s=round(startup_s, 3),
                             settings={"max_in_flight": max_in_flight, "retries": retries,
                                       "duration_s": duration_s, "regions": regions,
                                       "track": track, "track_options": dict(track_options or {})})
    write_json_atomic(out / "summary.json", summary)
    return summary


def _run(ray: Any, actors: list[Any], counts: Any, outputs: tuple[Any, Any], t0: float,
         duration_s: float | None, progress: TextIO | None, poll_s: float,
         stop: threading.Event | None) -> tuple[list[dict[str, Any]], str | None]:
    """Poll the actors until all are done; when the duration (from ``t0``) has passed, ``stop``
    is set, or on Ctrl-C, stop their reading, then drain what was sent (records and track events
    to ``outputs``: a RecordWriter and a TracksSink). Returns their last
    status and why they were stopped ("duration", "stop", "interrupt", None: the sources
    ended)."""
    stopped_by: str | None = None
    while True:
        try:
            polled = ray.get([a.poll.remote() for a in actors])
        except KeyboardInterrupt:
            stopped_by = _stop(ray, actors, stopped_by, "interrupt")
            continue
        for records, events, _ in polled:
            outputs[0].write(counts.add(records))
            outputs[1].events(events)
        status = [s for _, _, s in polled]
        if progress is not None:
            progress.write(_progress_line(status, time.perf_counter() - t0))
        if all(s["done"] for s in status):
            return status, stopped_by
        if stopped_by is None and _timed_out(t0, duration_s):
            stopped_by = _stop(ray, actors, stopped_by, "duration")
            continue
        if stopped_by is None and stop is not None and stop.is_set():
            stopped_by = _stop(ray, actors, stopped_by, "stop")
            continue
        try:
            time.sleep(poll_s)
        except KeyboardInterrupt:  # where a Ctrl-C mostly lands: between polls
            stopped_by = _stop(ray, actors, stopped_by, "interrupt")


def _progress_line(status: list[dict[str, Any]], elapsed_s: float) -> str:
    """What the actors did so far, by their own counts: a frame counts when it is answered,
    before the records of the frames read before it are (records leave in frame order)."""
    total: Counter = Counter()
    for s in status:
        for counted in s["counts"].values():
            total.update(counted)
    return (f"[{elapsed_s:6.1f}s] {total['read']} read, {total[SCORED]} scored, "
            f"{total[DROPPED]} dropped, {total[FAILED]} failed, "
            f"{sum(s['in_flight'] for s in status)} in flight\n")


def _stop(ray: Any, actors: list[Any], stopped_by: str | None, why: str) -> str:
    """The actors stop reading (once: what stopped them first stays the reason)."""
    if stopped_by is None:
        ray.get([a.stop.remote() for a in actors])
    return stopped_by or why


def _timed_out(t0: float, duration_s: float | None) -> bool:
    return duration_s is not None and time.perf_counter() - t0 >= duration_s
