"""``maskrt ray score SOURCE... --out DIR`` and ``maskrt ray serve``: scale-out on Ray
(:mod:`maskrt.ray`; needs ``pip install maskrt[ray]``).

* ``score``: image files, folders and video files scored offline by a pool of actors (Ray Data),
  ``maskrt score``'s records in ``DIR/records.jsonl`` (``--format parquet``:
  ``records.parquet``): every face found, tracked and decided as ``maskrt score`` does (same
  ``--regions``, ``--preset``, ``--face-option``, ``--track``, ``--reuse``, ``--track-option``;
  each video scored in one actor), and ``DIR/summary.json`` with the accounting identity.
* ``serve``: the Ray Serve deployment (HTTP ``POST /`` with an encoded image -> every face as
  JSON, ``?explain=1`` with the overlay; ``--regions frame``: the whole frame's one decision);
  with ``--ingest SOURCE... --out DIR`` also ingest actors sending live sources' frames to it,
  every frame recorded (Serve's back-pressure -> ``dropped``) and each source's faces tracked
  in its actor (``--track``, ``--track-option``), until the sources end, ``--duration`` or
  Ctrl-C.

``--address`` joins a running cluster (``auto``, ``HOST:PORT``); without it a local one is
started with ``--num-cpus`` logical CPUs. Paths must be readable at the same place on every node.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def _pair(text: str) -> tuple[int, int]:
    """argparse type: ``MIN,MAX`` (or one number for both) with 1 <= MIN <= MAX."""
    parts = text.split(",")
    try:
        lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, -1)
    except ValueError:
        lo, hi = 0, -1
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX with 1 <= MIN <= MAX, got {text!r}")
    return lo, hi


def _cluster_arguments(parser: argparse.ArgumentParser) -> None:
    from maskrt.cli.common import positive_int

    parser.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                        help="the Ray cluster to join (default: start a local one)")
    parser.add_argument("--num-cpus", type=positive_int, default=None, metavar="N",
                        help="logical CPUs of the local cluster (default: the machine's)")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of a failure")


def _face_arguments(parser: argparse.ArgumentParser) -> None:
    """maskrt score's --regions, --preset, --face-option, --track, --reuse, --track-option (on
    ``serve``, --reuse has no effect: the deployment classifies every face it reports)."""
    from maskrt.cli.common import add_track_arguments
    from maskrt.detect import PRESETS

    parser.add_argument("--regions", choices=("faces", "frame"), default="faces",
                        help="faces (default): detect faces and decide per face, as maskrt score "
                             "does (a video is scored in one actor); frame: the whole frame is "
                             "one decision (inputs that already are face crops)")
    parser.add_argument("--preset", choices=tuple(PRESETS), default="default",
                        help="face detection preset (as maskrt score's)")
    parser.add_argument("--face-option", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset setting, repeatable: "
                             + ", ".join(PRESETS["default"]))
    add_track_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from maskrt.backends.registry import add_backend_arguments
    from maskrt.cli.common import non_negative_float, positive_int

    sub = parser.add_subparsers(dest="ray_command", metavar="COMMAND", required=True)
    score = sub.add_parser("score", help="score files, folders and videos on a pool of actors",
                           description="offline scoring with Ray Data: maskrt score's records")
    score.add_argument("sources", nargs="+", metavar="SOURCE",
                       help="image file, folder (recursive; videos in it too) or video file")
    score.add_argument("--out", type=Path, required=True, help="output folder")
    _cluster_arguments(score)
    score.add_argument("--actors", type=_pair, default=(1, 2), metavar="MIN,MAX",
                       help="scoring actors, autoscaled between MIN and MAX (default 1,2)")
    score.add_argument("--batch", type=positive_int, default=None, metavar="N",
                       help="faces per classifier call (default 32, as maskrt score's "
                            "--batch-size); --regions frame: frames per scoring batch (default 16)")
    _face_arguments(score)
    score.add_argument("--cpus-per-actor", type=non_negative_float, default=0.5, metavar="C",
                       help="logical CPUs each actor holds (default 0.5: reading is never starved)")
    score.add_argument("--gpus-per-actor", type=non_negative_float, default=None, metavar="G",
                       help="GPUs per actor (default: 1 with a GPU backend on a cluster with GPUs)")
    score.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl",
                       help="records.jsonl (default) or records.parquet")
    score.add_argument("--progress-interval", type=non_negative_float, default=2.0,
                       help="seconds between progress lines on stderr (0: none)")
    add_backend_arguments(score)
    serve = sub.add_parser("serve", help="serve decisions over HTTP with Ray Serve",
                           description="the Ray Serve deployment; optionally live ingest actors")
    _cluster_arguments(serve)
    size = serve.add_mutually_exclusive_group()
    size.add_argument("--replicas", type=positive_int, default=1, metavar="N",
                      help="fixed number of replicas (default 1)")
    size.add_argument("--autoscale", type=_pair, default=None, metavar="MIN,MAX",
                      help="autoscale between MIN and MAX replicas")
    serve.add_argument("--max-batch", type=positive_int, default=8, metavar="B",
                       help="frames per batch at most (default 8)")
    serve.add_argument("--batch-wait-ms", type=non_negative_float, default=10.0, metavar="M",
                       help="how long a batch waits for more after its first frame (default 10)")
    serve.add_argument("--max-ongoing", type=positive_int, default=16, metavar="N",
                       help="requests a replica works on at once (default 16)")
    serve.add_argument("--max-queued", type=int, default=64, metavar="N",
                       help="requests queued per caller before back-pressure (default 64; -1: no "
                            "limit)")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    serve.add_argument("--port", type=positive_int, default=8000, help="HTTP port (default 8000)")
    serve.add_argument("--ingest", nargs="+", default=None, metavar="SOURCE",
                       help="also read these sources (cameras, streams, files) in ingest actors "
                            "and send their frames to the deployment (needs --out)")
    serve.add_argument("--out", type=Path, default=None, help="records of --ingest go here")
    serve.add_argument("--groups", type=positive_int, default=1, metavar="N",
                       help="ingest actors; the sources are split among them (default 1)")
    serve.add_argument("--duration", type=non_negative_float, default=None, metavar="SECONDS",
                       help="stop after this long (with --ingest: of reading, counted once "
                            "every ingest actor reads; default: until Ctrl-C, or the sources end)")
    _face_arguments(serve)
    add_backend_arguments(serve)


def main(args: argparse.Namespace) -> int:
    from maskrt.backends.registry import backend_options, resolve
    from maskrt.cli.common import fail
    from maskrt.ray import RayNotInstalled

    try:
        args.backend_options = backend_options(args)
        args.backend = resolve(args.backend).name
        if args.model is not None:
            if not Path(args.model).is_file():
                raise ValueError(f"--model: expected a checkpoint or .onnx file, got "
                                 f"{args.model!r}, which does not exist")
            args.model = str(Path(args.model).resolve())  # actors run elsewhere
        if args.ray_command == "score":
            return _score(args)
        return _serve(args)
    except RayNotInstalled as err:
        return fail(f"ray {args.ray_command}", err, args)


def _score(args: argparse.Namespace) -> int:
    from maskrt.cli.common import track_kwargs
    from maskrt.detect import parse_face_options
    from maskrt.ray.dataset import score_dataset

    summary = score_dataset(
        args.sources, args.out, address=args.address, num_cpus=args.num_cpus,
        actors=args.actors, batch_size=args.batch, cpus_per_actor=args.cpus_per_actor,
        gpus_per_actor=args.gpus_per_actor, format=args.format, model=args.model,
        backend=args.backend, backend_options=args.backend_options, regions=args.regions,
        preset=args.preset, face_options=parse_face_options(args.face_option),
        **track_kwargs(args), progress=sys.stderr, progress_interval=args.progress_interval)
    print_summary(summary, args.out)
    return 0 if summary["accounting_ok"] else 1


def _serve(args: argparse.Namespace) -> int:
    from maskrt.cli.common import interrupted_by_signals, track_kwargs
    from maskrt.detect import parse_face_options

    if args.ingest and args.out is None:
        raise ValueError("--ingest: expected --out DIR for the records of the ingested frames")
    tracking = track_kwargs(args)
    options = {"regions": args.regions, "preset": args.preset,
               "face_options": parse_face_options(args.face_option)}
    from maskrt.ray.cluster import connect

    connect(args.address, num_cpus=args.num_cpus)
    from ray import serve

    from maskrt.ray.serve import APP_NAME, build_app

    app = build_app({"replicas": args.replicas, "autoscale": args.autoscale,
                     "max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms,
                     "max_ongoing_requests": args.max_ongoing,
                     "max_queued_requests": args.max_queued, "model": args.model,
                     "backend": args.backend, "backend_options": args.backend_options,
                     **options})
    serve.start(http_options={"host": args.host, "port": args.port})
    try:  # from here on Serve is shut down however this ends (serve.run failing too)
        handle = serve.run(app, name=APP_NAME, route_prefix="/")
        # SIGTERM stops as Ctrl-C does (Serve shut down); set before the line is printed
        with interrupted_by_signals():
            scale = (f"autoscaling {args.autoscale[0]}-{args.autoscale[1]} replicas"
                     if args.autoscale else f"{args.replicas} replica(s)")
            what = "every face" if args.regions == "faces" else "the whole frame's decision"
            print(f"maskrt ray serve: http://{args.host}:{args.port}/ ({scale}, batches of up to "
                  f"{args.max_batch}, {args.batch_wait_ms:g} ms wait); POST an encoded image for "
                  f"{what} (?explain=1: with the overlay)", flush=True)
            if args.ingest:
                from maskrt.ray.ingest import ingest

                summary = ingest(args.ingest, args.out, handle=handle, groups=args.groups,
                                 duration_s=args.duration, progress=sys.stderr,
                                 track=tracking["track"],
                                 track_options=tracking["track_options"])
                print_summary(summary, args.out)
                return 0 if summary["accounting_ok"] else 1
            _wait(args.duration)
        return 0
    finally:
        serve.shutdown()


def _wait(duration: float | None) -> None:
    """Until ``duration`` seconds passed (None: until Ctrl-C)."""
    t0 = time.monotonic()
    try:
        while duration is None or time.monotonic() - t0 < duration:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nmaskrt ray serve: stopping", file=sys.stderr)


def print_summary(summary: dict[str, Any], out: Path) -> None:
    counts = summary["counts"]
    ok = "accounting ok" if summary["accounting_ok"] else "ACCOUNTING MISMATCH"
    print(f"{counts['read']} frames read: {counts['scored']} scored, {counts['dropped']} dropped, "
          f"{counts['failed']} failed ({ok})")
    if counts["scored"]:
        latency = summary["latency_ms"]
        print(f"throughput {summary['throughput_fps']} frames/s over {summary['elapsed_s']} s; "
              f"latency ms p50 {latency['p50']} p95 {latency['p95']} p99 {latency['p99']}")
    print(f"labels: {summary['labels']}")
    if summary.get("settings", {}).get("regions") == "faces":
        print(f"faces: {summary['classified_faces'] or 0} classified, "
              f"{summary['reused_faces'] or 0} took their track's decision")
    if summary.get("tracks_ended"):
        print(f"people: {summary['tracks_ended']} tracks ended, {summary['track_labels']}")
    print(f"wrote {summary['outputs']['records']} and {out / 'summary.json'}")
