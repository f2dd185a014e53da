"""``maskrt eval``: accuracy, sensitivity and specificity of a model on an ImageFolder tree.

The images go through :class:`maskrt.Engine`, i.e. the same decoding, 224x224 squash-resize,
backend (default: ONNX Runtime on the CPU) and decision rule as ``maskrt score``, so the figures
printed are what users get. Positive = ``without_mask`` (the paper's convention):
sensitivity = without_mask recall, specificity = with_mask recall.

``--gallery FILE.png`` draws every misclassified image next to its CAM overlay (like Figs. 12-13
of Ornek et al.), the most confident mistakes first.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskrt.image import ImageError, decode_image
from maskrt.labels import CLASSES
from maskrt.train.data import DatasetError, index_image_folder
from maskrt.train.metrics import BinaryMetrics


@dataclass
class Prediction:
    path: Path
    true_index: int
    pred_index: int
    p_without_mask: float

    @property
    def correct(self) -> bool:
        return self.true_index == self.pred_index

    @property
    def confidence(self) -> float:
        """Probability the model gave to the class it chose."""
        return self.p_without_mask if self.pred_index == 1 else 1.0 - self.p_without_mask

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "true": CLASSES[self.true_index],
                "predicted": CLASSES[self.pred_index], "p_without_mask": round(self.p_without_mask, 6)}


@dataclass
class EvalReport:
    data_dir: Path
    metrics: BinaryMetrics
    predictions: list[Prediction]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    backend: str = ""
    model: str = ""
    seconds: float = 0.0

    @property
    def misclassified(self) -> list[Prediction]:
        wrong = [p for p in self.predictions if not p.correct]
        return sorted(wrong, key=lambda p: -p.confidence)

    def as_dict(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir), "model": self.model, "backend": self.backend,
            **self.metrics.as_dict(),
            "images": len(self.predictions), "skipped": len(self.skipped),
            "skipped_files": [{"path": str(p), "reason": r} for p, r in self.skipped],
            "misclassified": [p.as_dict() for p in self.misclassified],
            "seconds": round(self.seconds, 2),
        }


def evaluate_folder(data_dir: str | os.PathLike[str], model: Any = None, backend: str = "onnxruntime", *,
                    engine: Any = None, batch_size: int = 64, progress: bool = False,
                    **backend_options: Any) -> EvalReport:
    """Classify every image of ``data_dir/with_mask`` and ``data_dir/without_mask`` with an Engine.

    Unreadable images are skipped with a warning and reported in ``skipped``.
    """
    from maskrt.engine import Engine

    t0 = time.perf_counter()
    index = index_image_folder(data_dir)
    own = engine is None
    if own:
        engine = Engine(model=model, backend=backend, chunk_size=batch_size, **backend_options)
    predictions: list[Prediction] = []
    skipped: list[tuple[Path, str]] = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(index), desc="evaluating", unit="img", file=sys.stderr)
    try:
        for start in range(0, len(index), batch_size):
            frames, paths, labels = [], [], []
            for path, label in zip(index.paths[start:start + batch_size], index.labels[start:start + batch_size]):
                try:
                    frames.append(decode_image(path))
                except ImageError as err:
                    skipped.append((path, str(err)))
                    warnings.warn(f"skipping unreadable image {path}: {err}", stacklevel=2)
                    continue
                paths.append(path)
                labels.append(int(label))
            if frames:
                for path, label, result in zip(paths, labels, engine.classify(frames)):
                    predictions.append(Prediction(path, label, result.class_index, result.p_without_mask))
            if bar is not None:
                bar.update(min(batch_size, len(index) - start))
        describe = engine.backend.describe()
    finally:
        if bar is not None:
            bar.close()
        if own:
            engine.close()
    if not predictions:
        raise DatasetError(f"{data_dir}: none of the {len(index)} images could be decoded")
    metrics = BinaryMetrics.from_labels([p.true_index for p in predictions],
                                        [p.pred_index for p in predictions])
    return EvalReport(Path(data_dir), metrics, predictions, skipped, describe,
                      str(model) if model is not None else "shipped", time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# Gallery of mistakes

TILE = 160
CAPTION = 52


def draw_gallery(mistakes: Sequence[Prediction], path: str | os.PathLike[str], *, engine: Any = None,
                 model: Any = None, backend: str = "onnxruntime", columns: int = 4,
                 limit: int | None = 64, title: str = "", **backend_options: Any) -> Path:
    """A PNG of ``mistakes``: each image (squashed to the model's view) beside its CAM overlay
    for the predicted class, captioned with the true and predicted labels and the probability."""
    import cv2

    from maskrt.engine import Engine

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shown = list(mistakes)[:limit] if limit else list(mistakes)
    cell_w, cell_h = 2 * TILE + 8, TILE + CAPTION
    cols = max(1, min(columns, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    header = 36
    canvas = np.full((header + rows * cell_h + 8, cols * cell_w + 8, 3), 255, dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    head = title or f"{len(mistakes)} misclassified image(s)"
    if limit and len(mistakes) > len(shown):
        head += f" (first {len(shown)} shown, most confident first)"
    if not shown:
        canvas = np.full((header + 40, 520, 3), 255, dtype=np.uint8)
        head = title or "no misclassified images"
    cv2.putText(canvas, head, (8, 24), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    if shown:
        own = engine is None
        if own:
            engine = Engine(model=model, backend=backend, **backend_options)
        try:
            # Explain the decoded originals (the very input eval classified), then shrink both
            # the image and its overlay for display.
            frames, overlays = [], []
            for p in shown:
                image = decode_image(p.path)
                result = engine.explain(image)
                frames.append(_tile(image))
                overlays.append(_tile(result.overlay))
        finally:
            if own:
                engine.close()
        for k, (pred, frame, overlay) in enumerate(zip(shown, frames, overlays)):
            r, c = divmod(k, cols)
            y, x = header + r * cell_h, 4 + c * cell_w
            colour = (0, 0, 200)
            cv2.putText(canvas, f"true {CLASSES[pred.true_index]}", (x + 2, y + 14), font, 0.42,
                        (0, 0, 0), 1, cv2.LINE_AA)
            cv2.putText(canvas, f"pred {CLASSES[pred.pred_index]} ({100 * pred.confidence:.0f}%)",
                        (x + 2, y + 30), font, 0.42, colour, 1, cv2.LINE_AA)
            cv2.putText(canvas, pred.path.name[:40], (x + 2, y + 45), font, 0.36, (90, 90, 90), 1,
                        cv2.LINE_AA)
            canvas[y + CAPTION:y + CAPTION + TILE, x:x + TILE] = frame
            canvas[y + CAPTION:y + CAPTION + TILE, x + TILE + 4:x + 2 * TILE + 4] = overlay
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"could not write {path}")
    return path


def _tile(image: np.ndarray) -> np.ndarray:
    import cv2
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if h >= TILE and w >= TILE else cv2.INTER_LINEAR
    return cv2.resize(image, (TILE, TILE), interpolation=interp)
