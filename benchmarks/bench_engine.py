"""ONNX Runtime classify-only vs classify+explain, and vs the pytorch-grad-cam pipeline.

    .venv/bin/python benchmarks/bench_engine.py [--batch 1,8,32] [--iterations 30] [--json FILE]

Every figure comes from this one run on this machine: images/s (batch / median batch latency)
and p50/p95/p99 batch latency per batch size. The baseline for explain is classify-only on the
same engine, interleaved batch by batch so that the machine's drifts hit both alike; the
baseline for the whole explain pipeline is pytorch-grad-cam (GradCAM on
layer4[-1] + show_cam_on_image) on the same weights with PyTorch on the CPU.

Targets (2-core CPU): explain keeps >= 0.95x classify-only throughput at batch 32, and is >= 5x
the pytorch-grad-cam pipeline's images/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from maskrt.tools.bench import (bench_modes, machine_info, parse_batches, sample_batch, summarise,
                          time_calls)
from maskrt.engine import Engine
from maskrt.graph.model import UntrainedModelWarning, load_model


def grad_cam_pipeline_seconds(batch: int, iterations: int, warmup: int) -> np.ndarray:
    """Per-batch seconds of pytorch-grad-cam: preprocess, forward+backward GradCAM, overlay."""
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from maskrt.graph.model import Preprocess

    model = load_model().eval()
    preprocess = Preprocess()
    images = sample_batch(batch)
    rgb_float = images[..., ::-1].astype(np.float32) / 255.0
    cam = GradCAM(model=model.net, target_layers=[model.net.layer4[-1]])

    def run() -> None:
        heat = cam(input_tensor=preprocess(torch.from_numpy(images)), targets=None)  # predicted class
        for image, heat_map in zip(rgb_float, heat):
            show_cam_on_image(image, heat_map, use_rgb=True)

    return time_calls(run, iterations=iterations, warmup=warmup)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=parse_batches, default=[1, 8, 32])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--grad-cam-iterations", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                        help="ONNX Runtime precision (fp32: the figures the README lists for this)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", UntrainedModelWarning)
    machine = machine_info()
    print(f"machine: {machine['cpu']} ({machine['cores']} cores), 1-min load {machine['load_1min']}")
    rows = []
    with Engine(backend="onnxruntime", chunk_size=max(args.batch), precision=args.precision) as engine:
        print(f"backend: {engine.backend.describe()}")
        print(f"{'batch':>5s} {'mode':>16s} {'images/s':>9s} {'p50 ms':>8s} {'p95 ms':>8s} "
              f"{'p99 ms':>8s} {'vs classify':>11s}")
        for batch in args.batch:
            classify, explain = bench_modes(engine, batch, iterations=args.iterations,
                                            warmup=args.warmup)
            explain["vs_classify"] = explain["images_per_s"] / classify["images_per_s"]
            for row in (classify, explain):
                rows.append(row)
                print(f"{batch:5d} {row['mode']:>16s} {row['images_per_s']:9.1f} "
                      f"{row['p50_ms']:8.1f} {row['p95_ms']:8.1f} {row['p99_ms']:8.1f} "
                      f"{row.get('vs_classify', 1.0):10.3f}x")
    gc_batch = max(args.batch)
    grad_cam = summarise(grad_cam_pipeline_seconds(gc_batch, args.grad_cam_iterations, 1), gc_batch)
    ours = next(r for r in rows if r["mode"] == "classify+explain" and r["batch"] == gc_batch)
    speedup = ours["images_per_s"] / grad_cam["images_per_s"]
    print(f"{gc_batch:5d} {'pytorch-grad-cam':>16s} {grad_cam['images_per_s']:9.1f} "
          f"{grad_cam['p50_ms']:8.1f} {grad_cam['p95_ms']:8.1f} {grad_cam['p99_ms']:8.1f}")
    print(f"maskrt explain vs pytorch-grad-cam at batch {gc_batch}: {speedup:.1f}x images/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "rows": rows, "grad_cam": grad_cam,
                                         "explain_vs_grad_cam": speedup}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
