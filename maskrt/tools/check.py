"""``maskrt check``: compare a backend with the FP32 ONNX Runtime reference on real images.

Both backends run the same weights on the same uint8 batches. Reported:

* label agreement: the fraction of images whose argmax class is the reference's (FP16 backends
  must reach 99.9%; ``--min-agreement`` sets the bar, and the exit status is 1 below it);
* logits relative error, per image ``max|l - l_ref| / max|l_ref|``: its max and mean;
* heat-map error, per image the max absolute difference of the 224x224 CAM heat maps (steps 1-5
  of ARCHITECTURE.md, by :func:`maskrt.cam.cam_reference`) drawn for the reference's class from each
  backend's features: its max and mean;
* accuracy of both against the true labels, when the images have them;
* every disagreement, with the reference's logit margin (small margins flip first in FP16).

Images: ``--data`` is an ImageFolder tree (``with_mask/``, ``without_mask/``) or a flat folder;
by default ``$MASKRT_VAL_DIR`` (the shared validation split), else the packaged sample faces.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskrt.labels import CLASSES

DEFAULT_MIN_AGREEMENT = 0.999
REFERENCE_BACKEND = "onnxruntime"


@dataclass
class CheckImages:
    """uint8[N, 224, 224, 3] BGR batch with true labels (-1 where unknown) and file names."""

    root: Path
    images: np.ndarray
    labels: np.ndarray  # int64[N]
    names: list[str]


@dataclass
class CheckReport:
    """What :func:`compare` found; ``passed`` applies ``min_agreement`` to ``label_agreement``."""

    backend: str
    reference: str
    images: int
    label_agreement: float
    disagreements: list[dict[str, Any]]
    logits_rel_err_max: float
    logits_rel_err_mean: float
    heatmap_err_max: float
    heatmap_err_mean: float
    min_agreement: float
    passed: bool
    accuracy: dict[str, float] = field(default_factory=dict)
    data: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


def default_data_dir() -> Path:
    """``$MASKRT_VAL_DIR`` when set, else the sample faces shipped in the package."""
    from maskrt.samples import SAMPLES_DIR

    env = os.environ.get("MASKRT_VAL_DIR")
    return Path(env) if env else SAMPLES_DIR


def label_from_name(name: str) -> int:
    """Class index from a file name that starts with a class name (the samples'), else -1."""
    for index in sorted(range(len(CLASSES)), key=lambda i: -len(CLASSES[i])):
        if name.startswith(CLASSES[index]):
            return index
    return -1


def load_check_images(root: str | os.PathLike[str], limit: int | None = None) -> CheckImages:
    """Read an ImageFolder tree or a flat folder of images, squash-resized to 224x224."""
    from maskrt.image import decode_image, resize_to_input
    from maskrt.train.data import IMAGE_EXTENSIONS, load_image_folder

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data: no such folder: {root}")
    if all((root / name).is_dir() for name in CLASSES):
        loaded = load_image_folder(root)
        images, labels = loaded.images, loaded.labels
        names = [str(p.relative_to(root)) for p in loaded.paths]
    else:
        paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise FileNotFoundError(f"--data: {root} holds no images (and no {CLASSES[0]}/ and "
                                    f"{CLASSES[1]}/ folders)")
        images = np.stack([resize_to_input(decode_image(p)) for p in paths])
        labels = np.array([label_from_name(p.name) for p in paths], dtype=np.int64)
        names = [p.name for p in paths]
    if limit is not None:
        images, labels, names = images[:limit], labels[:limit], names[:limit]
    return CheckImages(root, np.ascontiguousarray(images), labels, names)


def run_batches(backend: Any, images: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(logits float32[N, 2], features float32[N, 512, 7, 7]) of ``images``, ``batch`` at a time."""
    logits, features = [], []
    for start in range(0, len(images), batch):
        out_logits, out_features = backend.infer(images[start:start + batch])
        logits.append(np.asarray(out_logits, dtype=np.float32))
        features.append(np.asarray(out_features, dtype=np.float32))
    return np.concatenate(logits), np.concatenate(features)


def heatmaps(features: np.ndarray, weight: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """float32[N, 224, 224] heat maps of ``classes`` (steps 1-5 of ARCHITECTURE.md, the reference)."""
    from maskrt.cam import cam_reference
    from maskrt.labels import INPUT_SIZE

    blank = np.zeros((len(features), INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    _, heat = cam_reference(np.ascontiguousarray(features, dtype=np.float32),
                            np.ascontiguousarray(weight, dtype=np.float32),
                            classes.astype(np.int64), blank, heatmaps=True)
    return heat


def logits_relative_error(logits: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """float64[N]: per image ``max|l - l_ref| / max|l_ref|`` (scale-free, safe near zero)."""
    reference = np.asarray(reference, dtype=np.float64)
    diff = np.abs(np.asarray(logits, dtype=np.float64) - reference).max(axis=1)
    return diff / np.maximum(np.abs(reference).max(axis=1), 1e-12)


def compare(logits: np.ndarray, features: np.ndarray, ref_logits: np.ndarray,
            ref_features: np.ndarray, weight: np.ndarray, *, names: Sequence[str],
            labels: np.ndarray | None = None,
            min_agreement: float = DEFAULT_MIN_AGREEMENT) -> dict[str, Any]:
    """The metrics of the module docstring as a dict of plain Python numbers and lists."""
    predicted, expected = logits.argmax(axis=1), ref_logits.argmax(axis=1)
    agree = predicted == expected
    rel = logits_relative_error(logits, ref_logits)
    heat_err = np.abs(heatmaps(features, weight, expected)
                      - heatmaps(ref_features, weight, expected)).reshape(len(agree), -1).max(axis=1)
    margins = np.abs(ref_logits[:, 0] - ref_logits[:, 1])
    disagreements = [{"image": names[i], "reference": CLASSES[int(expected[i])],
                      "backend": CLASSES[int(predicted[i])],
                      "reference_margin": float(margins[i])} for i in np.flatnonzero(~agree)]
    agreement = float(agree.mean())
    metrics: dict[str, Any] = {
        "images": len(agree), "label_agreement": agreement, "disagreements": disagreements,
        "logits_rel_err_max": float(rel.max()), "logits_rel_err_mean": float(rel.mean()),
        "heatmap_err_max": float(heat_err.max()), "heatmap_err_mean": float(heat_err.mean()),
        "min_agreement": float(min_agreement), "passed": agreement >= min_agreement,
    }
    if labels is not None and (labels >= 0).any():
        known = labels >= 0
        metrics["accuracy"] = {"backend": float((predicted[known] == labels[known]).mean()),
                               "reference": float((expected[known] == labels[known]).mean()),
                               "labelled_images": int(known.sum())}
    return metrics


def run_check(backend_name: str, data: CheckImages, *, model: Any = None,
              options: dict[str, Any] | None = None, batch: int = 64,
              min_agreement: float = DEFAULT_MIN_AGREEMENT) -> CheckReport:
    """Run ``backend_name`` and the ONNX Runtime reference on ``data`` and compare them.

    model: anything :class:`~maskrt.graph.Graph` takes, or a Graph. Both backends are given the
    same Graph, so they run one set of weights (one export) and read the CAM weights once.
    """
    from maskrt.backends import create_backend
    from maskrt.graph import Graph

    graph = Graph.of(model)
    seconds = {}
    # The candidate first: a backend that cannot run here fails before the reference's work.
    with create_backend(backend_name, graph, **(options or {})) as candidate:
        start = time.perf_counter()
        logits, features = run_batches(candidate, data.images, batch)
        seconds["backend"] = time.perf_counter() - start
        candidate_name = candidate.describe()
    with create_backend(REFERENCE_BACKEND, graph, precision="fp32") as reference:
        start = time.perf_counter()
        ref_logits, ref_features = run_batches(reference, data.images, batch)
        seconds["reference"] = time.perf_counter() - start
        reference_name = reference.describe()
        weight = reference.cam_weights.host
    metrics = compare(logits, features, ref_logits, ref_features, weight, names=data.names,
                      labels=data.labels, min_agreement=min_agreement)
    return CheckReport(backend=candidate_name, reference=reference_name, data=str(data.root),
                       seconds={k: round(v, 3) for k, v in seconds.items()}, **metrics)


def format_report(report: CheckReport) -> str:
    """The short human-readable summary ``maskrt check`` prints."""
    lines = [f"backend:   {report.backend}", f"reference: {report.reference}",
             f"images:    {report.images} from {report.data}",
             (f"label agreement      {100 * report.label_agreement:8.3f}%  "
              f"(required {100 * report.min_agreement:.1f}%)"),
             (f"logits rel. error    max {report.logits_rel_err_max:.2e}  "
              f"mean {report.logits_rel_err_mean:.2e}"),
             (f"heat-map abs. error  max {report.heatmap_err_max:.2e}  "
              f"mean {report.heatmap_err_mean:.2e}")]
    if report.accuracy:
        lines.append(f"accuracy vs labels   backend {100 * report.accuracy['backend']:.2f}%  "
                     f"reference {100 * report.accuracy['reference']:.2f}% "
                     f"({report.accuracy['labelled_images']} labelled)")
    for item in report.disagreements[:10]:
        lines.append(f"  disagrees on {item['image']}: reference {item['reference']}, backend "
                     f"{item['backend']} (reference logit margin {item['reference_margin']:.3g})")
    lines.append("PASS" if report.passed else "FAIL: label agreement below the required level")
    return "\n".join(lines)
