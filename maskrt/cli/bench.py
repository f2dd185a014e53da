"""``maskrt bench``: trtexec-style throughput and latency of a backend, per batch size."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from maskrt.backends import add_backend_arguments
from maskrt.tools.bench import parse_batches


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_arguments(parser, default="onnxruntime")
    parser.add_argument("--batch", type=parse_batches, default=[1, 8, 32],
                        help="comma-separated batch sizes (default: 1,8,32)")
    parser.add_argument("--explain", action="store_true", help="also draw CAM overlays")
    parser.add_argument("--iterations", type=int, default=50, help="timed batches per size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches per size")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")


def main(args: argparse.Namespace) -> int:
    from maskrt.cli.common import fail, open_engine
    from maskrt.tools.bench import bench_engine, machine_info

    if args.iterations < 1 or args.warmup < 0:
        print(f"maskrt bench: expected --iterations >= 1 and --warmup >= 0, got {args.iterations} "
              f"and {args.warmup}", file=sys.stderr)
        return 2
    try:
        engine, _ = open_engine(args, chunk_size=max(args.batch))
    except ValueError as err:
        return fail("bench", err, args)
    machine = machine_info()
    with engine:
        backend = engine.backend.describe()
        print(f"machine: {machine['cpu']} ({machine['cores']} cores), load {machine['load_1min']}")
        print(f"backend: {backend}; mode: {'classify+explain' if args.explain else 'classify'}; "
              f"{args.warmup} warm-up + {args.iterations} timed batches per size")
        print(f"{'batch':>5s} {'images/s':>10s} {'p50 ms':>9s} {'p95 ms':>9s} {'p99 ms':>9s}")
        rows = []
        for batch in args.batch:
            row = bench_engine(engine, batch, explain=args.explain, iterations=args.iterations,
                               warmup=args.warmup)
            rows.append(row)
            print(f"{batch:5d} {row['images_per_s']:10.1f} {row['p50_ms']:9.2f} "
                  f"{row['p95_ms']:9.2f} {row['p99_ms']:9.2f}")
    if args.json:
        report = {"machine": machine, "backend": backend, "explain": args.explain, "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0
