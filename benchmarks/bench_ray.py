"""Offline scoring on Ray (``maskrt.ray.score_dataset``) with 1 and 2 actors vs ``maskrt score``
(the one-process pipeline), on the same inputs, with the same ``--regions``, in the same run,
interleaved.

Inputs, ``--regions frame``: the shared face ``val`` split (392 JPEG files, a folder: split into
units of 32 files read in parallel) and one MJPG video of ``--frames`` 320x240 frames written with
OpenCV (one unit: read in order by one task). ``--regions faces`` (faces found, tracked and
decided; the detector runs in the scoring actors): the shared scene ``val`` photos (98, units of
32) and one camera clip of scene photos (``shared/tools/make_clips.py``, ``--frames`` frames at
640x360, one unit: tracked in one actor). ``--photo-repeats K`` (faces only): the folder is
those photos copied K times under distinct names (98 K photos), so that a job lasts long enough
for the actors' start-up to amortise.

One Ray cluster, started here, serves every Ray run; its start-up is not counted, the actors'
start-up is (it is part of every job). ``--nodes 1`` (default): one local node (``--num-cpus``
logical CPUs, default the machine's). ``--nodes N`` >= 2: a local multi-node cluster
(``ray.cluster_utils.Cluster``: a head node and N-1 worker nodes on this machine, each with
``--num-cpus`` / N logical CPUs, 1 by default), the scoring actors spread over the nodes (Ray's
SPREAD strategy) and the node each actor ran on noted (the table's notes, the JSON's
``actor_nodes``). Ray's session files go under the run's temporary folder, so a Ray cluster
already running on the machine is neither joined nor made the machine's "current" one; the
cluster is shut down at the end. ONNX Runtime threads: the machine's cores / actors
(``score_dataset``'s default). The table gives frames/s (scored frames / the job's wall time),
median over ``--repeats``.

    python benchmarks/bench_ray.py --repeats 2 --json out/bench_ray.json
    python benchmarks/bench_ray.py --regions faces --frames 100 --repeats 2
    python benchmarks/bench_ray.py --regions faces --frames 100 --repeats 2 --nodes 2
    python benchmarks/bench_ray.py --regions faces --photo-repeats 4 --nodes 2 --num-cpus 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_stream import FACES, cpu_model, make_videos

#: each node's object store (a local multi-node cluster: every node's store is on this machine)
NODE_OBJECT_STORE = 300 * 1024 ** 2


def run_pipeline(sources: list[str], out: Path, regions: str) -> float:
    from maskrt.cli import main

    t0 = time.perf_counter()
    if main(["score", *sources, "--out", str(out), "--regions", regions,
             "--progress-interval", "0"]) != 0:
        raise SystemExit("maskrt score failed")
    elapsed = time.perf_counter() - t0
    scored = json.loads((out / "summary.json").read_text())["counts"]["scored"]
    return scored / elapsed


def run_ray(sources: list[str], out: Path, actors: int, batch: int | None, regions: str,
            notes: Path | None = None) -> float:
    """One score_dataset job; ``notes`` (a multi-node cluster): a folder where each scoring
    actor writes the id of its node, the actors spread over the nodes."""
    from maskrt.ray import score_dataset

    spread: dict[str, Any] = {}
    if notes is not None:
        notes.mkdir(parents=True, exist_ok=True)
        spread = {"scorer": _node_noting(regions), "scorer_options": {"node_notes": str(notes)},
                  "ray_remote_args": {"scheduling_strategy": "SPREAD"}}
    t0 = time.perf_counter()
    summary = score_dataset(sources, out, actors=(actors, actors), batch_size=batch,
                            regions=regions, **spread)
    elapsed = time.perf_counter() - t0
    if not summary["accounting_ok"]:
        raise SystemExit(f"accounting mismatch: {summary['counts']}")
    return summary["counts"]["scored"] / elapsed


def _node_noting(regions: str) -> type:
    """The job's scoring class (RecordScorer for frames, UnitScorer for faces), noting in
    ``node_notes`` the id of the node each actor runs on (pickled by value: defined here)."""
    from maskrt.ray.scorer import RecordScorer
    from maskrt.ray.units import UnitScorer

    base = RecordScorer if regions == "frame" else UnitScorer

    class NodeNoting(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, node_notes: str, **kwargs: Any) -> None:
            import ray

            super().__init__(*args, **kwargs)
            node = ray.get_runtime_context().get_node_id()
            Path(node_notes, f"{os.getpid()}.node").write_text(node)

    return NodeNoting


def start_ray(nodes: int, num_cpus: int | None) -> tuple[Any, dict[str, Any]]:
    """The Ray cluster of every Ray run (see the module docstring), the driver connected:
    (the ``Cluster`` or None for one node, what the cluster is)."""
    from maskrt.ray.cluster import cluster_cpus, connect

    if nodes == 1:
        connect(num_cpus=num_cpus)
        return None, {"nodes": 1, "cpus_per_node": [cluster_cpus()], "node_names": {},
                      "actors_spread": False}
    from ray.cluster_utils import Cluster

    per_node = max(1, num_cpus // nodes) if num_cpus else 1
    node_args = {"num_cpus": per_node, "object_store_memory": NODE_OBJECT_STORE}
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={**node_args, "include_dashboard": False})
    try:
        workers = [cluster.add_node(**node_args) for _ in range(nodes - 1)]
        cluster.wait_for_nodes()
        connect(address=cluster.address)
    except BaseException:
        cluster.shutdown()
        raise
    names = {cluster.head_node.node_id: "head"}
    names.update({w.node_id: f"worker {i}" for i, w in enumerate(workers, 1)})
    return cluster, {"nodes": nodes, "cpus_per_node": [float(per_node)] * nodes,
                     "node_names": names, "actors_spread": True}


def stop_ray(cluster: Any) -> None:
    import ray

    ray.shutdown()
    if cluster is not None:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300, help="frames of the video")
    parser.add_argument("--batch", type=int, default=None,
                        help="score_dataset's batch_size (default: 16 frames, 32 faces)")
    parser.add_argument("--regions", choices=("frame", "faces"), default="frame")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="logical CPUs of the cluster (--nodes N: split over the nodes, "
                             "default 1 a node)")
    parser.add_argument("--nodes", type=int, default=1,
                        help="Ray nodes (>= 2: a local multi-node cluster, actors spread)")
    parser.add_argument("--photo-repeats", type=int, default=1,
                        help="--regions faces: the folder is the scene photos copied K times")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.nodes < 1:
        parser.error(f"--nodes: expected >= 1, got {args.nodes}")
    if args.photo_repeats < 1:
        parser.error(f"--photo-repeats: expected >= 1, got {args.photo_repeats}")
    if args.photo_repeats > 1 and args.regions != "faces":
        parser.error("--photo-repeats: only with --regions faces (the scene photos)")
    if args.nodes > 1 and args.num_cpus is not None and args.num_cpus < args.nodes:
        parser.error(f"--num-cpus: expected >= --nodes ({args.nodes}), got {args.num_cpus}")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    # Ray's session files (and its "current cluster" file) under tmp: never join, nor become
    # the machine's current cluster instead of, a Ray cluster already running here
    os.environ["RAY_TMPDIR"] = str(tmp)
    inputs, folder_photos = _inputs(tmp, args.regions, args.frames, args.photo_repeats)
    cluster, ray_info = start_ray(args.nodes, args.num_cpus)
    try:
        results, actor_nodes = _run(args, tmp, inputs, ray_info["node_names"] if cluster else None)
    finally:
        stop_ray(cluster)
    names = ray_info.pop("node_names")
    ray_info["photo_repeats"] = args.photo_repeats
    ray_info["folder_photos"] = folder_photos
    cpus = ray_info["cpus_per_node"]
    print(f"\n{cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    if args.nodes == 1:
        print(f"Ray: one local node, {cpus[0]:g} logical CPUs")
    else:
        print(f"Ray: local multi-node cluster (ray.cluster_utils.Cluster), {args.nodes} nodes "
              f"(head + {args.nodes - 1} worker{'s' if args.nodes > 2 else ''}) x "
              f"{cpus[0]:g} logical CPU{'s' if cpus[0] != 1 else ''}, actors spread (SPREAD)")
    print(f"folder: {folder_photos} files"
          + (f" (the {folder_photos // args.photo_repeats} scene val photos copied "
             f"{args.photo_repeats} times)" if args.photo_repeats > 1 else ""))
    print("| input | maskrt score | ray, 1 actor | ray, 2 actors |\n|---|---|---|---|")
    for name, runs in results.items():
        cells = [f"{statistics.median(v):.1f}" for v in runs.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if actor_nodes:
        print("\nnodes the actors ran on (one list a repeat):")
        for name, runs in actor_nodes.items():
            for label, per_repeat in runs.items():
                print(f"  {name} {label}: " + "; ".join(", ".join(r) or "?" for r in per_repeat))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"cpu": cpu_model(), "ray": ray_info, "results": results}
        if actor_nodes:
            record["actor_nodes"] = actor_nodes
            record["node_ids"] = {v: k for k, v in names.items()}
        args.json.write_text(json.dumps(record, indent=2) + "\n")


def _run(args: argparse.Namespace, tmp: Path, inputs: dict[str, list[str]],
         node_names: dict[str, str] | None) -> tuple[dict, dict]:
    """The interleaved runs: frames/s by input and run, and (a multi-node cluster) the nodes
    each Ray run's actors ran on, by input, run and repeat."""
    results: dict[str, dict[str, list[float]]] = {name: {} for name in inputs}
    actor_nodes: dict[str, dict[str, list[list[str]]]] = {name: {} for name in inputs}

    def ray_run(name: str, sources: list[str], actors: int, label: str):
        def run(out: Path) -> float:
            notes = None if node_names is None else out.with_name(out.name + "-nodes")
            fps = run_ray(sources, out, actors, args.batch, args.regions, notes)
            if notes is not None:
                ids = [p.read_text() for p in notes.glob("*.node")]
                ran = sorted(node_names.get(node, node[:8]) for node in ids)
                actor_nodes[name].setdefault(label, []).append(ran)
            return fps
        return run

    for repeat in range(args.repeats):
        for name, sources in inputs.items():
            runs = {"maskrt score": lambda o: run_pipeline(sources, o, args.regions),
                    "ray, 1 actor": ray_run(name, sources, 1, "ray, 1 actor"),
                    "ray, 2 actors": ray_run(name, sources, 2, "ray, 2 actors")}
            for label, run in runs.items():
                fps = run(tmp / f"{name}-{label.replace(' ', '_')}-{repeat}")
                results[name].setdefault(label, []).append(fps)
                print(f"{name:6s} {label:14s} {fps:7.1f} frames/s", flush=True)
    return results, {k: v for k, v in actor_nodes.items() if v}


