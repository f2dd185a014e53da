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

The sinks come from one function, :func:`maskrt.stream.sinks.build_sinks`.

SOURCE: an image file, a folder (recursive), a video file, a camera index, an rtsp:// or http(s)://
URL, or drop:DIR for a folder watched for uploaded face crops. Progress (frames/s per source,
dropped, failed) goes to stderr. Ctrl-C stops cleanly (exit status 130); a second Ctrl-C aborts.
Live sources and drop folders run until Ctrl-C or ``--duration``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO



def add_arguments(parser: argparse.ArgumentParser) -> None:
    from maskrt.backends.registry import add_backend_arguments
    from maskrt.cli.common import non_negative_float, positive_int

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
    parser.add_argument("--preset", choices=("default", "fast"), default="default",
                        help="face detection preset: default (small faces: 2x upscale) or fast")
    parser.add_argument("--face-option", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset setting, repeatable: score_threshold, nms_iou, "
                             "upscale, widen, min_face, max_faces")
    parser.add_argument("--batch-size", "--max-batch", dest="batch_size", type=positive_int,
                        default=32, help="faces (regions) per backend call at most (default 32)")
    parser.add_argument("--max-wait-ms", type=non_negative_float, default=20.0,
                        help="how long a batch waits for more frames after its first (default 20)")
    parser.add_argument("--queue-size", type=positive_int, default=None,
                        help="per-source queue (default: 4 for live sources, max(8, batch) else)")
    parser.add_argument("--retries", type=int, default=None,
                        help="failed connection attempts before a live source gives up "
                             "(default: never give up)")
    parser.add_argument("--timeout", type=non_negative_float, default=5.0,
                        help="stream open/read timeout in seconds (default 5)")
    parser.add_argument("--settle", type=non_negative_float, default=1.0,
                        help="drop folders: seconds a file must be unchanged to count as "
                             "complete (default 1)")
    parser.add_argument("--duration", type=non_negative_float, default=None,
                        help="stop after this many seconds (live sources run until stopped)")
    parser.add_argument("--progress-interval", type=non_negative_float, default=1.0,
                        help="seconds between progress lines on stderr (0: none)")


def main(args: argparse.Namespace) -> int:
    from maskrt.stream.pipeline import Pipeline

    _configure_logging()
    from maskrt.detect import parse_face_options

    try:
        parse_face_options(args.face_option)
        sources = _open_sources(args)
        engine, untrained = _open_engine(args)
    except ValueError as err:
        print(f"maskrt score: {err}", file=sys.stderr)
        return 2
    pipeline = Pipeline(engine, sources, batch_size=args.batch_size, max_wait_ms=args.max_wait_ms,
                        explain=args.explain, queue_size=args.queue_size,
                        regions=args.regions, preset=args.preset,
                        face_options=parse_face_options(args.face_option),
                        sinks=_sinks(args, sources, engine, untrained))
    pipeline.sinks[-1].extra["stopped_by"] = stopped_by = _consume(pipeline, args)
    pipeline.sinks[-1].extra["interrupted"] = stopped_by == "interrupt"
    for _ in pipeline:  # what the stop left: into the sinks, which then close
        pass
    engine.close()
    _print_summary(pipeline.sinks[-1].summary, args.out)
    return 130 if stopped_by == "interrupt" else 0


def _open_sources(args: argparse.Namespace) -> list[Any]:
    from maskrt.stream.sources import open_source

    options = {"retries": args.retries, "timeout_s": args.timeout, "settle_s": args.settle}
    return [open_source(spec, **options) for spec in args.sources]


def _open_engine(args: argparse.Namespace) -> tuple[Any, bool]:
    """The Engine of the run, and whether its model is untrained (ValueError: cannot run)."""
    from maskrt.cli.common import open_engine

    engine, untrained = open_engine(args)
    if untrained:
        print("maskrt score: WARNING: no trained weights in this build; a RANDOMLY INITIALISED "
              "model is scoring, so labels are meaningless", file=sys.stderr)
    return engine, untrained


