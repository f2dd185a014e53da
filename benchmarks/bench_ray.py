"""Offline scoring on Ray (``maskrt.ray.score_dataset``) with 1 and 2 actors vs ``maskrt score``
(the one-process pipeline), on the same inputs, with the same ``--regions``, in the same run,
interleaved.

Inputs, ``--regions frame``: the shared face ``val`` split (392 JPEG files, a folder: split into
units of 32 files read in parallel) and one MJPG video of ``--frames`` 320x240 frames written with
OpenCV (one unit: read in order by one task). ``--regions faces`` (faces found, tracked and
decided; the detector runs in the scoring actors): the shared scene ``val`` photos (98, units of
32) and one camera clip of scene photos (``shared/tools/make_clips.py``, ``--frames`` frames at
640x360, one unit: tracked in one actor). One local Ray cluster (``--num-cpus`` logical CPUs, default the
machine's) serves every Ray run; its start-up is not counted, the actors' start-up is (it is part
of every job). ONNX Runtime threads: the machine's cores / actors (``score_dataset``'s default).
The table gives frames/s (scored frames / the job's wall time), median over ``--repeats``.

    python benchmarks/bench_ray.py --repeats 2 --json out/bench_ray.json
    python benchmarks/bench_ray.py --regions faces --frames 100 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench_stream import FACES, cpu_model, make_videos


def run_pipeline(sources: list[str], out: Path, regions: str) -> float:
    from maskrt.cli import main

    t0 = time.perf_counter()
    if main(["score", *sources, "--out", str(out), "--regions", regions,
             "--progress-interval", "0"]) != 0:
        raise SystemExit("maskrt score failed")
    elapsed = time.perf_counter() - t0
    scored = json.loads((out / "summary.json").read_text())["counts"]["scored"]
    return scored / elapsed


def run_ray(sources: list[str], out: Path, actors: int, batch: int | None, regions: str) -> float:
    from maskrt.ray import score_dataset

    t0 = time.perf_counter()
    summary = score_dataset(sources, out, actors=(actors, actors), batch_size=batch,
                            regions=regions)
    elapsed = time.perf_counter() - t0
    if not summary["accounting_ok"]:
        raise SystemExit(f"accounting mismatch: {summary['counts']}")
    return summary["counts"]["scored"] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300, help="frames of the video")
    parser.add_argument("--batch", type=int, default=None,
                        help="score_dataset's batch_size (default: 16 frames, 32 faces)")
    parser.add_argument("--regions", choices=("frame", "faces"), default="frame")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from maskrt.ray.cluster import connect

    connect(num_cpus=args.num_cpus)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    inputs = _inputs(tmp, args.regions, args.frames)
    results: dict[str, dict[str, list[float]]] = {name: {} for name in inputs}
    for repeat in range(args.repeats):
        for name, sources in inputs.items():
            runs = {"maskrt score": lambda o: run_pipeline(sources, o, args.regions),
                    "ray, 1 actor": lambda o: run_ray(sources, o, 1, args.batch, args.regions),
                    "ray, 2 actors": lambda o: run_ray(sources, o, 2, args.batch, args.regions)}
            for label, run in runs.items():
                fps = run(tmp / f"{name}-{label.replace(' ', '_')}-{repeat}")
                results[name].setdefault(label, []).append(fps)
                print(f"{name:6s} {label:14s} {fps:7.1f} frames/s", flush=True)
    print(f"\n{cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("| input | maskrt score | ray, 1 actor | ray, 2 actors |\n|---|---|---|---|")
    for name, runs in results.items():
        cells = [f"{statistics.median(v):.1f}" for v in runs.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu": cpu_model(), "results": results}, indent=2) + "\n")


def _inputs(tmp: Path, regions: str, frames: int) -> dict[str, list[str]]:
    """The folder and the video of the run (see the module docstring)."""
    if regions == "frame":
        video = make_videos(tmp, 1, frames, (320, 240))[0]
        return {"folder": [str(FACES / "val")], "video": [str(video)]}
    import subprocess
    import sys

    scenes = FACES.parent / "scenes" / "val"
    subprocess.run([sys.executable, str(FACES.parents[1] / "tools" / "make_clips.py"),
                    str(scenes), str(tmp / "clips"), "--clips", "1", "--seconds",
                    str(frames / 10), "--size", "640x360", "--seed", "3"], check=True)
    return {"folder": [str(scenes / "images")], "video": [str(tmp / "clips" / "clip_000.avi")]}


if __name__ == "__main__":
    main()