def _inputs(tmp: Path, regions: str, frames: int,
            photo_repeats: int = 1) -> tuple[dict[str, list[str]], int]:
    """The folder and the video of the run (see the module docstring), and the folder's files."""
    if regions == "frame":
        video = make_videos(tmp, 1, frames, (320, 240))[0]
        folder = FACES / "val"
        return ({"folder": [str(folder)], "video": [str(video)]},
                sum(1 for p in folder.rglob("*") if p.is_file()))
    import subprocess
    import sys

    scenes = FACES.parent / "scenes" / "val"
    subprocess.run([sys.executable, str(FACES.parents[1] / "tools" / "make_clips.py"),
                    str(scenes), str(tmp / "clips"), "--clips", "1", "--seconds",
                    str(frames / 10), "--size", "640x360", "--seed", "3"], check=True)
    photos = scenes / "images"
    if photo_repeats > 1:
        copies = tmp / "photos"
        copies.mkdir()
        for k in range(photo_repeats):
            for path in sorted(photos.iterdir()):
                shutil.copyfile(path, copies / f"r{k}_{path.name}")
        photos = copies
    return ({"folder": [str(photos)], "video": [str(tmp / "clips" / "clip_000.avi")]},
            sum(1 for p in photos.iterdir() if p.is_file()))


if __name__ == "__main__":
    main()
