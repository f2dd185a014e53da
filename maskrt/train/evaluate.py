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

    @property
    def warnings(self) -> list[str]:
        """What makes the figures mean less than they seem: a model that gave every image the
        same label tells nothing apart (an untrained model, or the wrong file)."""
        predicted = {p.pred_index for p in self.predictions}
        if len(predicted) != 1 or len(self.predictions) < 2:
            return []
        only = CLASSES[predicted.pop()]
        return [(f"the model predicted {only} for all {len(self.predictions)} images: it does "
                 "not tell the classes apart (untrained, or the wrong model?)")]

    def as_dict(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir), "model": self.model, "backend": self.backend,
            **self.metrics.as_dict(), "warnings": self.warnings,
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
    from maskrt.engine import Engine

    shown = list(mistakes)[:limit] if limit else list(mistakes)
    cells = []
    if shown:
        own = engine is None
        if own:
            engine = Engine(model=model, backend=backend, **backend_options)
        try:
            # Explain the decoded originals (the very input eval classified), then shrink both
            # the image and its overlay for display.
            for p in shown:
                image = decode_image(p.path)
                result = engine.explain(image)
                lines = [(f"true {CLASSES[p.true_index]}", BLACK),
                         (f"pred {CLASSES[p.pred_index]} ({100 * p.confidence:.0f}%)", RED),
                         (p.path.name[:40], GREY)]
                cells.append((lines, _tile(image), _tile(result.overlay)))
        finally:
            if own:
                engine.close()
    head = title or f"{len(mistakes)} misclassified image(s)"
    if limit and len(mistakes) > len(shown):
        head += f" (first {len(shown)} shown, most confident first)"
    return write_gallery(path, cells, head if shown else (title or "no misclassified images"),
                         columns)


BLACK, RED, GREY = (0, 0, 0), (0, 0, 200), (90, 90, 90)