def _sinks(args: argparse.Namespace, sources: list[Any], engine: Any, untrained: bool) -> list[Any]:
    from maskrt.detect import parse_face_options
    from maskrt.stream.sinks import build_sinks
    from maskrt.stream.sources import VideoFileSource

    args.out.mkdir(parents=True, exist_ok=True)
    videos = [s for s in sources if isinstance(s, VideoFileSource)] if args.video else []
    fps = {s.id: s for s in videos}  # ids are final once the pipeline has the sources
    return build_sinks(
        args.out, explain=args.explain, video_sources=[s.id for s in videos],
        fps_of=lambda source_id: fps[source_id].fps if source_id in fps else None,
        backend=engine.backend.describe(),
        model="random-init (untrained)" if untrained else (args.model or "shipped"),
        settings={"regions": args.regions, "preset": args.preset,
                  "face_options": parse_face_options(args.face_option),
                  "batch_size": args.batch_size, "max_wait_ms": args.max_wait_ms,
                  "explain": args.explain, "queue_size": args.queue_size,
                  "retries": args.retries, "timeout_s": args.timeout},
        specs=list(args.sources))


def _consume(pipeline: Any, args: argparse.Namespace) -> str | None:
    """Take records (into the sinks) until the sources end, Ctrl-C or ``--duration``; returns
    what stopped the run early (None: the sources ended)."""
    interrupted = threading.Event()
    restore = _install_sigint(interrupted)
    progress = _Progress(pipeline, sys.stderr, args.progress_interval)
    stopped_by = None
    t0 = time.perf_counter()
    try:
        pipeline.start()
        while not pipeline.finished:
            if stopped_by is None:
                if interrupted.is_set():
                    stopped_by = "interrupt"
                elif args.duration is not None and time.perf_counter() - t0 >= args.duration:
                    stopped_by = "duration"
                if stopped_by is not None:
                    print(f"\nmaskrt score: stopping ({stopped_by})...", file=sys.stderr)
                    pipeline.stop()
            pipeline.get(timeout=0.2)
            progress.maybe_print()
    finally:
        pipeline.stop()
        restore()
        progress.finish()
    return stopped_by


def _configure_logging() -> None:
    logger = logging.getLogger("maskrt")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("maskrt: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _install_sigint(interrupted: threading.Event) -> Any:
    """First Ctrl-C: stop cleanly (summary still written); second: the usual KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        interrupted.set()

    signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


class _Progress:
    """A status line on stderr: total frames/s, scored/dropped/failed, and per source frames/s,
    dropped and failed (the first 8 sources; a count of the rest)."""

    def __init__(self, pipeline: Any, stream: TextIO, interval: float) -> None:
        self.pipeline = pipeline
        self.stream = stream
        self.interval = interval
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._next = time.perf_counter() + interval

    def maybe_print(self) -> None:
        if self.interval <= 0 or time.perf_counter() < self._next:
            return
        self._next = time.perf_counter() + self.interval
        self._print()

    def _print(self) -> None:
        from maskrt.stream.records import DROPPED, FAILED, SCORED

        c = self.pipeline.counters()
        t = c["total"]
        parts = [f"[{c['elapsed_s']:6.1f}s] {t['read']} read, {t[SCORED]} scored, "
                 f"{t[DROPPED]} dropped, {t[FAILED]} failed, {c['fps']:.1f} fr/s"]
        items = list(c["sources"].items())
        for source_id, s in items[:8]:
            short = source_id if len(source_id) <= 24 else "..." + source_id[-21:]
            extra = f" {s['state']}" if s["state"] not in ("reading", "streaming", "watching") else ""
            parts.append(f"{short}: {s['fps']:.1f}/s d{s[DROPPED]} f{s[FAILED]}{extra}")
        if len(items) > 8:
            parts.append(f"+{len(items) - 8} more")
        line = " | ".join(parts)
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.interval <= 0:
            return
        self._print()  # the final counts, however short the run was
        if self.tty:
            self.stream.write("\n")


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    from maskrt.stream.records import DROPPED, FAILED, SCORED

    counts = summary["counts"]
    latency = summary["latency_ms"]
    fps = summary["throughput_fps"]
    print(f"{counts['read']} frames read: {counts[SCORED]} scored, {counts[DROPPED]} dropped, "
          f"{counts[FAILED]} failed ({'accounting ok' if summary['accounting_ok'] else 'ACCOUNTING MISMATCH'})")
    if counts[SCORED]:
        print(f"throughput {fps} frames/s; latency ms p50 {latency['p50']} p95 {latency['p95']} "
              f"p99 {latency['p99']}")
    print(f"labels: {summary['labels']}; backend: {summary['backend']}")
    print(f"wrote {out / 'records.jsonl'} and {out / 'summary.json'}")
