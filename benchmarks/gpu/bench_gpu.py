"""GPU benchmarks of maskrt, in one process: CUDA cam_overlay, the FP16 torch backend, the cost of
explaining, and the TensorRT backend where TensorRT is installed.

    python benchmarks/gpu/bench_gpu.py --out DIR          # on a CUDA machine (run.sh calls this)
    python benchmarks/gpu/bench_gpu.py --smoke-cpu        # the same code paths, tiny, on the CPU

Figures (each the median of ``--repeats`` timed runs, with min and max as the spread):

* baseline: device-to-device copy rate (bytes read + written per second), measured here;
* cam_overlay (CUDA, FP16 features, overlays only): images/s at batch 256 for 224x224 and
  1080x1920 frames, and the fraction of the bandwidth bound = (bytes read + written / time) /
  copy rate. Target on an H100: >= 60%;
* torch backend FP16 channels_last: images/s at batch 1, 32, 256 with the batch already on the
  device, eager and with CUDA graphs; p50/p99 latency at batch 1 from a NumPy batch on the host
  (upload, run, download, i.e. what a per-frame caller waits); FP32 eager at 256 as a baseline.
  Target: >= 30,000 images/s at batch 256;
* explain overhead: classify+explain (inference, argmax, cam_overlay on the 224x224 batch, all on
  the device) vs classify-only throughput at batch 256. Target: ratio >= 0.95;
* tensorrt: the same rows where ``import tensorrt`` works, else a line saying why not.

Writes ``gpu_bench.json`` under ``--out`` and prints a short table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGETS = {"cam_bandwidth_fraction": 0.60, "explain_ratio": 0.95, "torch_fp16_b256": 30_000}
FRAME_SIZES = {"224x224": (224, 224), "1080x1920": (1080, 1920)}


# --------------------------------------------------------------------------- timing
class Timer:
    """Times callables on one device: CUDA events on the current stream, else perf_counter."""

    def __init__(self, device: Any, repeats: int, max_iters: int = 1000) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.repeats = repeats
        self.max_iters = max_iters  # --smoke-cpu caps the work

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)

    def per_call(self, fn: Callable[[], Any], iters: int, warmup: int = 3) -> dict[str, float]:
        """Seconds per call of ``fn`` (median, min, max over repeats of ``iters`` calls)."""
        import torch

        iters, warmup = min(iters, self.max_iters), min(warmup, self.max_iters)
        for _ in range(warmup):
            fn()
        self.sync()
        runs = []
        for _ in range(self.repeats):
            if self.cuda:
                start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
                start.record()
                for _ in range(iters):
                    fn()
                end.record()
                end.synchronize()  # timing only: the result of the timed work goes nowhere
                runs.append(start.elapsed_time(end) / 1e3 / iters)
            else:
                begin = time.perf_counter()
                for _ in range(iters):
                    fn()
                runs.append((time.perf_counter() - begin) / iters)
        return {"median_s": float(np.median(runs)), "min_s": float(min(runs)),
                "max_s": float(max(runs)), "iters": iters, "repeats": self.repeats}

    def latencies(self, fn: Callable[[], Any], calls: int, warmup: int = 5) -> dict[str, float]:
        """Wall-clock latency of single synchronous calls (``fn`` must return host results)."""
        from maskrt.tools.bench import time_calls

        seconds = time_calls(fn, iterations=calls, warmup=warmup)
        p50, p99 = np.percentile(seconds, [50, 99]) * 1e3
        return {"p50_ms": float(p50), "p99_ms": float(p99), "calls": calls}


def rate(timing: dict[str, float], items: int) -> dict[str, float]:
    """Items/s at the median, and at the slowest/fastest repeat."""
    return {"per_s": items / timing["median_s"], "per_s_low": items / timing["max_s"],
            "per_s_high": items / timing["min_s"]}


# --------------------------------------------------------------------------- sections
def machine(device: Any) -> dict[str, Any]:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, sm_count=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}")
    return info


def copy_rate(timer: Timer, nbytes: int) -> dict[str, float]:
    """Device-to-device copy: (bytes read + bytes written) / second."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device=timer.device)
    dst = torch.empty_like(src)
    timing = timer.per_call(lambda: dst.copy_(src), iters=20)
    return {"bytes": nbytes, "bytes_per_s": 2 * nbytes / timing["median_s"], **timing}


