"""Fine-tune YuNet-n on annotated scene photos, and measure a detector graph on a split.

The student starts from the shipped YuNet-n graph; a frozen copy of it (the teacher) supplies the
landmark targets the photos lack. Each step draws ``batch`` photos at random, cuts one augmented
crop from each (:class:`~maskrt.train.detector.data.SceneFaces`), and takes an AdamW step on
:func:`~maskrt.train.detector.loss.detector_loss`; the learning rate warms up linearly, then
follows a cosine to 5% of its peak. The result is the original graph with the new weights.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from maskrt.train.detector.assign import Priors
from maskrt.train.detector.data import CROP, SceneFaces
from maskrt.train.detector.loss import detector_loss
from maskrt.train.detector.model import load_module, run, to_blob, write_onnx
from maskrt.train.scenes import SceneImage

Log = Callable[[str], None]
LOG_EVERY = 50


@dataclass
class Recipe:
    """The training settings (fixed before any measurement on val; see MODEL.md)."""

    steps: int = 600
    batch: int = 16
    lr: float = 3e-4
    weight_decay: float = 5e-4
    warmup: int = 50
    degrade: bool = True
    source_degrade: float = 0.0
    seed: int = 0


def learning_rate(step: int, recipe: Recipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def fine_tune(scenes: Sequence[SceneImage], source: str | os.PathLike[str],
              destination: str | os.PathLike[str], box_fit: tuple[float, float, float, float],
              recipe: Recipe | None = None, log: Log = print) -> Path:
    """Train from the graph at ``source`` on ``scenes``; write the graph to ``destination``."""
    recipe = recipe or Recipe()
    torch.manual_seed(recipe.seed)
    data = SceneFaces(list(scenes), box_fit, seed=recipe.seed, degrade=recipe.degrade,
                       source_degrade=recipe.source_degrade)
    student, teacher = load_module(source).train(), load_module(source).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    optimiser = torch.optim.AdamW(student.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    priors = Priors.of(CROP, CROP)
    pick = random.Random(recipe.seed + 1)
    log(f"detector: {len(data)} photos, {recipe.steps} steps of {recipe.batch} crops {CROP}x{CROP}")
    start, totals = time.perf_counter(), _Totals()
    for step in range(recipe.steps):
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, recipe)
        samples = [data.sample(pick.randrange(len(data))) for _ in range(recipe.batch)]
        blob = to_blob([s.image for s in samples])
        with torch.no_grad():
            targets = run(teacher, blob)
        terms = detector_loss(run(student, blob), targets, priors, samples)
        optimiser.zero_grad(set_to_none=True)
        terms.total().backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 10.0)
        optimiser.step()
        totals.add(terms.as_floats(), terms.positives)
        if (step + 1) % LOG_EVERY == 0 or step + 1 == recipe.steps:
            spent = time.perf_counter() - start
            log(f"step {step + 1}/{recipe.steps} {totals.line()} lr {learning_rate(step, recipe):.2e} "
                f"{spent / (step + 1):.2f} s/step, {spent * (recipe.steps / (step + 1) - 1) / 60:.1f} min left")
            totals = _Totals()
    doc = (f"YuNet-n (libfacedetection.train, Apache-2.0) fine-tuned by maskrt on annotated scene "
           f"photos: {recipe}")
    write_onnx(student, source, destination, doc)
    log(f"detector: wrote {destination}")
    return Path(destination)


class _Totals:
    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = self.positives = 0

    def add(self, values: dict[str, float], positives: int) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count, self.positives = self.count + 1, self.positives + positives

    def line(self) -> str:
        n = max(self.count, 1)
        return " ".join(f"{k} {v / n:.3f}" for k, v in self.sums.items()) + \
            f" pos/step {self.positives / n:.0f}"


def detector_figures(scenes: Sequence[SceneImage], model: str, **face_options: object) -> dict[str, float]:
    """Face recall at IoU 0.5 and 0.3 (all, with_mask, without_mask) and class-agnostic face
    AP@0.5 of detector graph ``model`` on ``scenes``, detected as the default preset's face
    stage detects (its scale rule), boxes mapped by its box_fit."""
    from maskrt.detect import face_stage
    from maskrt.image import decode_image
    from maskrt.train.voc_metric import Detections, GroundTruth, evaluate

    stage = face_stage("default", detector_model=model, **face_options)
    detections, truths, by_class = [], [], {"with_mask": [], "without_mask": []}
    for scene in scenes:
        image = stage.sharpened(decode_image(scene.image))
        regions = stage.regions(stage.detect([image])[0], image.shape)[0]
        boxes = [list(r.box) for r in regions]
        scores = [r.score for r in regions]
        detections.append(Detections.make(boxes, ["face"] * len(boxes), scores, scores))
        gt = scene.truth
        truths.append(GroundTruth.make(gt.boxes, ["face"] * len(gt.boxes), gt.difficult))
        for name in by_class:
            keep = np.asarray(gt.labels, object) == name
            by_class[name].append(GroundTruth.make(gt.boxes[keep], ["face"] * int(keep.sum()),
                                                   gt.difficult[keep]))
    stage.close()
    s50, s30 = evaluate(detections, truths, 0.5, ("face",)), evaluate(detections, truths, 0.3, ("face",))
    figures = {"face_ap50": s50.ap["face"], "recall50": s50.face_recall, "recall30": s30.face_recall}
    for name, gts in by_class.items():
        figures[f"{name}_recall50"] = evaluate(detections, gts, 0.5, ("face",)).face_recall
    return figures
