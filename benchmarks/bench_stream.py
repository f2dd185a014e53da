"""Streaming pipeline vs the raw backend, in the same run.

* ``raw``: ``engine.infer`` on already-decoded, already-resized uint8[32, 224, 224, 3] batches of
  the same frames (the ceiling: nothing but the backend).
* ``pipeline``: ``maskrt.Pipeline`` over 4 video files (MJPG AVIs written with OpenCV from the
  shared face images, 320x240): reader threads decode, the preprocessing thread resizes, batches
  of up to ``--max-batch`` frames cross the sources, records come out with latencies. Run once per
  ``--max-wait-ms`` value.

Each configuration is run ``--repeats`` times; the table gives the median throughput and its
spread (min-max), the ratio of the pipeline to the raw backend, and the pipeline's read->result
latency p50/p95/p99 (pooled over repeats). The videos are lossless sources read as fast as the
pipeline takes them, so the latency includes queueing behind the backend (the pipeline is
saturated on purpose: that is the throughput test).

    python benchmarks/bench_stream.py                       # 4 x 96 frames, batch 32, 5 and 50 ms
    python benchmarks/bench_stream.py --frames 192 --repeats 5 --json out/bench_stream.json

Don't run it while something else loads the CPU (a training run): the ratio would mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

from maskrt.tools.bench import machine_info

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "data" / "facemask"


def cpu_model() -> str:
    return str(machine_info()["cpu"])


def make_videos(directory: Path, count: int, frames: int, size: tuple[int, int]) -> list[Path]:
    paths = sorted((FACES / "val").glob("*/*.jpg"))
    if not paths:
        raise SystemExit(f"no face images under {FACES / 'val'} (the shared data set)")
    faces = [cv2.resize(cv2.imread(str(p)), size, interpolation=cv2.INTER_AREA)
             for p in paths[: max(16, frames)]]
    videos = []
    for v in range(count):
        path = directory / f"camera{v}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
        for i in range(frames):
            writer.write(faces[(i + 7 * v) % len(faces)])
        writer.release()
        videos.append(path)
    return videos


def decoded_batches(videos: list[Path], batch: int) -> list[np.ndarray]:
    from maskrt.image import resize_to_input

    frames = []
    for video in videos:
        cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(resize_to_input(frame))
        cap.release()
    stacked = np.stack(frames)
    return [np.ascontiguousarray(stacked[i:i + batch]) for i in range(0, len(stacked), batch)]


def run_raw(engine, batches: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for batch in batches:
        engine.infer(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def run_pipeline(engine, videos: list[Path], batch_size: int, max_wait_ms: float
                 ) -> tuple[float, list[float], dict]:
    from maskrt.stream.pipeline import Pipeline

    latencies = []
    start = time.perf_counter()
    with Pipeline(engine, [str(v) for v in videos], regions="frame", batch_size=batch_size,
                  max_wait_ms=max_wait_ms) as pipeline:
        for record in pipeline:
            if record.status == "scored":
                latencies.append(record.latency_ms)
    elapsed = time.perf_counter() - start
    counters = pipeline.counters()
    total = counters["total"]
    if total["scored"] != total["read"] or total["in_flight"]:
        raise SystemExit(f"pipeline lost frames: {total}")
    return total["scored"] / elapsed, latencies, counters


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=96, help="frames per video (default 96)")
    parser.add_argument("--size", default="320x240", help="video frame size WxH")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, nargs="+", default=[5.0, 50.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from maskrt.engine import Engine
    from maskrt.graph.model import UntrainedModelWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        engine = Engine(backend=args.backend)
    width, height = (int(x) for x in args.size.lower().split("x"))
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="maskrt-bench-stream-") as tmp:
        videos = make_videos(Path(tmp), args.videos, args.frames, (width, height))
        batches = decoded_batches(videos, args.batch_size)
        n_frames = sum(len(b) for b in batches)
        engine.infer(batches[0])  # warm-up
        # Interleaved (raw, then each max_wait_ms, per repeat) so that drifts of a shared
        # machine's speed hit the baseline and the pipeline alike.
        raw: list[float] = []
        fps: dict[float, list[float]] = {wait: [] for wait in args.max_wait_ms}
        lat: dict[float, list[float]] = {wait: [] for wait in args.max_wait_ms}
        counters: dict[float, object] = {}
        for _ in range(args.repeats):
            raw.append(run_raw(engine, batches))
            for wait in args.max_wait_ms:
                f, latencies, counters[wait] = run_pipeline(engine, videos, args.batch_size, wait)
                fps[wait].append(f)
                lat[wait].extend(latencies)
        runs = {wait: (fps[wait], lat[wait], counters[wait]) for wait in args.max_wait_ms}

    raw_median = statistics.median(raw)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, load average before "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"backend: {engine.backend.describe()}; precision {engine.backend.precision}; "
          f"batch_size {args.batch_size}; {args.videos} videos x {args.frames} frames "
          f"({width}x{height} MJPG) = {n_frames} frames; {args.repeats} repeats")
    print(f"{'configuration':<28}{'frames/s median':>16}{'(min-max)':>18}{'vs raw':>8}"
          f"{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'mean batch':>12}")
    print(f"{'raw backend (decoded)':<28}{raw_median:>16.1f}"
          f"{f'({min(raw):.1f}-{max(raw):.1f})':>18}{1.0:>8.2f}")
    results = {"machine": cpu_model(), "cores": os.cpu_count(), "load_before": load,
               "backend": engine.backend.describe(), "batch_size": args.batch_size,
               "frames": n_frames, "raw_fps": raw, "pipeline": {}}
    for wait, (fps, lat, counters) in runs.items():
        median = statistics.median(fps)
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        name = f"pipeline max_wait_ms={wait:g}"
        print(f"{name:<28}{median:>16.1f}{f'({min(fps):.1f}-{max(fps):.1f})':>18}"
              f"{median / raw_median:>8.2f}{p50:>10.1f}{p95:>10.1f}{p99:>10.1f}"
              f"{counters['mean_batch_size']:>12.1f}")
        results["pipeline"][str(wait)] = {
            "fps": fps, "ratio_to_raw": median / raw_median,
            "latency_ms": {"p50": p50, "p95": p95, "p99": p99},
            "mean_batch_size": counters["mean_batch_size"]}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