def cam_section(timer: Timer, batch: int, sizes: dict[str, tuple[int, int]],
                bandwidth: float, feature_dtype: str) -> list[dict[str, Any]]:
    """cam_overlay images/s and fraction of the bandwidth bound per frame size."""
    import torch

    from maskrt.cam import cam_overlay

    gen = torch.Generator(device=timer.device).manual_seed(0)
    dtype = getattr(torch, feature_dtype)
    features = torch.rand((batch, 512, 7, 7), generator=gen, device=timer.device).to(dtype)
    weights = torch.randn((2, 512), generator=gen, device=timer.device)
    classes = torch.randint(0, 2, (batch,), generator=gen, device=timer.device)
    rows = []
    for name, (h, w) in sizes.items():
        images = torch.randint(0, 256, (batch, h, w, 3), generator=gen, device=timer.device,
                               dtype=torch.uint8)
        on_cuda = timer.cuda

        def run() -> Any:
            if on_cuda:  # classes are argmax outputs in real use: no host range check
                return cam_overlay(features, weights, classes, images, check_classes=False)
            return cam_overlay(features, weights, classes, images)

        timing = timer.per_call(run, iters=10 if h * w > 1e6 else 50)
        moved = (features.numel() * features.element_size() + weights.numel() * 4
                 + classes.numel() * 8 + 2 * images.numel())  # read all, write the overlays
        achieved = moved / timing["median_s"]
        rows.append({"frames": name, "batch": batch, "features": feature_dtype,
                     **rate(timing, batch), "bytes_moved": moved, "bytes_per_s": achieved,
                     "bandwidth_fraction": achieved / bandwidth, **timing})
    return rows


