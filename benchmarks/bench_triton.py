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
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--batch", type=parse_batches, default=[1, 32])
    parser.add_argument("--iterations", type=int, default=30, help="timed batches per size")
    parser.add_argument("--block", type=int, default=5, help="timed batches per block")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads (0: skip)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore", UntrainedModelWarning)
    machine = machine_info()
    print(f"machine: {machine['cpu']} ({machine['cores']} cores), 1-min load {machine['load_1min']}")
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


if __name__ == "__main__":
    sys.exit(main())
