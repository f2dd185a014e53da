"""GPU benchmarks of maskrt, in one process: CUDA cam_overlay, the FP16 torch backend, the cost of
explaining, and the TensorRT backend where TensorRT is installed.

    python benchmarks/gpu/bench_gpu.py --out DIR          # on a CUDA machine (run.sh calls this)
    python benchmarks/gpu/bench_gpu.py --smoke-cpu        # the same code paths, tiny, on the CPU

Figures (each the median of ``--repeats`` timed runs, with min and max as the spread):

* baseline: device-to-device copy rate (bytes read + written per second), measured here;
* cam_overlay (CUDA, FP16 features, overlays only): images/s at batch 256 for 224x224 and
  1080x1920 frames, and the fraction of the bandwidth bound = (bytes read + written / time) /
  copy rate. Target on an H100: >= 60%. Two rows per size: "per-call" is ``cam_overlay()`` as
  users call it (host validation, output allocation, dispatch: at 224x224 the host can take longer
  than the kernel), "kernel-only" is ``maskrt._C.cam_overlay_cuda`` on preallocated buffers
  without per-call validation, CUDA events around many launches (the kernel's own rate; the
  bandwidth target is for this row). ``host_enqueue_s`` is the host's time per call to queue it;
* torch backend FP16 channels_last: images/s at batch 1, 32, 256 with the batch already on the
  device, eager and with CUDA graphs; p50/p99 latency at batch 1 from a NumPy batch on the host
  (upload, run, download, i.e. what a per-frame caller waits); FP32 eager at 256 as a baseline,
  and FP16 at 256 with cuDNN's autotuning (cudnn_benchmark=true) against its default heuristics.
  Target: >= 30,000 images/s at batch 256;
* explain overhead: classify+explain (inference, argmax, cam_overlay on the 224x224 batch, all on
  the device) vs classify-only throughput at batch 256. Target: ratio >= 0.95;
* tensorrt: the same rows where ``import tensorrt`` works, else a line saying why not.

Every row is measured on its own: a row (or a backend) that fails is recorded with its error in
the JSON (the row gets ``"error"``, and ``errors`` names it) and in the printed table, and the
other rows are kept. Writes ``gpu_bench.json`` and ``gpu_bench.md`` (the figures as a Markdown
table for the README: card, date, each figure beside its baseline from the same run) under
``--out`` and prints both tables.
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
        runs: list[float] = []
        host: list[float] = []
        for _ in range(self.repeats):
            if self.cuda:
                start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
                start.record()
                begin = time.perf_counter()
                for _ in range(iters):
                    fn()
                host.append((time.perf_counter() - begin) / iters)  # time to queue, per call
                end.record()
                end.synchronize()  # timing only: the result of the timed work goes nowhere
                runs.append(start.elapsed_time(end) / 1e3 / iters)
            else:
                begin = time.perf_counter()
                for _ in range(iters):
                    fn()
                runs.append((time.perf_counter() - begin) / iters)
        out = {"median_s": float(np.median(runs)), "min_s": float(min(runs)),
               "max_s": float(max(runs)), "iters": iters, "repeats": self.repeats}
        if host:  # when this is close to median_s, the host, not the device, sets the rate
            out["host_enqueue_s"] = float(np.median(host))
        return out

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


# --------------------------------------------------------------------------- isolation
class Recorder:
    """Runs one row (or one backend's set-up) at a time: a failure becomes an error entry in
    ``errors`` and an ``{"error": ...}`` row, and the benchmark goes on with the next row."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors

    def attempt(self, key: str, fn: Callable[[], Any], **labels: Any) -> Any:
        """``fn()``, or ``{**labels, "error": "Type: message"}`` when it raises."""
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - record this row's failure, run the others
            message = f"{type(err).__name__}: {err}"
            key = key if key not in self.errors else f"{key} ({len(self.errors)})"
            self.errors[key] = message
            print(f"[bench] FAILED {key}: {message}", flush=True)
            traceback.print_exc()
            return {**labels, "error": message}

    def backend_rows(self, key: str, label: str, factory: Callable[[], Any],
                     body: Callable[[Any, list], None]) -> list[dict[str, Any]]:
        """Rows ``body(backend, rows)`` appends, with the backend from ``factory()`` (a context
        manager); rows made before a failure in set-up, ``body`` or close are kept."""
        rows: list[dict[str, Any]] = []

        def go() -> None:
            with factory() as backend:
                body(backend, rows)

        result = self.attempt(key, go, backend=label, batch="-")
        if isinstance(result, dict) and "error" in result:
            rows.append(result)
        return rows


def failed(item: Any) -> bool:
    return isinstance(item, dict) and "error" in item


# --------------------------------------------------------------------------- sections
def machine(device: Any) -> dict[str, Any]:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "device": str(device),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
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


def cam_section(timer: Timer, rec: Recorder, batch: int, sizes: dict[str, tuple[int, int]],
                bandwidth: float, feature_dtype: str) -> list[dict[str, Any]]:
    """cam_overlay images/s and fraction of the bandwidth bound per frame size: per call (the
    public function) and kernel-only (CUDA; a note on the CPU). Each row on its own."""
    import torch

    gen = torch.Generator(device=timer.device).manual_seed(0)
    dtype = getattr(torch, feature_dtype)
    features = torch.rand((batch, 512, 7, 7), generator=gen, device=timer.device).to(dtype)
    weights = torch.randn((2, 512), generator=gen, device=timer.device)
    classes = torch.randint(0, 2, (batch,), generator=gen, device=timer.device)
    rows = []
    for name, (h, w) in sizes.items():
        rows += cam_size_rows(timer, rec, name, h, w, features, weights, classes, gen, bandwidth)
    return rows


def cam_size_rows(timer: Timer, rec: Recorder, name: str, h: int, w: int, features: Any,
                  weights: Any, classes: Any, gen: Any, bandwidth: float) -> list[dict[str, Any]]:
    """The per-call and kernel-only rows of one frame size, each on its own."""
    import torch

    batch = features.shape[0]
    labels = {"frames": name, "batch": batch, "features": str(features.dtype).split(".")[-1]}
    images: list[Any] = []  # made by the first row that gets that far

    def frames() -> Any:
        if not images:
            images.append(torch.randint(0, 256, (batch, h, w, 3), generator=gen,
                                        device=timer.device, dtype=torch.uint8))
        return images[0]

    def figures(timing: dict[str, float], mode: str, **extra: Any) -> dict[str, Any]:
        moved = (features.numel() * features.element_size() + weights.numel() * 4
                 + classes.numel() * 8 + 2 * frames().numel())  # read all, write the overlays
        achieved = moved / timing["median_s"]
        return {**labels, "mode": mode, **rate(timing, batch), "bytes_moved": moved,
                "bytes_per_s": achieved, "bandwidth_fraction": achieved / bandwidth,
                **extra, **timing}

    def per_call() -> dict[str, Any]:
        iters = 10 if h * w > 1e6 else 50
        return figures(cam_per_call(timer, features, weights, classes, frames(), iters),
                       "per-call")

    def kernel_only() -> dict[str, Any]:
        timing, same = cam_kernel_only(timer, features, weights, classes, frames(),
                                       iters=20 if h * w > 1e6 else 200)
        return figures(timing, "kernel-only", matches_per_call=same)

    rows = [rec.attempt(f"cam_overlay {name} per-call", per_call, **labels, mode="per-call")]
    if timer.cuda:
        rows.append(rec.attempt(f"cam_overlay {name} kernel-only", kernel_only, **labels,
                                mode="kernel-only"))
    else:
        rows.append({**labels, "mode": "kernel-only",
                     "skipped": "kernel-only needs CUDA (maskrt._C.cam_overlay_cuda); "
                                "not measured by --smoke-cpu"})
    images.clear()  # free the frames before the next size (1080x1920 x 256: 1.6 GB)
    return rows


def cam_per_call(timer: Timer, features: Any, weights: Any, classes: Any, images: Any,
                 iters: int) -> dict[str, float]:
    """``cam_overlay()`` as users call it: validation, output allocation, dispatch, kernel."""
    from maskrt.cam import cam_overlay

    on_cuda = timer.cuda

    def run() -> Any:
        if on_cuda:  # classes are argmax outputs in real use: no host range check
            return cam_overlay(features, weights, classes, images, check_classes=False)
        return cam_overlay(features, weights, classes, images)

    return timer.per_call(run, iters=iters)


def cam_kernel_only(timer: Timer, features: Any, weights: Any, classes: Any, images: Any,
                    iters: int) -> tuple[dict[str, float], bool]:
    """The CUDA kernel alone: ``maskrt._C.cam_overlay_cuda`` (keyword arguments, raw pointers)
    on preallocated overlays and workspace, no per-call validation or allocation, CUDA events around ``iters``
    launches on the current stream. Returns (timing, whether its overlays equal cam_overlay's)."""
    import torch

    from maskrt import _C
    from maskrt.cam import cam_overlay

    if not _C.has_cuda():
        raise RuntimeError("maskrt._C was built without the CUDA kernels (MASKRT_CUDA=off or no "
                           "nvcc at build time)")
    for name, x in (("features", features), ("weights", weights), ("classes", classes),
                    ("images", images)):
        if not x.is_contiguous():  # raw pointers: the kernel assumes dense C order
            raise ValueError(f"{name}: expected a contiguous tensor")
    n, h, w = images.shape[:3]
    overlays = torch.empty((n, h, w, 3), dtype=torch.uint8, device=images.device)
    workspace = torch.empty(_C.cam_overlay_workspace_bytes(n, h, w), dtype=torch.uint8, device=images.device)
    with torch.cuda.device(images.device):
        stream = torch.cuda.current_stream(images.device)
    arguments = {  # the binding takes keyword arguments only
        "features": features.data_ptr(), "features_fp16": features.dtype == torch.float16,
        "weights": weights.data_ptr(), "num_classes": weights.shape[0],
        "classes": classes.data_ptr(), "classes_int32": classes.dtype == torch.int32,
        "images": images.data_ptr(), "overlays": overlays.data_ptr(), "heatmaps": 0,
        "n": n, "height": h, "width": w, "alpha": 0.5, "rgb": False,
        "workspace": workspace.data_ptr(), "workspace_bytes": workspace.numel(),
        "stream": stream.cuda_stream}
    launch = _C.cam_overlay_cuda
    timing = timer.per_call(lambda: launch(**arguments), iters=iters)
    want = cam_overlay(features, weights, classes, images, check_classes=False)
    same = bool(torch.equal(overlays, want))  # the same arithmetic, so the same bytes
    return timing, same


def backend_section(timer: Timer, rec: Recorder, backend: Any, batches: list[int],
                    host_images: np.ndarray, label: str, rows: list[dict[str, Any]]) -> None:
    """Throughput with the batch on the device (or host on the CPU) per batch size, appended to
    ``rows`` one batch size at a time (a failed one is an error row)."""
    import torch

    for batch in batches:
        def one(batch: int = batch) -> dict[str, Any]:
            images = torch.from_numpy(host_images[:batch]).to(timer.device)
            iters = max(5, min(100, 2048 // batch))
            timing = timer.per_call(lambda: backend.infer(images), iters=iters)
            return {"backend": label, "batch": batch, **rate(timing, batch), **timing}

        rows.append(rec.attempt(f"{label} b{batch}", one, backend=label, batch=batch))


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


def latency_and_explain(timer: Timer, rec: Recorder, backend: Any, host_images: np.ndarray,
                        calls: int, batch: int, label: str) -> dict[str, Any]:
    """Both figures of one backend, each on its own."""
    return {"latency": rec.attempt(f"{label} latency", lambda: latency_section(
                timer, backend, host_images, calls, label), backend=label, batch=1),
            "explain": rec.attempt(f"{label} explain", lambda: explain_section(
                timer, backend, host_images, batch, label), backend=label, batch=batch)}


# --------------------------------------------------------------------------- driver
def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from maskrt.backends import create_backend
    from maskrt.backends.tensorrt import versions as trt_compat
    from maskrt.graph import Graph
    from maskrt.tools.bench import sample_batch

    device = torch.device("cpu" if args.smoke_cpu else "cuda")
    timer = Timer(device, args.repeats, max_iters=1 if args.smoke_cpu else 1000)
    report: dict[str, Any] = {"machine": machine(device), "targets": TARGETS, "errors": {},
                              "complete": False}
    rec = Recorder(report["errors"])
    batches = [1, 2] if args.smoke_cpu else [1, 32, 256]
    big = max(batches)
    host_images = sample_batch(big)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained weights: speed does not depend on them
        net = Graph(args.model)  # one graph: every backend below loads it, none modifies it
        net.model()

    def section(name: str, fn: Callable[[], Any]) -> None:
        print(f"[bench] {name} ...", flush=True)
        result = rec.attempt(name, fn)  # rows inside are isolated too; this catches the rest
        if not failed(result):
            report[name] = result
        save(report, args.out)  # a run cut short (time limit, crash) keeps what it measured

    section("copy", lambda: copy_rate(timer, (64 << 20) if args.smoke_cpu else (1 << 30)))
    bandwidth = report.get("copy", {}).get("bytes_per_s", float("nan"))
    sizes = {"224x224": (224, 224), "270x480": (270, 480)} if args.smoke_cpu else FRAME_SIZES
    cam_dtype = "float32" if args.smoke_cpu else "float16"
    section("cam_overlay", lambda: cam_section(timer, rec, 8 if args.smoke_cpu else 256, sizes,
                                               bandwidth, cam_dtype))
    torch_options = {"device": "cpu"} if args.smoke_cpu else {"device": "cuda"}
    precision = "fp32" if args.smoke_cpu else "fp16"
    modes = [False] if args.smoke_cpu else [False, True]

    def torch_label(graphs: bool) -> str:
        return f"torch {precision}{' graphs' if graphs else ''}"

    def torch_rows() -> list[dict[str, Any]]:
        rows = []
        for graphs in modes:
            label = torch_label(graphs)
            rows += rec.backend_rows(
                f"{label} (backend)", label,
                lambda graphs=graphs: create_backend("torch", model=net, cuda_graphs=graphs,
                                                     **torch_options),
                lambda b, out, label=label: backend_section(timer, rec, b, batches, host_images,
                                                            label, out))
        if not args.smoke_cpu:
            label = "torch fp32 (baseline)"
            rows += rec.backend_rows(
                f"{label} (backend)", label,
                lambda: create_backend("torch", model=net, device="cuda", half=False),
                lambda b, out: backend_section(timer, rec, b, [big], host_images, label, out))
            # Last: cuDNN's autotuning flag is process-wide while the backend is open.
            label = "torch fp16 cudnn benchmark"
            rows += rec.backend_rows(
                f"{label} (backend)", label,
                lambda: create_backend("torch", model=net, device="cuda", cudnn_benchmark=True),
                lambda b, out: backend_section(timer, rec, b, [big], host_images, label, out))
        return rows

    section("torch", torch_rows)

    def torch_latency_and_explain() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for graphs in modes:
            label = torch_label(graphs)

            def body(b: Any, rows: list, label: str = label) -> None:
                out[label] = latency_and_explain(timer, rec, b, host_images, args.calls, big,
                                                 label)

            for error in rec.backend_rows(
                    f"{label} latency/explain (backend)", label,
                    lambda graphs=graphs: create_backend("torch", model=net, cuda_graphs=graphs,
                                                         **torch_options), body):
                out.setdefault(label, {}).setdefault("error", error["error"])
        return out

    section("torch_latency_explain", torch_latency_and_explain)
    trt_ok, trt_why = trt_compat.tensorrt_status()
    report["tensorrt_status"] = trt_why
    if trt_ok and not args.smoke_cpu:
        def trt_all() -> dict[str, Any]:
            label = "tensorrt fp16"
            out: dict[str, Any] = {"rows": []}

            def body(b: Any, rows: list) -> None:
                backend_section(timer, rec, b, batches, host_images, label, rows)
                out.update(latency_and_explain(timer, rec, b, host_images, args.calls, big,
                                               label))

            out["rows"] = rec.backend_rows(
                f"{label} (backend)", label,
                lambda: create_backend("tensorrt", model=net, engine_dir=args.engine_dir,
                                       profile=(1, min(32, big), big)), body)
            return out

        section("tensorrt", trt_all)
    report["complete"] = True
    return report


def save(report: dict[str, Any], out: Path | None) -> None:
    """Write ``out/gpu_bench.json`` (atomically: a kill leaves the previous complete file)."""
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "gpu_bench.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(out / "gpu_bench.json")


def _error_text(item: dict[str, Any], width: int = 110) -> str:
    text = str(item.get("error", "?"))
    return text if len(text) <= width else text[:width - 3] + "..."


def table(report: dict[str, Any]) -> str:
    """The short summary printed at the end (failed rows say so, in place)."""
    lines = [f"machine: {report.get('machine')}"]
    if "copy" in report:
        lines.append(f"device copy (baseline): {report['copy']['bytes_per_s'] / 1e9:8.1f} GB/s "
                     "(read + written)")
    for row in report.get("cam_overlay", []):
        head = f"cam_overlay {row.get('frames', '?'):>9s} {row.get('mode', ''):<11s} b{row.get('batch', '?')!s:<4s}"
        if failed(row):
            lines.append(f"{head} FAILED: {_error_text(row)}")
        elif "skipped" in row:
            lines.append(f"{head} skipped: {row['skipped']}")
        else:
            host = (f"  host {1e6 * row['host_enqueue_s']:.0f} us/call"
                    if "host_enqueue_s" in row else "")
            lines.append(f"{head} {row['per_s']:12.0f} img/s {1e6 * row['median_s']:9.0f} us/call"
                         f"  {row['bytes_per_s'] / 1e9:7.1f} GB/s = "
                         f"{100 * row['bandwidth_fraction']:5.1f}% of copy (target >= "
                         f"{100 * TARGETS['cam_bandwidth_fraction']:.0f}%){host}")
    trt = report.get("tensorrt", {}) if isinstance(report.get("tensorrt"), dict) else {}
    for row in list(report.get("torch", [])) + list(trt.get("rows", [])):
        head = f"{row.get('backend', '?'):<24s} b{row.get('batch', '?')!s:<4s}"
        if failed(row):
            lines.append(f"{head} FAILED: {_error_text(row)}")
        else:
            lines.append(f"{head} {row['per_s']:12.0f} img/s "
                         f"(spread {row['per_s_low']:.0f}-{row['per_s_high']:.0f})")
    extra = dict(report.get("torch_latency_explain", {}))
    if trt:
        extra["tensorrt fp16"] = trt
    for label, item in extra.items():
        lat, exp = item.get("latency"), item.get("explain")
        if failed(item) and not (lat or exp):
            lines.append(f"{label:<24s} latency/explain FAILED: {_error_text(item)}")
        if failed(lat):
            lines.append(f"{label:<24s} b1 latency FAILED: {_error_text(lat)}")
        elif lat:
            lines.append(f"{label:<24s} b1 latency p50 {lat['p50_ms']:.2f} ms  p99 {lat['p99_ms']:.2f} ms"
                         " (NumPy in -> NumPy out)")
        if failed(exp):
            lines.append(f"{label:<24s} explain FAILED: {_error_text(exp)}")
        elif exp:
            lines.append(f"{label:<24s} b{exp['batch']} explain {exp['explain_per_s']:.0f} vs classify "
                         f"{exp['classify_per_s']:.0f} img/s = {exp['ratio']:.3f}x "
                         f"(target >= {TARGETS['explain_ratio']})")
    lines.append(f"tensorrt: {report.get('tensorrt_status', '?')}")
    for name, error in report.get("errors", {}).items():
        lines.append(f"ERROR in {name}: {error}")
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    """The figures as a Markdown table for the README's GPU section: the card and the date, and
    every figure beside its baseline from this same run (failed rows say so)."""
    m = report.get("machine", {})
    card = m.get("gpu") or f"no GPU ({m.get('device', '?')}: --smoke-cpu, figures not meaningful)"
    spec = (f", sm {m['compute_capability']}, {m['sm_count']} SMs, {m['memory_gib']} GiB"
            if "compute_capability" in m else "")
    status = str(report.get("tensorrt_status", "TensorRT ?"))
    trt_version = status if status.startswith("TensorRT ") and len(status) < 40 else "no TensorRT"
    title = (f"**GPU figures** on {card}{spec}, {m.get('date', '?')}; torch {m.get('torch')}, "
             f"CUDA {m.get('cuda')}, {trt_version}; "
             "`bash benchmarks/gpu/run.sh`, medians (spreads in gpu_bench.json).")
    lines = [title, "",
             "| figure | value | baseline (same run) | vs baseline | target |",
             "|---|---|---|---|---|"]

    def add(figure: str, value: str, baseline: str = "-", ratio: str = "-", target: str = "-") -> None:
        lines.append(f"| {figure} | {value} | {baseline} | {ratio} | {target} |")

    copy = report.get("copy")
    copy_text = f"device copy {copy['bytes_per_s'] / 1e9:.0f} GB/s" if copy else "device copy FAILED"
    cam = {(r.get("frames"), r.get("mode")): r for r in report.get("cam_overlay", [])}
    for (frames, mode), row in cam.items():
        figure = f"cam_overlay {frames} b{row.get('batch')}, {mode}"
        if failed(row):
            add(figure, f"FAILED ({_error_text(row, 60)})")
        elif "skipped" in row:
            add(figure, "skipped (no CUDA)")
        elif mode == "kernel-only":
            add(figure, f"{row['per_s']:,.0f} img/s, {row['bytes_per_s'] / 1e9:.0f} GB/s",
                copy_text, f"{100 * row['bandwidth_fraction']:.1f}% of copy",
                f">= {100 * TARGETS['cam_bandwidth_fraction']:.0f}% of copy")
        else:
            kernel = cam.get((frames, "kernel-only"), {})
            if "per_s" in kernel:
                add(figure, f"{row['per_s']:,.0f} img/s ({1e6 * row['median_s']:.0f} us/call)",
                    f"kernel-only {kernel['per_s']:,.0f} img/s ({1e6 * kernel['median_s']:.0f} us)",
                    f"{row['per_s'] / kernel['per_s']:.2f}x")
            else:
                add(figure, f"{row['per_s']:,.0f} img/s ({1e6 * row['median_s']:.0f} us/call)",
                    copy_text, f"{100 * row['bandwidth_fraction']:.1f}% of copy")
    trt = report.get("tensorrt", {}) if isinstance(report.get("tensorrt"), dict) else {}
    rows = list(report.get("torch", [])) + list(trt.get("rows", []))
    by = {(r.get("backend"), r.get("batch")): r for r in rows}
    fp32 = next((r for r in rows if r.get("backend") == "torch fp32 (baseline)"), None)
    for row in rows:
        label, batch = row.get("backend"), row.get("batch")
        figure = f"{label} b{batch}"
        if failed(row):
            add(figure, f"FAILED ({_error_text(row, 60)})")
            continue
        base = None
        if label and label.endswith(" graphs"):
            base = by.get((label[:-len(" graphs")], batch))
        elif label == "torch fp16 cudnn benchmark":
            base = by.get(("torch fp16", batch))
        elif label and label.startswith("tensorrt"):
            base = by.get(("torch fp16", batch))
        elif label != "torch fp32 (baseline)" and fp32 and fp32.get("batch") == batch:
            base = fp32
        target = f">= {TARGETS['torch_fp16_b256']:,} img/s" if label == "torch fp16" and batch == 256 else "-"
        if base and "per_s" in base:
            add(figure, f"{row['per_s']:,.0f} img/s", f"{base['backend']} {base['per_s']:,.0f} img/s",
                f"{row['per_s'] / base['per_s']:.2f}x", target)
        else:
            add(figure, f"{row['per_s']:,.0f} img/s", target=target)
    extra = dict(report.get("torch_latency_explain", {}))
    if trt:
        extra["tensorrt fp16"] = trt
    eager = extra.get("torch fp16", {}).get("latency") or {}
    for label, item in extra.items():
        lat, exp = item.get("latency"), item.get("explain")
        if failed(item) and not (lat or exp):
            add(f"{label} latency/explain", f"FAILED ({_error_text(item, 60)})")
        if failed(lat):
            add(f"{label} b1 latency", f"FAILED ({_error_text(lat, 60)})")
        elif lat:
            base = eager if label != "torch fp16" and "p50_ms" in eager else None
            add(f"{label} b1 latency p50 / p99 (NumPy in, out)",
                f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f} ms",
                f"torch fp16 {base['p50_ms']:.2f} / {base['p99_ms']:.2f} ms" if base else "-",
                f"{lat['p50_ms'] / base['p50_ms']:.2f}x p50" if base else "-")
        if failed(exp):
            add(f"{label} explain", f"FAILED ({_error_text(exp, 60)})")
        elif exp:
            add(f"{label} b{exp['batch']} classify + explain", f"{exp['explain_per_s']:,.0f} img/s",
                f"classify only {exp['classify_per_s']:,.0f} img/s", f"{exp['ratio']:.3f}x",
                f">= {TARGETS['explain_ratio']}x")
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
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="print the Markdown table of a gpu_bench.json written earlier "
                             "(also a partial one) and exit; measures nothing")
    args = parser.parse_args(argv)
    if args.render is not None:
        report = json.loads(args.render.read_text())
        if not report.get("complete", True):
            print(f"(partial results: the benchmark stopped early; {args.render} has the sections "
                  "measured before that)")
        print(markdown(report))
        return 0
    import torch

    if not args.smoke_cpu and not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU here (torch.cuda.is_available() is False, torch "
              f"{torch.__version__}); run it on a GPU machine, or --smoke-cpu to exercise the code")
        return 2
    if args.smoke_cpu:
        args.repeats, args.calls = min(args.repeats, 2), min(args.calls, 5)
    report = run(args)
    rendered = {}
    for name, render in (("table", table), ("markdown", markdown)):
        try:  # a report the tables cannot render still gets written below
            rendered[name] = render(report)
        except Exception as err:  # noqa: BLE001
            report["errors"][f"{name} rendering"] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
            rendered[name] = f"({name} could not be rendered: {type(err).__name__}: {err})"
    print(rendered["table"])
    print()
    print(rendered["markdown"])
    if args.out:
        save(report, args.out)
        (args.out / "gpu_bench.md").write_text(rendered["markdown"] + "\n")
        print(f"full results: {args.out / 'gpu_bench.json'}, {args.out / 'gpu_bench.md'}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