def backend_section(timer: Timer, backend: Any, batches: list[int], host_images: np.ndarray,
                    label: str) -> list[dict[str, Any]]:
    """Throughput with the batch on the device (or host on the CPU) per batch size."""
    import torch

    rows = []
    for batch in batches:
        images = torch.from_numpy(host_images[:batch]).to(timer.device)
        iters = max(5, min(100, 2048 // batch))
        timing = timer.per_call(lambda: backend.infer(images), iters=iters)
        rows.append({"backend": label, "batch": batch, **rate(timing, batch), **timing})
    return rows


def explain_section(timer: Timer, backend: Any, host_images: np.ndarray, batch: int,
                    label: str) -> dict[str, Any]:
    """classify-only vs classify+explain (224x224 overlays) throughput, all on the device."""
    import torch

    from maskrt.cam import cam_overlay

    images = torch.from_numpy(host_images[:batch]).to(timer.device)
    weight = backend.cam_weights.on(timer.device)
    check = not timer.cuda  # on CUDA the argmax classes are valid: no host round trip

    def classify() -> Any:
        return backend.infer(images)[0].argmax(1)

    def explain() -> Any:
        logits, features = backend.infer(images)
        return cam_overlay(features, weight, logits.argmax(1), images, check_classes=check)

    iters = max(5, min(50, 2048 // batch))
    only = timer.per_call(classify, iters=iters)
    both = timer.per_call(explain, iters=iters)
    ratio = only["median_s"] / both["median_s"]
    return {"backend": label, "batch": batch, "classify_per_s": batch / only["median_s"],
            "explain_per_s": batch / both["median_s"], "ratio": ratio,
            "classify": only, "explain": both}


def latency_section(timer: Timer, backend: Any, host_images: np.ndarray, calls: int,
                    label: str) -> dict[str, Any]:
    """Batch-1 latency from a NumPy frame to NumPy outputs (each call synchronises)."""
    frame = np.ascontiguousarray(host_images[:1])
    return {"backend": label, "batch": 1, **timer.latencies(lambda: backend.infer(frame), calls)}


# --------------------------------------------------------------------------- driver
def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from maskrt.backends import create_backend
    from maskrt.backends.tensorrt import versions as trt_compat
    from maskrt.graph import Graph
    from maskrt.tools.bench import sample_batch

    device = torch.device("cpu" if args.smoke_cpu else "cuda")
    timer = Timer(device, args.repeats, max_iters=1 if args.smoke_cpu else 1000)
    report: dict[str, Any] = {"machine": machine(device), "targets": TARGETS, "errors": {}}
    batches = [1, 2] if args.smoke_cpu else [1, 32, 256]
    big = max(batches)
    host_images = sample_batch(big)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained weights: speed does not depend on them
        net = Graph(args.model)  # one graph: every backend below loads it, none modifies it
        net.model()

    def section(name: str, fn: Callable[[], Any]) -> None:
        print(f"[bench] {name} ...", flush=True)
        try:
            report[name] = fn()
        except Exception as err:  # noqa: BLE001 - report this section's failure, run the others
            report["errors"][name] = f"{type(err).__name__}: {err}"
            traceback.print_exc()

    section("copy", lambda: copy_rate(timer, (64 << 20) if args.smoke_cpu else (1 << 30)))
    bandwidth = report.get("copy", {}).get("bytes_per_s", float("nan"))
    sizes = {"224x224": (224, 224), "270x480": (270, 480)} if args.smoke_cpu else FRAME_SIZES
    cam_dtype = "float32" if args.smoke_cpu else "float16"
    section("cam_overlay", lambda: cam_section(timer, 8 if args.smoke_cpu else 256, sizes,
                                               bandwidth, cam_dtype))
    torch_options = {"device": "cpu"} if args.smoke_cpu else {"device": "cuda"}
    modes = [False] if args.smoke_cpu else [False, True]

    def torch_rows() -> list[dict[str, Any]]:
        rows = []
        for graphs in modes:
            with create_backend("torch", model=net, cuda_graphs=graphs, **torch_options) as b:
                rows += backend_section(timer, b, batches, host_images,
                                        f"torch {b.precision}{' graphs' if graphs else ''}")
        if not args.smoke_cpu:
            with create_backend("torch", model=net, device="cuda", half=False) as b:
                rows += backend_section(timer, b, [big], host_images, "torch fp32 (baseline)")
        return rows

    section("torch", torch_rows)

    def torch_latency_and_explain() -> dict[str, Any]:
        out = {}
        for graphs in modes:
            with create_backend("torch", model=net, cuda_graphs=graphs, **torch_options) as b:
                label = f"torch {b.precision}{' graphs' if graphs else ''}"
                out[label] = {"latency": latency_section(timer, b, host_images, args.calls, label),
                              "explain": explain_section(timer, b, host_images, big, label)}
        return out

    section("torch_latency_explain", torch_latency_and_explain)
    trt_ok, trt_why = trt_compat.tensorrt_status()
    report["tensorrt_status"] = trt_why
    if trt_ok and not args.smoke_cpu:
        def trt_all() -> dict[str, Any]:
            with create_backend("tensorrt", model=net, engine_dir=args.engine_dir,
                                profile=(1, min(32, big), big)) as b:
                label = "tensorrt fp16"
                return {"rows": backend_section(timer, b, batches, host_images, label),
                        "latency": latency_section(timer, b, host_images, args.calls, label),
                        "explain": explain_section(timer, b, host_images, big, label)}

        section("tensorrt", trt_all)
    return report


def table(report: dict[str, Any]) -> str:
    """The short summary printed at the end."""
    lines = [f"machine: {report['machine']}"]
    if "copy" in report:
        lines.append(f"device copy (baseline): {report['copy']['bytes_per_s'] / 1e9:8.1f} GB/s "
                     "(read + written)")
    for row in report.get("cam_overlay", []):
        lines.append(f"cam_overlay {row['frames']:>9s} b{row['batch']:<4d} {row['per_s']:12.0f} img/s"
                     f"  {row['bytes_per_s'] / 1e9:7.1f} GB/s = {100 * row['bandwidth_fraction']:5.1f}%"
                     f" of copy (target >= {100 * TARGETS['cam_bandwidth_fraction']:.0f}%)")
    rows = list(report.get("torch", [])) + list(report.get("tensorrt", {}).get("rows", []))
    for row in rows:
        lines.append(f"{row['backend']:<24s} b{row['batch']:<4d} {row['per_s']:12.0f} img/s "
                     f"(spread {row['per_s_low']:.0f}-{row['per_s_high']:.0f})")
    extra = dict(report.get("torch_latency_explain", {}))
    if "tensorrt" in report and isinstance(report["tensorrt"], dict):
        extra["tensorrt fp16"] = report["tensorrt"]
    for label, item in extra.items():
        lat, exp = item.get("latency"), item.get("explain")
        if lat:
            lines.append(f"{label:<24s} b1 latency p50 {lat['p50_ms']:.2f} ms  p99 {lat['p99_ms']:.2f} ms"
                         " (NumPy in -> NumPy out)")
        if exp:
            lines.append(f"{label:<24s} b{exp['batch']} explain {exp['explain_per_s']:.0f} vs classify "
                         f"{exp['classify_per_s']:.0f} img/s = {exp['ratio']:.3f}x "
                         f"(target >= {TARGETS['explain_ratio']})")
    lines.append(f"tensorrt: {report.get('tensorrt_status', '?')}")
    for name, error in report.get("errors", {}).items():
        lines.append(f"ERROR in {name}: {error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_bench.json")
    parser.add_argument("--model", default=None, help="checkpoint (default: shipped weights)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per figure")
    parser.add_argument("--calls", type=int, default=200, help="batch-1 latency samples")
    parser.add_argument("--engine-dir", type=Path, default=Path("engines"))
    parser.add_argument("--smoke-cpu", action="store_true",
                        help="run every code path tiny on the CPU (no figures worth reading)")
    args = parser.parse_args(argv)
    import torch

    if not args.smoke_cpu and not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU here (torch.cuda.is_available() is False, torch "
              f"{torch.__version__}); run it on a GPU machine, or --smoke-cpu to exercise the code")
        return 2
    if args.smoke_cpu:
        args.repeats, args.calls = min(args.repeats, 2), min(args.calls, 5)
    report = run(args)
    print(table(report))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_bench.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"full results: {args.out / 'gpu_bench.json'}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
