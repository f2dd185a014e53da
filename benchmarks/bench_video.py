"""Video: temporal reuse against classifying every face, and cameras per machine.

    python benchmarks/bench_video.py clips DIR [--repeats 1] [--json out/bench_video_clips.json]
    python benchmarks/bench_video.py cameras DIR [--max-cameras 8] [--seconds 40] [--repeats 1]
                                                 [--json out/bench_video_cameras.json]
    (any other option, e.g. --track-option detect_every=2, is passed to maskrt)

DIR is a clip set made by ``../shared/tools/make_clips.py`` (clips/val from scenes/val, 1280x720,
10 fps: ``python ../shared/tools/make_clips.py ../shared/data/scenes/val clips/val --clips 8
--seconds 10``).

* ``clips``: ``maskrt eval DIR`` with ``--reuse on`` and ``--reuse off``, interleaved
  (on, off, on, off ... for ``--repeats``): frames/s (median) and every clip metric of both.
* ``cameras``: N loopback MJPEG cameras at 1280x720, 10 fps (one real server process each,
  serving a clip of DIR in a loop, ``tests/streaming_servers.py``), scored by one ``maskrt score``
  for ``--seconds``; for N = 1, 2, ... the share of the frames the cameras sent that were scored
  and the p95 read-to-record latency; the largest N with >= 95% scored and p95 <= 1 s, with
  reuse on and off (with ``--repeats`` R, each N runs R times and is judged by the medians).

Figures are ratios within one run and medians; don't run it while something else loads the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

REPO = Path(__file__).resolve().parents[1]
SERVERS = REPO / "tests" / "streaming_servers.py"
CLIP_KEYS = ("mota", "idf1", "id_switches", "det_recall", "det_precision", "track_decision_acc",
             "without_mask_track_recall", "label_flicker", "pred_tracks_per_person",
             "classified_per_frame")
CAMERA_FPS = 10.0


def maskrt(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "maskrt", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"maskrt {' '.join(args)} failed (exit {done.returncode}):\n"
                         f"{done.stderr[-2000:]}")


def bench_clips(clips: Path, repeats: int, extra: list[str]) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeats):
            for reuse in ("on", "off"):
                out = Path(tmp) / f"{reuse}{k}.json"
                maskrt("eval", str(clips), "--reuse", reuse, "--json", str(out), *extra)
                runs[reuse].append(json.loads(out.read_text()))
                print(f"reuse {reuse} #{k}: {runs[reuse][-1]['frames_per_s']:.2f} frames/s",
                      flush=True)
    result = {}
    for reuse, done in runs.items():
        result[reuse] = {"frames_per_s": statistics.median(r["frames_per_s"] for r in done),
                         **{key: done[-1][key] for key in CLIP_KEYS}}
    result["speedup"] = result["on"]["frames_per_s"] / result["off"]["frames_per_s"]
    return result


def camera_frames(clip: Path, directory: Path) -> Path:
    """The clip's frames as JPEG files, for a looping MJPEG camera."""
    directory.mkdir(parents=True)
    capture = cv2.VideoCapture(str(clip))
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        cv2.imwrite(str(directory / f"{index:05d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
        index += 1
    capture.release()
    return directory


def run_cameras(frames: list[Path], n: int, seconds: float, reuse: str,
                extra: list[str]) -> dict[str, Any]:
    sys.path.insert(0, str(SERVERS.parent))
    from streaming_servers import free_port, mjpeg_server

    servers = [mjpeg_server(frames[i % len(frames)], port=free_port(), fps=CAMERA_FPS)
               for i in range(n)]
    with tempfile.TemporaryDirectory() as out:
        try:
            for server in servers:
                server.start()
            urls = [f"http://127.0.0.1:{s.port}/cam{i}.mjpg" for i, s in enumerate(servers)]
            maskrt("score", *urls, "--out", out, "--duration", str(seconds), "--reuse", reuse,
                   "--progress-interval", "0", *extra)
        finally:
            for server in servers:
                server.kill()
        summary = json.loads(Path(out, "summary.json").read_text())
    sent = CAMERA_FPS * summary["elapsed_s"] * n
    return {"cameras": n, "reuse": reuse, "scored": summary["counts"]["scored"],
            "read": summary["counts"]["read"], "sent": round(sent),
            "scored_share": summary["counts"]["scored"] / sent,
            "p95_latency_ms": summary["latency_ms"]["p95"],
            "dropped": summary["counts"]["dropped"], "reasons": _reasons(summary)}


def _reasons(summary: dict[str, Any]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for source in summary["sources"].values():
        for reason, count in source.get("reasons", {}).items():
            totals[reason] = totals.get(reason, 0) + count
    return totals


def bench_cameras(clips: Path, max_cameras: int, seconds: float, extra: list[str],
                  repeats: int = 1) -> dict[str, Any]:
    """N = 1, 2, ... cameras until one is not kept up with, reuse on then off; each N run
    ``repeats`` times and judged by the medians of its runs (one run of 30 s at the edge
    can pass or fail by chance: on a 2-core VNNI EPYC, 5 cameras gave 78.6% once and 96.5-99.0%
    in seven more runs)."""
    rows: list[dict[str, Any]] = []
    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        frames = [camera_frames(c, Path(tmp) / c.stem) for c in sorted(clips.glob("*.avi"))]
        for reuse in ("on", "off"):
            best[reuse] = 0
            for n in range(1, max_cameras + 1):
                runs = [run_cameras(frames, n, seconds, reuse, extra) for _ in range(repeats)]
                rows.extend(runs)
                share = statistics.median(r["scored_share"] for r in runs)
                p95 = statistics.median(r["p95_latency_ms"] or 1e9 for r in runs)
                ok = share >= 0.95 and p95 <= 1000
                each = ", ".join(f"{r['scored_share']:.1%}" for r in runs)
                print(f"reuse {reuse}, {n} cameras: {share:.1%} scored, p95 {p95:.0f} ms "
                      f"(medians of {repeats}: {each}) {'ok' if ok else 'NOT real time'}",
                      flush=True)
                if not ok:
                    break
                best[reuse] = n
    return {"rows": rows, "cameras_in_real_time": best, "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("clips", "cameras"))
    parser.add_argument("clips", type=Path, help="a clip set (make_clips.py)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-cameras", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--json", type=Path, default=None)
    # any other option goes to maskrt as it is (e.g. --preset fast, --track-option K=V)
    args, extra = parser.parse_known_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    if args.kind == "clips":
        result = bench_clips(args.clips, args.repeats, extra)
    else:
        result = bench_cameras(args.clips, args.max_cameras, args.seconds, extra, args.repeats)
    result.update(kind=args.kind, clips=str(args.clips), started=started, options=extra)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
