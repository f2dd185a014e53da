"""``maskrt score SOURCE... --out DIR``: score (and explain) files, folders, videos, cameras,
network streams and drop folders through the streaming pipeline.

Writes into DIR:

* ``records.jsonl``: one JSON object per frame read (per region of a scored frame): source_id,
  frame_index, source_timestamp, status, reason, label, p_with_mask, p_without_mask, latency_ms,
  uri, region_index, box, face_score, faces (``overlay`` when one was written), flushed as it goes;
* ``summary.json``: counts per status and per source (with states, reconnects and failure
  reasons), labels, throughput, latency p50/p95/p99 of scored frames, and whether
  read == scored + dropped + failed held; written at the end, also after Ctrl-C;
* ``overlays/<source>/`` with ``--explain``: one CAM overlay image per scored frame;
* ``videos/<source>_annotated.avi`` with ``--video``: an annotated video per video-file source.

With ``--metrics-port PORT`` it serves Prometheus metrics at ``/metrics`` while it runs, and with
``--mqtt HOST:PORT`` it publishes face records and dropped/failed frames to an MQTT broker
(:mod:`maskrt.stream.metrics`, :mod:`maskrt.stream.mqtt`; counts in the summary's outputs).

The sinks come from one function, :func:`maskrt.stream.sinks.build_sinks`.

SOURCE: an image file, a folder (recursive; videos in it are read as videos), a video file, a
camera index, an rtsp:// or http(s):// URL, or drop:DIR for a folder watched for uploaded face
crops. A SOURCE that names nothing usable gets one ``failed`` record and the others go on (exit
status 2 when no SOURCE is usable). Progress (frames/s per source over the last seconds,
dropped, failed) goes to stderr.

Ctrl-C (SIGINT), SIGTERM (docker stop, systemd, Kubernetes, ``timeout``) and SIGHUP stop cleanly:
reading stops, frames in flight are recorded as ``dropped`` saying why, videos are finalised and
the summary is written; the exit status is 130, 143 or 129. A second signal stops waiting for
the frames still at the backend: they are recorded as ``dropped`` at once (``aborted`` in the
summary), so every frame counted still has its record, and the summary is written; a third
ends the process at once (so does the second while the model loads, before anything is read).
Records that could not be written (a disk still full at the end) or a summary that could not be written
make the exit status 2, with a message naming the file.
Live sources and drop folders run until a signal, ``--duration`` or ``--frames``; a failing live
source reconnects per ``--reconnect`` (default: forever when every source is live, a few
attempts when the run also has files, so a batch job finishes).
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger("maskrt.score")

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from maskrt.backends.registry import add_backend_arguments
    from maskrt.cli.common import add_track_arguments, non_negative_float, positive_int
    from maskrt.detect import PRESETS  # light (no torch); the help lists every key it has
    from maskrt.image import MAX_FILE_BYTES, MAX_PIXELS

    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="image, folder, video, camera index, rtsp/http URL, or drop:DIR")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--explain", action="store_true",
                        help="draw CAM overlays and write them under DIR/overlays/")
    parser.add_argument("--video", action="store_true",
                        help="write an annotated video per video-file source under DIR/videos/")
    add_backend_arguments(parser)
    parser.add_argument("--regions", choices=("faces", "frame"), default="faces",
                        help="faces (default): detect faces and decide per face; frame: the whole "
                             "frame is one decision (inputs that already are face crops)")
    parser.add_argument("--preset", choices=tuple(PRESETS), default="default",
                        help="face detection preset: default (the detector's scale chosen per "
                             "frame), fast, or accurate (three detectors fused: photos)")
    parser.add_argument("--face-option", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset setting, repeatable: "
                             + ", ".join(PRESETS["default"]))
    parser.add_argument("--batch-size", "--max-batch", dest="batch_size", type=positive_int,
                        default=32, help="faces (regions) per backend call at most (default 32)")
    parser.add_argument("--max-wait-ms", type=non_negative_float, default=20.0,
                        help="how long a batch waits for more frames after its first (default 20)")
    parser.add_argument("--max-latency-ms", type=non_negative_float, default=1000.0,
                        help="live sources: a frame that cannot be scored within this many ms of "
                             "being read is dropped (reason: late) instead of queued behind older "
                             "work (default 1000; 0: never; files and videos never drop)")
    add_track_arguments(parser)
    parser.add_argument("--queue-size", type=positive_int, default=None,
                        help="per-source queue (default: 4 for live sources, max(8, batch) else)")
    parser.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, metavar="N",
                        help="refuse (a failed record) an image whose header says it has more "
                             f"pixels than N, before decoding it (default {MAX_PIXELS}); image "
                             f"files over {MAX_FILE_BYTES // 2**20} MiB are refused unread")
    parser.add_argument("--reconnect", default=None, metavar="forever|N|for:SECONDS",
                        help="when a failing live source gives up: forever, after N reconnection "
                             "attempts, or after an outage of SECONDS (default: forever when every "
                             "source is live, else 3 attempts, so a batch job finishes)")
    parser.add_argument("--retries", type=int, default=None, help="the same as --reconnect N")
    parser.add_argument("--timeout", type=non_negative_float, default=5.0,
                        help="stream open/read timeout in seconds (default 5)")
    parser.add_argument("--settle", type=non_negative_float, default=1.0,
                        help="drop folders: seconds a file must be unchanged to count as "
                             "complete (default 1)")
    parser.add_argument("--duration", type=non_negative_float, default=None,
                        help="stop after this many seconds (live sources run until stopped)")
    parser.add_argument("--frames", dest="max_frames", type=positive_int, default=None,
                        metavar="N", help="stop reading after N frames in all (each is scored)")
    parser.add_argument("--progress-interval", type=non_negative_float, default=1.0,
                        help="seconds between progress lines on stderr (0: none)")
    parser.add_argument("--metrics-port", type=positive_int, default=None, metavar="PORT",
                        help="serve Prometheus metrics at http://ADDR:PORT/metrics during the run "
                             "(needs pip install maskrt[metrics])")
    parser.add_argument("--metrics-addr", default="0.0.0.0", metavar="ADDR",
                        help="the address the metrics server listens on. WARNING: the default "
                             "0.0.0.0 serves /metrics (source ids, counts) on EVERY interface, "
                             "to anyone who can reach this host, so Prometheus can scrape it "
                             "from another host; give 127.0.0.1 to keep it local")
    _add_mqtt_arguments(parser)
    from maskrt.web.cli import add_web_arguments

    add_web_arguments(parser)


def _add_mqtt_arguments(parser: argparse.ArgumentParser) -> None:
    from maskrt.cli.common import non_negative_float, non_negative_int

    parser.add_argument("--mqtt", default=None, metavar="HOST[:PORT]",
                        help="publish face records and dropped/failed frames to this MQTT broker "
                             "(port 1883 by default; needs pip install maskrt[mqtt])")
    parser.add_argument("--mqtt-topic", default="maskrt", metavar="PREFIX",
                        help="topic prefix: PREFIX/<source>/faces and PREFIX/<source>/events "
                             "(default maskrt)")
    parser.add_argument("--mqtt-only-without-mask", type=float, default=None, metavar="P",
                        help="publish only without_mask faces with p_without_mask >= P (default: "
                             "every face; dropped/failed events are always published)")
    parser.add_argument("--mqtt-min-interval", type=non_negative_float, default=0.0,
                        metavar="SECONDS", help="at most one message per source and topic every "
                        "SECONDS (the others are counted as mqtt_suppressed; default 0: all)")
    parser.add_argument("--mqtt-jpeg", action="store_true",
                        help="add a small JPEG of the face (at most 96 px a side, base64 field "
                             "'jpeg'; cut from the overlay with --explain, else from the frame)")
    parser.add_argument("--mqtt-events", choices=("tracks", "faces", "both"), default="tracks",
                        help="tracks (default): one message per person event (track started, "
                             "decision, ended) on PREFIX/<source>/tracks, and faces only of "
                             "untracked frames (photos); faces: every face record; both")
    parser.add_argument("--mqtt-buffer", type=non_negative_int, default=1000, metavar="N",
                        help="messages held while the broker is unreachable, sent after it is "
                             "back (the oldest dropped beyond N; default 1000, 0: none)")


def main(args: argparse.Namespace) -> int:
    from maskrt.cli.score_stop import StopSignals

    _configure_logging()
    # Installed first: a SIGTERM while the model loads still ends with a summary, not a kill.
    signals = StopSignals().install()
    try:
        status = _run(args, signals)
    finally:
        signals.restore()
    signals.exit_now_if_aborted(status)
    return status


def _run(args: argparse.Namespace, signals: Any) -> int:
    from maskrt.cli.common import fail, track_kwargs
    from maskrt.cli.score_report import print_summary
    from maskrt.cli.score_stop import consume
    from maskrt.detect import parse_face_options
    from maskrt.stream.pipeline import Pipeline

    try:
        _check_out(args.out)
        face_options = parse_face_options(args.face_option)
        tracking = track_kwargs(args)
        sources, reconnect = _open_sources(args)
        engine, untrained = _open_engine(args)
    except ValueError as err:
        return fail("score", err, args)
    try:  # optional packages, a bad --mqtt, a --metrics-port in use: before any frame is read
        sinks = _sinks(args, sources, engine, untrained, reconnect)
    except (ValueError, ImportError, OSError) as err:
        engine.close()
        return fail("score", _port_in_use(err, args.metrics_port), args)
    pipeline = Pipeline(engine, sources, batch_size=args.batch_size, max_wait_ms=args.max_wait_ms,
                        explain=args.explain, queue_size=args.queue_size,
                        regions=args.regions, preset=args.preset, face_options=face_options,
                        max_frames=args.max_frames, sinks=sinks, **tracking,
                        max_latency_ms=args.max_latency_ms or None, max_pixels=args.max_pixels)
    stopped_by = consume(pipeline, args, signals)
    for _ in pipeline:  # what the stop left: into the sinks, which then close
        pass
    if not pipeline.ledger.aborted:  # else a batch may still run on it: the exit frees it
        engine.close()
    summary_sink = pipeline.sinks[-1]
    print_summary(summary_sink.summary, args.out, summary_written=summary_sink.error is None)
    from maskrt.web.cli import linger

    linger(pipeline.sinks, signals)  # --web-linger: the page with the final figures
    problem = _output_problem(summary_sink)
    if problem is not None:  # outputs missing: a non-zero status, whatever stopped the run
        print(f"maskrt score: {problem}", file=sys.stderr)
        return 2
    # A signal that came after the sources had ended stopped nothing: the run finished.
    return signals.exit_status if stopped_by is not None and stopped_by == signals.name else 0


def _check_out(out: Path) -> None:
    """ValueError when --out names a file (mkdir would only say "File exists")."""
    if out.is_file():
        raise ValueError(f"--out {out}: expected a folder, {out} is a file")


def _port_in_use(err: BaseException, port: int | None) -> BaseException:
    """``err`` naming the flag and port when it is the metrics server's port being taken (the
    socket only says "[Errno 98] Address already in use"); any other error as it is."""
    if port is None or not isinstance(err, OSError) or err.errno != errno.EADDRINUSE:
        return err
    named = ValueError(f"--metrics-port {port}: address already in use (another maskrt or "
                       f"exporter?)")
    named.__cause__ = err  # --debug shows the socket's own error too
    return named


def _output_problem(summary_sink: Any) -> str | None:
    """What the run could not write (a full disk), in one line; None when everything was."""
    problems = []
    lost = summary_sink.summary["outputs"].get("records_lost", 0)
    if lost:
        problems.append(f"{lost} records could not be written to "
                        f"{summary_sink.summary['outputs']['records']} (the disk refused them "
                        f"until the end; records_lost in the summary)")
    if summary_sink.error is not None:
        problems.append(f"cannot write the summary {summary_sink.path}: {summary_sink.error}")
    return "; ".join(problems) or None


def _open_sources(args: argparse.Namespace) -> tuple[list[Any], Any]:
    """The sources of the run (a spec naming nothing usable becomes a source with one failed
    record) and the reconnect policy given to the live ones. ValueError: none is usable, or a
    bad --reconnect."""
    from maskrt.stream.sources import CaptureSource, ReconnectPolicy, open_sources
    from maskrt.stream.sources.reconnect import BATCH_RECONNECTS

    if args.reconnect is not None:
        reconnect = ReconnectPolicy.parse(args.reconnect)
    elif args.retries is not None:
        reconnect = ReconnectPolicy.parse(args.retries)
    else:
        reconnect = None
    sources, problems = open_sources(list(args.sources), timeout_s=args.timeout,
                                     settle_s=args.settle)
    if len(problems) == len(sources):
        raise ValueError(problems[0] if len(problems) == 1
                         else "no usable source: " + " | ".join(problems))
    for problem in problems:
        log.warning("%s; recorded as failed, the other sources go on", problem)
    if reconnect is None:
        # A dead camera must not keep a batch job over files from ever finishing; a run of
        # cameras only is a service, and cameras that reboot come back.
        batch = any(source.finite for source in sources)
        reconnect = ReconnectPolicy(attempts=BATCH_RECONNECTS) if batch else ReconnectPolicy()
    for source in sources:
        if isinstance(source, CaptureSource):
            source.reconnect = reconnect
    return sources, reconnect


def _open_engine(args: argparse.Namespace) -> tuple[Any, bool]:
    """The Engine of the run, and whether its model is untrained (ValueError: cannot run)."""
    from maskrt.cli.common import open_engine

    engine, untrained = open_engine(args)
    if untrained:
        print("maskrt score: WARNING: no trained weights in this build; a RANDOMLY INITIALISED "
              "model is scoring, so labels are meaningless", file=sys.stderr)
    return engine, untrained


def _sinks(args: argparse.Namespace, sources: list[Any], engine: Any, untrained: bool,
           reconnect: Any) -> list[Any]:
    from maskrt.stream.sources import VideoFileSource
    from maskrt.web.cli import check_web_arguments, make_web_sink

    check_web_arguments(args)
    args.out.mkdir(parents=True, exist_ok=True)
    videos = [s for s in sources if isinstance(s, VideoFileSource)] if args.video else []
    fps = {s.id: s for s in videos}  # ids are final once the pipeline has the sources
    web = make_web_sink(args)  # serving from here: a port in use fails before any file opens
    try:
        sinks = _build_sinks(args, engine, untrained, reconnect, videos, fps)
    except BaseException:
        if web is not None:
            web.stop()
        raise
    if web is not None:
        sinks.insert(len(sinks) - 1, web)  # before the summary sink, which closes last
    return sinks


def _build_sinks(args: argparse.Namespace, engine: Any, untrained: bool, reconnect: Any,
                 videos: list[Any], fps: dict[str, Any]) -> list[Any]:
    from maskrt.detect import parse_face_options
    from maskrt.stream.sinks import build_sinks
    from maskrt.track.settings import parse_track_options

    return build_sinks(
        args.out, explain=args.explain, video_sources=[s.id for s in videos],
        fps_of=lambda source_id: fps[source_id].fps if source_id in fps else None,
        metrics_port=args.metrics_port, metrics_addr=args.metrics_addr,
        mqtt=args.mqtt, mqtt_topic=args.mqtt_topic, mqtt_options=_mqtt_options(args),
        tracks=args.track != "off" and args.regions == "faces",
        backend=engine.backend.describe(),
        model="random-init (untrained)" if untrained else (args.model or "shipped"),
        settings={"regions": args.regions, "preset": args.preset,
                  "face_options": parse_face_options(args.face_option),
                  "batch_size": args.batch_size, "max_wait_ms": args.max_wait_ms,
                  "max_latency_ms": args.max_latency_ms or None, "track": args.track,
                  "reuse": args.reuse, "track_options": parse_track_options(args.track_option),
                  "explain": args.explain, "queue_size": args.queue_size,
                  "reconnect": reconnect.describe(), "timeout_s": args.timeout,
                  "duration_s": args.duration, "frames": args.max_frames},
        specs=list(args.sources))


def _mqtt_options(args: argparse.Namespace) -> dict[str, Any]:
    """MqttSink's options from the --mqtt-* flags (ValueError: given without --mqtt)."""
    options = {"only_without_mask": args.mqtt_only_without_mask, "jpeg": args.mqtt_jpeg,
               "min_interval_s": args.mqtt_min_interval, "max_buffered": args.mqtt_buffer,
               "events": args.mqtt_events}
    if args.mqtt is None and options != {"only_without_mask": None, "jpeg": False,
                                         "min_interval_s": 0.0, "max_buffered": 1000,
                                         "events": "tracks"}:
        raise ValueError("--mqtt-only-without-mask, --mqtt-min-interval, --mqtt-jpeg, "
                         "--mqtt-events and --mqtt-buffer need --mqtt HOST[:PORT]")
    return options


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each message, not as it was when logging was set up
    (a caller that swaps stderr, e.g. to capture it, would otherwise get a closed stream)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def _configure_logging() -> None:
    logger = logging.getLogger("maskrt")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("maskrt: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
