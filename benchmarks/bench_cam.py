"""CAM + overlay throughput: maskrt's C++ kernel vs the NumPy/OpenCV reference vs pytorch-grad-cam.

What is timed, per batch of N frames (inputs prepared beforehand, outputs allocated inside):

* ``maskrt``: ``maskrt.cam.cam_overlay`` on NumPy arrays (C++ kernel, all cores) - CAM from
  features and FC weights, heat map, JET colouring and blend, uint8 overlays out.
* ``reference``: ``maskrt.cam.cam_reference`` - the same steps in NumPy + OpenCV, one frame at a time.
* ``grad-cam``: pytorch-grad-cam's own CAM + overlay code on the same features, without the network
  forward/backward (which maskrt does not do either): ``GradCAM.get_cam_image`` with the gradients a
  GAP+FC network gives (W[c]/49 everywhere), ReLU, ``scale_cam_image`` to the frame size, the second
  normalisation, then ``show_cam_on_image`` per frame on float [0, 1] images and the conversion back
  to uint8 that a caller needs.
* ``grad-cam-full`` (``--full``, 224x224 only): a whole ``GradCAM(...)(input_tensor, targets)`` call
  (forward + backward + CAM) plus the same overlay code - what a grad-cam user pays per batch.

Prints the machine, the load average, thread counts, median and IQR per batch, images/s and the
ratio to the reference, all from this one run. Example:

    python benchmarks/bench_cam.py --batch 32 --repeats 15 --json out/bench_cam.json
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from typing import Callable

import cv2
import numpy as np

from maskrt.tools.bench import machine_info


def cpu_model() -> str:
    return str(machine_info()["cpu"])


def time_call(fn: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summarise(times: list[float], batch: int) -> dict[str, float]:
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return {"median_ms": median * 1e3, "iqr_ms": (q3 - q1) * 1e3, "min_ms": min(times) * 1e3,
            "images_per_s": batch / median, "repeats": len(times)}


def make_inputs(batch: int, h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    features = np.maximum(rng.normal(0.3, 1.0, size=(batch, 512, 7, 7)), 0).astype(np.float32)  # post-ReLU
    weights = (rng.normal(size=(2, 512)) * 0.05).astype(np.float32)
    classes = rng.integers(0, 2, size=batch).astype(np.int64)
    images = rng.integers(0, 256, size=(batch, h, w, 3), dtype=np.uint8)
    return features, weights, classes, images


def grad_cam_overlay(features: np.ndarray, weights: np.ndarray, classes: np.ndarray, images: np.ndarray,
                     explainer) -> list[np.ndarray]:
    """pytorch-grad-cam's CAM + overlay path on given activations (see the module docstring)."""
    from pytorch_grad_cam.utils.image import scale_cam_image, show_cam_on_image

    h, w = images.shape[1:3]
    grads = np.broadcast_to((weights[classes] / 49.0)[:, :, None, None], features.shape)
    cam = explainer.get_cam_image(None, None, None, features, grads, False)
    cam = scale_cam_image(np.maximum(cam, 0), (w, h))
    heat = scale_cam_image(np.maximum(cam, 0))
    return [np.uint8(255 * show_cam_on_image(np.float32(img) / 255, mask)) for img, mask in zip(images, heat)]


def grad_cam_full(model, explainer, preprocess, images: np.ndarray, classes: np.ndarray) -> list[np.ndarray]:
    import torch
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = preprocess(torch.from_numpy(images))
    heat = explainer(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    return [np.uint8(255 * show_cam_on_image(np.float32(img) / 255, mask)) for img, mask in zip(images, heat)]


def load_grad_cam():
    """(model, explainer, preprocess) or None when grad-cam or torch is missing."""
    try:
        import pytorch_grad_cam
    except ImportError:
        return None
    from maskrt.graph.model import Preprocess, UntrainedModelWarning, load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        model = load_model()
    explainer = pytorch_grad_cam.GradCAM(model=model.net, target_layers=[model.net.layer4[-1]])
    return model, explainer, Preprocess()


def run(args: argparse.Namespace) -> dict:
    from maskrt import _C
    from maskrt.cam import cam_overlay, cam_reference

    import torch

    grad_cam = load_grad_cam()
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
               "load_average_at_start": os.getloadavg(), "maskrt_threads": _C.num_threads(),
               "opencv_threads": cv2.getNumThreads(), "torch_threads": torch.get_num_threads(),
               "maskrt_cuda_compiled": _C.has_cuda()}
    print(f"machine: {machine['cpu']}, {machine['cores']} cores; load average at start "
          f"{', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])}; threads: maskrt "
          f"{machine['maskrt_threads']}, OpenCV {machine['opencv_threads']}, torch {machine['torch_threads']}")
    print(f"batch {args.batch}, {args.repeats} timed repeats after {args.warmup} warm-up; per batch: median, IQR")
    results = {"machine": machine, "batch": args.batch, "cases": []}
    for h, w in args.sizes:
        features, weights, classes, images = make_inputs(args.batch, h, w)
        contenders: dict[str, Callable[[], object]] = {
            "maskrt": lambda: cam_overlay(features, weights, classes, images),
            "reference": lambda: cam_reference(features, weights, classes, images),
        }
        if grad_cam is not None:
            model, explainer, preprocess = grad_cam
            contenders["grad-cam"] = lambda: grad_cam_overlay(features, weights, classes, images, explainer)
            if args.full and (h, w) == (224, 224):
                contenders["grad-cam-full"] = lambda: grad_cam_full(model, explainer, preprocess, images, classes)
        stats = {}
        for name, fn in contenders.items():
            repeats = max(3, args.repeats // 5) if name == "grad-cam-full" else args.repeats
            stats[name] = summarise(time_call(fn, repeats, args.warmup), args.batch)
        base = stats["reference"]["images_per_s"]
        print(f"\n{h}x{w}:")
        for name, s in stats.items():
            s["vs_reference"] = s["images_per_s"] / base
            print(f"  {name:14s} {s['median_ms']:9.2f} ms  IQR {s['iqr_ms']:7.2f} ms  "
                  f"{s['images_per_s']:9.0f} img/s  x{s['vs_reference']:.2f} vs reference")
        results["cases"].append({"height": h, "width": w, "results": stats})
    results["load_average_at_end"] = os.getloadavg()
    print(f"\nload average at end: {', '.join(f'{x:.2f}' for x in results['load_average_at_end'])}")
    return results


def parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per contender")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(224, 224), (480, 640)],
                        help="frame sizes as HxW (default: 224x224 480x640)")
    parser.add_argument("--full", action="store_true", help="also time a whole GradCAM call at 224x224")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    from maskrt.tools.bench import write_results

    write_results(args.json, run(args))


if __name__ == "__main__":
    main()
