"""The triton backend (a real tritonserver on loopback) against ONNX Runtime in-process.

    .venv/bin/python benchmarks/bench_triton.py [--batch 1,32] [--iterations 30] [--block 5]
        [--concurrency 16] [--json FILE]

Starts its own server (the nvidia-pytriton wheel's binary, Python backend) on the repository
``maskrt export --triton-repo DIR --platform python`` writes: the same ONNX graph on ONNX Runtime
inside the server, so the difference is the serving path (gRPC or HTTP, the Python-backend stub,
the dynamic batcher). Per batch size, ONNX Runtime in-process, triton over gRPC and triton over
HTTP run in alternating blocks of ``--block`` batches, each block after one untimed batch, so
the machine's drifts hit all alike (not batch by batch: the in-process session's and the
server's ONNX Runtime threads spin-wait on the same two cores after each call, which would charge
one's spinning to the next): images/s (batch / median latency) and p50/p95/p99 batch latency.
Then ``--concurrency`` client threads send
single images at once over gRPC, as cameras would: aggregate images/s, per-request latency, and
the server's mean batch (inference_count / execution_count from its statistics). Server and
clients share this machine's cores.

The whole faces pipeline (``--pipeline faces``)::

    .venv/bin/python benchmarks/bench_triton.py --pipeline faces [--photos 98] [--repeats 3]
        [--instances 1] [--photos-dir /work/shared/data/scenes/val/images] [--json FILE]

Exports ``maskrt export --triton-repo DIR --pipeline faces --platform python [--instances K]``
(the maskrt, maskrt_yunet and maskrt_faces models), starts its own server on it, and runs
``maskrt score``'s pipeline (``maskrt.Pipeline`` over a folder of the first ``--photos`` scene
photos, score's defaults: faces found, batch 32, 20 ms wait; no sinks) three ways: in-process
with ``--backend-option precision=fp32`` (the served classifier runs the FP32 graph: like with
like), in-process with the default precision (the INT8 twin, for reference), and ``--backend
triton --backend-option url=GRPC_URL,pipeline=faces`` (each frame goes to maskrt_faces, which
detects and classifies in the server). Each engine is opened once and warmed up on a few
photos; then each repeat runs every mode once over all the photos, the order rotating per repeat,
so the machine's drifts hit all alike. Per mode: photos/s (scored frames / wall time of the run,
median over ``--repeats``), faces per photo (face records / scored frames) and photos/s against
in-process FP32; a warning when triton and in-process FP32 give different numbers of face
records (or any frame fails). ``--batch``, ``--iterations``, ``--block`` and ``--concurrency``
are the classifier mode's; ``--photos``, ``--repeats``, ``--instances`` and ``--photos-dir``
the faces mode's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from maskrt.engine import Engine
from maskrt.graph import Graph
from maskrt.graph.model import UntrainedModelWarning
from maskrt.serving.local_server import LocalTritonServer, model_statistics
from maskrt.serving.triton_repo import RepositorySettings, write_repository
from maskrt.tools.bench import machine_info, parse_batches, sample_batch, summarise, write_results

SCENES = Path("/work/shared/data/scenes/val/images")
WARMUP_PHOTOS = 4  # an untimed run per mode first: ORT's first runs, the server's stubs


def time_blocks(fns: dict, iterations: int, block: int) -> dict[str, np.ndarray]:
    """Seconds per call of each function, ``iterations`` in all, in alternating blocks of
    ``block`` timed calls, each block after one untimed call."""
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    while len(seconds[next(iter(fns))]) < iterations:
        for name, fn in fns.items():
            fn()
            for _ in range(min(block, iterations - len(seconds[name]))):
                start = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - start)
    return {name: np.array(values) for name, values in seconds.items()}


def concurrent_row(engine: Engine, url: str, clients: int, requests: int) -> dict[str, float]:
    """``clients`` threads sending ``requests`` single images in all; per-request latency."""
    image = sample_batch(1)
    latencies = np.empty(requests)

    def one(i: int) -> None:
        start = time.perf_counter()
        engine.infer(image)
        latencies[i] = time.perf_counter() - start

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))  # warm-up: every thread's first request
        before = model_statistics(url)
        start = time.perf_counter()
        list(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
    after = model_statistics(url)
    row = summarise(latencies, 1)
    inferences, executions = (after[key] - before[key] for key in ("inference_count",
                                                                   "execution_count"))
    row.update(images_per_s=requests / wall, clients=clients,
               server_mean_batch=inferences / max(executions, 1))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", choices=("classifier", "faces"), default="classifier",
                        help="classifier (default): face crops, batch by batch; faces: maskrt "
                             "score over scene photos, in-process against the served faces "
                             "pipeline")
    parser.add_argument("--batch", type=parse_batches, default=[1, 32])
    parser.add_argument("--iterations", type=int, default=30, help="timed batches per size")
    parser.add_argument("--block", type=int, default=5, help="timed batches per block")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads (0: skip)")
    parser.add_argument("--photos", type=int, default=None,
                        help="faces: the first N scene photos (default: all)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="faces: timed runs per mode (the median is reported)")
    parser.add_argument("--instances", type=int, default=1,
                        help="faces: instance_group count of each exported model")
    parser.add_argument("--photos-dir", type=Path, default=SCENES,
                        help=f"faces: the scene photos (default {SCENES})")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore", UntrainedModelWarning)
    machine = machine_info()
    print(f"machine: {machine['cpu']} ({machine['cores']} cores), 1-min load {machine['load_1min']}")
    if args.pipeline == "faces":
        for flag in ("photos", "repeats", "instances"):
            value = getattr(args, flag)
            if value is not None and value < 1:
                parser.error(f"--{flag}: expected an integer >= 1, got {value}")
        results = faces_main(args)
        if results is None:
            return 2
        results["machine"] = machine
        write_results(args.json, results)
        return 0
    with tempfile.TemporaryDirectory(prefix="maskrt-bench-triton-") as root:
        write_repository(root, RepositorySettings("python", max(32, *args.batch)),
                         Graph(None).onnx_path(), log=lambda _: None)
        with LocalTritonServer(root) as server:
            results = run(args, server)
    results["machine"] = machine
    write_results(args.json, results)
    return 0


def run(args: argparse.Namespace, server: LocalTritonServer) -> dict:
    chunk = max(args.batch)
    with Engine(chunk_size=chunk, precision="fp32") as local, \
            Engine(backend="triton", url=server.grpc_url, chunk_size=chunk) as over_grpc, \
            Engine(backend="triton", url=server.http_url, protocol="http",
                   chunk_size=chunk) as over_http:
        engines = {"onnxruntime in-process": local, "triton grpc": over_grpc, "triton http": over_http}
        for name, engine in engines.items():
            print(f"{name}: {engine.backend.describe()}")
        print(f"{'batch':>5s} {'backend':>24s} {'images/s':>9s} {'p50 ms':>8s} {'p95 ms':>8s} "
              f"{'p99 ms':>8s} {'vs in-process':>13s}")
        rows = []
        for batch in args.batch:
            images = sample_batch(batch)
            seconds = time_blocks({name: (lambda e=e: e.infer(images))
                                   for name, e in engines.items()}, args.iterations, args.block)
            base = None
            for name in engines:
                row = {"backend": name, **summarise(seconds[name], batch)}
                base = base or row["images_per_s"]
                row["vs_in_process"] = row["images_per_s"] / base
                rows.append(row)
                print(f"{batch:5d} {name:>24s} {row['images_per_s']:9.1f} {row['p50_ms']:8.1f} "
                      f"{row['p95_ms']:8.1f} {row['p99_ms']:8.1f} {row['vs_in_process']:12.2f}x")
        concurrent = None
        if args.concurrency > 0:
            concurrent = concurrent_row(over_grpc, server.grpc_url, args.concurrency,
                                        requests=8 * args.concurrency)
            print(f"{args.concurrency} gRPC clients x batch 1: {concurrent['images_per_s']:.1f} "
                  f"images/s, per request p50/p95/p99 {concurrent['p50_ms']:.0f} / "
                  f"{concurrent['p95_ms']:.0f} / {concurrent['p99_ms']:.0f} ms, server mean batch "
                  f"{concurrent['server_mean_batch']:.1f}")
    return {"rows": rows, "concurrent": concurrent, "server": over_grpc.backend.describe()}


# ---------------------------------------------------------------------------- --pipeline faces

def faces_main(args: argparse.Namespace) -> dict | None:
    """Export the faces repository, start the server, run the modes; None: nothing to score."""
    from maskrt.cli import main as cli_main

    if not args.photos_dir.is_dir():
        print(f"bench_triton: --photos-dir {args.photos_dir}: no such folder", file=sys.stderr)
        return None
    photos = sorted(p for p in args.photos_dir.iterdir() if p.is_file())[:args.photos]
    if not photos:
        print(f"bench_triton: no photos in {args.photos_dir}", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory(prefix="maskrt-bench-triton-faces-") as tmp:
        root = Path(tmp)
        folders = {"timed": root / "photos", "warmup": root / "warmup"}
        for name, chosen in (("timed", photos), ("warmup", photos[:WARMUP_PHOTOS])):
            folders[name].mkdir()
            for path in chosen:
                shutil.copy(path, folders[name] / path.name)
        repo = root / "repo"
        status = cli_main(["export", "--triton-repo", str(repo), "--pipeline", "faces",
                           "--platform", "python", "--instances", str(args.instances)])
        if status != 0:
            print(f"bench_triton: maskrt export --triton-repo exited {status}", file=sys.stderr)
            return None
        with LocalTritonServer(repo) as server:
            results = run_faces(args, server, folders, len(photos))
    results.update(pipeline="faces", photos=len(photos), repeats=args.repeats,
                   instances=args.instances, photos_dir=str(args.photos_dir))
    return results


def score_once(engine: Engine, folder: Path) -> dict:
    """One ``maskrt score`` run's pipeline over ``folder`` (score's defaults, no sinks): the
    wall time, scored and failed frames, and the face records as (photo, region) -> label."""
    from maskrt.stream.pipeline import Pipeline

    faces: dict[tuple, str | None] = {}
    start = time.perf_counter()
    with Pipeline(engine, [str(folder)], batch_size=32, max_wait_ms=20.0) as pipeline:
        for record in pipeline:
            if record.status == "scored" and record.region_index is not None:
                faces[(Path(record.uri or "").name, record.frame_index,
                       record.region_index)] = record.label
        totals = pipeline.counters()["total"]
    wall = time.perf_counter() - start
    return {"wall_s": wall, "scored": totals["scored"], "failed": totals["failed"],
            "dropped": totals["dropped"], "faces": faces}


def run_faces(args: argparse.Namespace, server: LocalTritonServer, folders: dict[str, Path],
              n_photos: int) -> dict:
    from maskrt.backends.registry import DEFAULT_BACKEND, parse_options

    served_option = f"url={server.grpc_url},pipeline=faces"
    modes = {  # name: (--backend, --backend-option), as maskrt score parses them
        "in-process fp32": (DEFAULT_BACKEND, ["precision=fp32"]),
        "in-process default": (DEFAULT_BACKEND, []),
        "triton faces (grpc)": ("triton", [served_option]),
    }
    engines = {name: Engine(backend=backend, **parse_options(backend, pairs))
               for name, (backend, pairs) in modes.items()}
    try:
        for name, engine in engines.items():
            print(f"{name}: {engine.backend.describe()}")
            score_once(engine, folders["warmup"])
        runs: dict[str, list[dict]] = {name: [] for name in engines}
        order = list(engines)
        for repeat in range(args.repeats):
            for name in order[repeat % len(order):] + order[:repeat % len(order)]:
                run = score_once(engines[name], folders["timed"])
                runs[name].append(run)
                print(f"  repeat {repeat + 1}/{args.repeats} {name:>20s}: {run['scored']} "
                      f"photos in {run['wall_s']:.1f} s, {len(run['faces'])} faces")
        backends = {name: engine.backend.describe() for name, engine in engines.items()}
    finally:
        for engine in engines.values():
            engine.close()
    rows = []
    base = None
    for name in engines:
        rates = [r["scored"] / r["wall_s"] for r in runs[name]]
        last = runs[name][-1]
        row = {"mode": name, "backend": backends[name],
               "backend_options": modes[name][1], "photos_per_s": statistics.median(rates),
               "photos_per_s_runs": rates, "wall_s_runs": [r["wall_s"] for r in runs[name]],
               "scored_frames": last["scored"], "failed_frames": last["failed"],
               "dropped_frames": last["dropped"], "face_records": len(last["faces"]),
               "faces_per_photo": len(last["faces"]) / max(last["scored"], 1)}
        base = base or row["photos_per_s"]
        row["vs_in_process_fp32"] = row["photos_per_s"] / base
        rows.append(row)
    by_mode = {row["mode"]: row for row in rows}
    local, served = by_mode["in-process fp32"], by_mode["triton faces (grpc)"]
    ratio = served["photos_per_s"] / local["photos_per_s"]
    print(f"\n{n_photos} scene photos, median of {args.repeats} run(s) per mode, modes in "
          f"rotating order; server: {server.grpc_url}, {args.instances} instance(s) per model")
    print(f"{'mode':>22s} {'photos/s':>9s} {'faces/photo':>11s} {'face records':>12s} "
          f"{'failed':>6s} {'vs in-process fp32':>18s}")
    for row in rows:
        print(f"{row['mode']:>22s} {row['photos_per_s']:9.2f} {row['faces_per_photo']:11.2f} "
              f"{row['face_records']:12d} {row['failed_frames']:6d} "
              f"{row['vs_in_process_fp32']:17.2f}x")
    print(f"triton / in-process fp32: {ratio:.2f}x")
    warnings_seen = []
    if served["face_records"] != local["face_records"]:
        warnings_seen.append(f"face records differ: triton {served['face_records']}, "
                             f"in-process fp32 {local['face_records']}")
    for name in engines:
        counts = {len(r["faces"]) for r in runs[name]}
        if len(counts) > 1:
            warnings_seen.append(f"{name}: face records vary between runs: {sorted(counts)}")
        per_run = [(r["scored"], r["failed"], r["dropped"]) for r in runs[name]]
        if any(counts != (n_photos, 0, 0) for counts in per_run):
            warnings_seen.append(f"{name}: not every photo was scored (scored, failed, dropped "
                                 f"per run: {per_run})")
    local_faces, served_faces = (runs[name][-1]["faces"]
                                 for name in ("in-process fp32", "triton faces (grpc)"))
    shared = set(local_faces) & set(served_faces)
    label_mismatches = sum(local_faces[k] != served_faces[k] for k in shared)
    if label_mismatches:
        warnings_seen.append(f"{label_mismatches} of {len(shared)} faces labelled differently by "
                             f"triton and in-process fp32")
    for line in warnings_seen:
        print(f"WARNING: {line}")
    if not warnings_seen:
        print(f"triton and in-process fp32 agree: {local['face_records']} face records, "
              f"the same labels")
    return {"rows": rows, "triton_vs_in_process_fp32": ratio,
            "face_records_match": served["face_records"] == local["face_records"],
            "label_mismatches": label_mismatches, "warnings": warnings_seen,
            "server": backends["triton faces (grpc)"]}


if __name__ == "__main__":
    sys.exit(main())