def write_gallery(path: str | os.PathLike[str], cells: Sequence[tuple[list, np.ndarray, np.ndarray]],
                  head: str, columns: int = 4) -> Path:
    """Write a PNG of ``cells`` (caption lines of (text, BGR colour), left tile, right tile, each
    tile TILE x TILE) under the heading ``head``, ``columns`` cells a row."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cell_w, cell_h, header = 2 * TILE + 8, TILE + CAPTION, 36
    cols = max(1, min(columns, len(cells)))
    rows = max(1, math.ceil(len(cells) / cols))
    canvas = np.full((header + rows * cell_h + 8, cols * cell_w + 8, 3), 255, dtype=np.uint8)
    if not cells:
        canvas = np.full((header + 40, 520, 3), 255, dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(canvas, head, (8, 24), font, 0.55, BLACK, 1, cv2.LINE_AA)
    for k, (lines, left, right) in enumerate(cells):
        r, c = divmod(k, cols)
        y, x = header + r * cell_h, 4 + c * cell_w
        for n, (text, colour) in enumerate(lines[:3]):
            cv2.putText(canvas, text, (x + 2, y + 14 + 16 * n - (n == 2)), font,
                        0.36 if n == 2 else 0.42, colour, 1, cv2.LINE_AA)
        canvas[y + CAPTION:y + CAPTION + TILE, x:x + TILE] = left
        canvas[y + CAPTION:y + CAPTION + TILE, x + TILE + 4:x + 2 * TILE + 4] = right
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"could not write {path}")
    return path


def _tile(image: np.ndarray) -> np.ndarray:
    import cv2
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if h >= TILE and w >= TILE else cv2.INTER_LINEAR
    return cv2.resize(image, (TILE, TILE), interpolation=interp)


# ---------------------------------------------------------------------------------------------
# Gallery of scene mistakes (maskrt eval on a VOC split)

#: Crops around a face are this many times its longer side, so the tile shows some context.
CONTEXT = 2.0
KIND_COLOUR = {"missed": (0, 160, 255), "false": (0, 0, 200), "misclassified": (200, 0, 160)}


def draw_scene_gallery(mistakes: Sequence[Any], path: str | os.PathLike[str], *, engine: Any,
                       columns: int = 4, limit: int | None = 64) -> Path:
    """A PNG of scene mistakes (:class:`maskrt.train.scenes.SceneMistake`, most severe first):
    each face cropped from its photo, with its box drawn, beside the same crop of the CAM overlay
    that ``engine.faces(..., explain=True)`` drew for it (missed faces have no overlay: the crop
    is shown with the ground-truth box)."""
    shown = list(mistakes)[:limit] if limit else list(mistakes)
    frames: dict[Path, np.ndarray] = {}
    explained: dict[Path, list[Any]] = {}
    for image in dict.fromkeys(m.image for m in shown):  # each photo decoded and explained once
        frames[image] = decode_image(image)
        if any(m.face >= 0 for m in shown if m.image == image):
            # every candidate, as eval ranked them: m.face indexes that list
            explained[image] = engine.faces([frames[image]], explain=True,
                                            report_threshold=0.0)[0]
    cells = []
    for m in shown:
        frame = frames[m.image]
        colour = KIND_COLOUR.get(m.kind, RED)
        left = _face_tile(frame, m.box, colour)
        right = _overlay_of(explained.get(m.image, []), m.box, frame) if m.face >= 0 else frame
        right = _face_tile(right, m.box, colour)
        cells.append((_scene_caption(m, colour), left, right))
    counts = {k: sum(m.kind == k for m in mistakes) for k in KIND_COLOUR}
    head = (f"{len(mistakes)} mistakes: {counts['missed']} missed, {counts['false']} false, "
            f"{counts['misclassified']} misclassified")
    if limit and len(mistakes) > len(shown):
        head += f" (first {len(shown)}, most severe first)"
    return write_gallery(path, cells, head if mistakes else "no mistakes", columns)


def _scene_caption(m: Any, colour: tuple[int, int, int]) -> list[tuple[str, tuple[int, int, int]]]:
    if m.kind == "missed":
        first = f"missed {m.true}"
    elif m.kind == "misclassified":
        first = f"{m.true} as {m.predicted} ({100 * m.confidence:.0f}%)"
    else:
        first = f"false {m.predicted} ({100 * m.confidence:.0f}%)"
    x0, y0, x1, y1 = (round(float(v)) for v in m.box)
    return [(first, colour), (f"box {x0},{y0} {x1 - x0}x{y1 - y0}", BLACK), (m.image.name[:40], GREY)]


def _overlay_of(faces: Sequence[Any], box: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The full-frame overlay of the explained face that is the detection at ``box`` (found by
    IoU rather than by index: a one-frame call need not batch exactly like the eval run did);
    the plain frame when there is none."""
    from maskrt.train.voc_metric import iou_matrix

    if not faces:
        return frame
    iou = iou_matrix(np.asarray([box], np.float64), np.asarray([f.box for f in faces], np.float64))[0]
    best = int(np.argmax(iou))
    if iou[best] < 0.5 or faces[best].overlay is None:
        return frame
    return _full_frame(faces[best].overlay, faces[best].box, frame)


def _full_frame(overlay: Any, box: Sequence[int], frame: np.ndarray) -> np.ndarray:
    """The overlay as a full frame: it is one already, or (a face-sized one) pasted in place."""
    from maskrt.devices import to_host

    overlay = np.asarray(to_host(overlay))
    if overlay.shape == frame.shape:
        return overlay
    x0, y0, x1, y1 = (int(v) for v in box)
    full = frame.copy()
    if overlay.shape[:2] == (y1 - y0, x1 - x0):
        full[y0:y1, x0:x1] = overlay
    return full


def _face_tile(image: np.ndarray, box: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """A square crop of ``image`` about ``box`` (CONTEXT times its longer side, padded grey where
    it leaves the frame, so faces at the border are not stretched) with the box drawn."""
    import cv2

    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(8, round(CONTEXT * max(x1 - x0, y1 - y0)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    h, w = image.shape[:2]
    crop = np.full((side, side, 3), 128, np.uint8)
    sx0, sy0, sx1, sy1 = max(0, left), max(0, top), min(w, left + side), min(h, top + side)
    if sx1 > sx0 and sy1 > sy0:
        crop[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = image[sy0:sy1, sx0:sx1]
    scale = TILE / side
    tile = _tile(crop)
    p0 = (int((x0 - left) * scale), int((y0 - top) * scale))
    p1 = (int((x1 - left) * scale), int((y1 - top) * scale))
    cv2.rectangle(tile, p0, p1, colour, 1, cv2.LINE_AA)
    return tile
