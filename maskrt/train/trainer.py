"""``maskrt train``: train the ResNet-18 of maskrt on an ImageFolder tree.

The default recipe is the paper's transfer learning (Ornek et al.): ImageNet weights, the
1000-class layer replaced by a 2-class one, early stages frozen, cross entropy, SGD with learning
rate 0.001 and momentum 0.9, 30 epochs, 224x224 inputs. Every part is an option
(:class:`~maskrt.train.recipe.Recipe`), so the same command trains from random initialisation
with another recipe (see MODEL.md for the one that produced the shipped weights).

Images go through the same path as scoring: decoded by :func:`maskrt.image.decode_image`,
squash-resized to 224x224 (:func:`maskrt.image.resize_to_input`), kept as uint8 BGR and
normalised by the very :class:`maskrt.graph.model.Preprocess` module that sits inside the
exported graph. Augmentations act on top of that 224x224 image; smaller training sizes
(``--progressive``) are resized from it. Validation always runs at ``--img-size`` on the
un-augmented images, i.e. what users get.

RUN_DIR receives ``last.pt`` (every epoch, with the optimiser state, for ``--resume``),
``best.pt`` (best validation accuracy so far), ``metrics.json``, ``curves.png``,
``confusion_matrix.json``/``.png`` (best epoch) and ``recipe.json``. Both ``.pt`` files are
maskrt checkpoints that ``maskrt export``/``eval``/``score --model`` read directly.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from maskrt.graph.model import (
    MaskNet,
    Preprocess,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from maskrt.image import resize_to_input
from maskrt.labels import CLASSES, INPUT_SIZE
from maskrt.train.augment import BatchStream
from maskrt.train.checkpoint import load_last, model_from_last, save_last
from maskrt.train.data import LoadedImages, load_image_folder, split_dirs
from maskrt.train.metrics import BinaryMetrics, format_confusion
from maskrt.train.optim import apply_freeze, make_optimizer, set_train_mode
from maskrt.train.plots import plot_confusion, plot_curves
from maskrt.train.recipe import Recipe, lr_at

Log = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# Evaluation inside the loop (PyTorch, same pixels as deployment)

@torch.no_grad()
def predict(model: MaskNet, images: np.ndarray, batch_size: int = 64,
            device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits float32[N, 2] of uint8[N, H, W, 3] BGR images (model in eval mode)."""
    prep = Preprocess().to(device)
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i:i + batch_size]).to(device)
        x = prep(x).contiguous(memory_format=torch.channels_last)
        out.append(model(x)[0].float().cpu())
    return torch.cat(out) if out else torch.empty(0, len(CLASSES))


def evaluate_logits(logits: torch.Tensor, labels: np.ndarray) -> tuple[float, BinaryMetrics]:
    """(mean cross entropy, metrics) of ``logits`` against the true ``labels``."""
    y = torch.from_numpy(labels)
    loss = nn.functional.cross_entropy(logits, y).item()
    return loss, BinaryMetrics.from_labels(labels, logits.argmax(1).numpy())


# ---------------------------------------------------------------------------------------------
# The run

@dataclass
class TrainResult:
    run_dir: Path
    best_path: Path
    last_path: Path
    best_epoch: int
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]


@dataclass
class _Run:
    """The working set of one training run; the last five fields are what ``--resume`` restores."""

    recipe: Recipe
    device: str
    run_dir: Path
    data_dir: Path
    model: MaskNet
    frozen: list[nn.Module]
    optimizer: torch.optim.Optimizer
    train_data: LoadedImages
    val_data: LoadedImages
    val_images: np.ndarray  # val_data.images at recipe.img_size
    steps_per_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = -1  # 0-based
    best_loss: float = math.inf
    start_epoch: int = 0
    keep_epochs: bool = False  # also write epoch_NN.pt, to pick an epoch on other val data later

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"


def train(recipe: Recipe, data_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str], *,
          device: str = "cpu", threads: int | None = 2, resume: str | os.PathLike[str] | None = None,
          progress: bool = True, max_steps_per_epoch: int | None = None,
          keep_epochs: bool = False, log: Log = print) -> TrainResult:
    """Train on ``data_dir/train``, validate on ``data_dir/val`` after every epoch, write RUN_DIR.

    ``resume`` names a ``last.pt`` written by an earlier run (its recipe is used); training then
    continues after the last completed epoch. ``max_steps_per_epoch`` caps each epoch (tests).
    ``keep_epochs`` also writes every epoch's weights as ``epoch_NN.pt``.
    """
    _configure_torch(device, threads)
    last = load_last(resume) if resume is not None else None
    if last is not None:
        recipe = _stored_recipe(last, recipe, resume, log)
    train_dir, val_dir = split_dirs(data_dir)
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    train_data, val_data = _load_data(train_dir, val_dir, progress=progress, log=log)
    run = _start_run(recipe, last, device, Path(run_dir), Path(data_dir), train_data, val_data,
                     max_steps_per_epoch)
    run.keep_epochs = keep_epochs
    if last is not None:
        _restore_progress(run, last)
        log(f"resumed from {resume} after epoch {run.start_epoch} (best val accuracy "
            f"{100 * run.best_acc:.2f}% at epoch {run.best_epoch + 1})")
    _write_header(run, log)
    for epoch in range(run.start_epoch, recipe.epochs):
        _run_epoch(run, epoch, progress=progress, log=log)
    return _finish(run, log)


# ---- steps of train(), in the order it takes them

def _configure_torch(device: str, threads: int | None) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available (torch.cuda.is_available() "
                           "is False); use --device cpu")
    if threads:
        torch.set_num_threads(threads)


def _stored_recipe(last: dict[str, Any], recipe: Recipe, resume: Any, log: Log) -> Recipe:
    """The recipe a resumed run continues with: the stored one, saying which given options lose."""
    saved = Recipe.from_json(last["train_state"]["recipe"])
    ignored = {k: getattr(recipe, k) for k, v in asdict(saved).items() if getattr(recipe, k) != v}
    if ignored:
        log(f"resume: using the recipe stored in {resume}; ignoring differing options {ignored}")
    return saved


def _load_data(train_dir: Path, val_dir: Path, *, progress: bool,
               log: Log) -> tuple[LoadedImages, LoadedImages]:
    """Decode both splits into RAM, logging (not raising) the images that were skipped."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_data = load_image_folder(train_dir, INPUT_SIZE, progress=progress, desc="decoding train")
        val_data = load_image_folder(val_dir, INPUT_SIZE, progress=progress, desc="decoding val")
    for w in caught:
        log(f"warning: {w.message}")
    log(f"data: train {train_data.counts()} ({len(train_data.skipped)} unreadable skipped), "
        f"val {val_data.counts()} ({len(val_data.skipped)} skipped); decoded in "
        f"{time.perf_counter() - start:.1f}s")
    return train_data, val_data


def _start_run(recipe: Recipe, last: dict[str, Any] | None, device: str, run_dir: Path,
               data_dir: Path, train_data: LoadedImages, val_data: LoadedImages,
               max_steps_per_epoch: int | None) -> _Run:
    """The model (new, or the resumed one), its frozen stages and optimiser, and the epoch size."""
    model = _initial_model(recipe) if last is None else model_from_last(last)
    frozen = apply_freeze(model, recipe.freeze_until)
    model = model.to(device).to(memory_format=torch.channels_last)
    val_images = val_data.images if recipe.img_size == INPUT_SIZE else np.stack(
        [resize_to_input(im, recipe.img_size) for im in val_data.images])
    steps = BatchStream(train_data, recipe.batch_size, recipe.img_size, "off", 0).steps
    if max_steps_per_epoch:
        steps = min(steps, max_steps_per_epoch)
    return _Run(recipe, device, run_dir, data_dir, model, frozen, make_optimizer(recipe, model),
                train_data, val_data, val_images, steps)


def _initial_model(recipe: Recipe) -> MaskNet:
    """The weights a new run starts from: a maskrt checkpoint (``init``: fine-tuning, the 2-class
    head included) or else ``pretrained`` (ImageNet, a torchvision file or random)."""
    if recipe.init:
        return load_checkpoint(recipe.init)
    return build_model(recipe.pretrained)


def _restore_progress(run: _Run, last: dict[str, Any]) -> None:
    """Put the optimiser, history, best epoch and RNG back where ``last.pt`` left them."""
    state = last["train_state"]
    run.optimizer.load_state_dict(state["optimizer"])
    run.history = list(state["history"])
    run.best_acc, run.best_epoch = float(state["best_acc"]), int(state["best_epoch"])
    run.best_loss = float(state.get("best_loss", math.inf))
    run.start_epoch = int(state["epoch"]) + 1
    torch.set_rng_state(state["torch_rng"])


def _write_header(run: _Run, log: Log) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    recipe = run.recipe.to_json()
    (run.run_dir / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    n_trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    log(f"recipe: {json.dumps(recipe)}")
    start = f"maskrt checkpoint {recipe['init']}" if recipe["init"] else f"pretrained={recipe['pretrained']}"
    log(f"model: resnet18 from {start}, {n_trainable:,} trainable parameters, frozen: "
        f"{run.recipe.freeze_until}; device {run.device}, {torch.get_num_threads()} threads")


def _run_epoch(run: _Run, epoch: int, *, progress: bool, log: Log) -> None:
    """Train one epoch, validate, log, and write the checkpoints and metrics of this epoch."""
    fit = _train_epoch(run, epoch, progress=progress)
    start = time.perf_counter()
    val_loss, m = evaluate_logits(predict(run.model, run.val_images, batch_size=64,
                                          device=run.device), run.val_data.labels)
    record = {"epoch": epoch + 1, "img_size": fit["img_size"], "lr_end": fit["lr_end"],
              "train_loss": fit["train_loss"], "train_accuracy": fit["train_accuracy"],
              "val_loss": val_loss, "val_accuracy": m.accuracy, "val_sensitivity": m.sensitivity,
              "val_specificity": m.specificity, "val_confusion": m.confusion().tolist(),
              "train_time_s": round(fit["train_time_s"], 1),
              "val_time_s": round(time.perf_counter() - start, 1)}
    run.history.append(record)
    # Best = highest val accuracy; a tie goes to the lower val loss (the better-calibrated,
    # usually later, epoch).
    improved = m.accuracy > run.best_acc or (m.accuracy == run.best_acc and val_loss < run.best_loss)
    log(f"epoch {epoch + 1}/{run.recipe.epochs} @{fit['img_size']}px: train loss "
        f"{record['train_loss']:.4f} acc {100 * record['train_accuracy']:.2f}% | "
        f"val@{run.recipe.img_size} loss {val_loss:.4f} {m.summary()}"
        f"{'  *best*' if improved else ''} | {fit['train_time_s']:.0f}s")
    if improved:
        run.best_acc, run.best_epoch, run.best_loss = m.accuracy, epoch, val_loss
    _save_epoch(run, epoch, m, save_best=improved, log=log)


def _train_epoch(run: _Run, epoch: int, *, progress: bool) -> dict[str, Any]:
    """One pass over the (augmented) training batches; the epoch's size, last lr, loss, accuracy."""
    recipe, steps = run.recipe, run.steps_per_epoch
    size, total = recipe.size_at(epoch), steps * recipe.epochs
    stream = BatchStream(run.train_data, recipe.batch_size, size, recipe.augment_at(epoch),
                         seed=recipe.seed * 1000 + epoch)
    set_train_mode(run.model, run.frozen)
    start = time.perf_counter()
    prep = Preprocess().to(run.device)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    loss_sum, correct, seen = 0.0, 0, 0
    lr = lr_at(recipe, epoch * steps, total, steps)
    bar = _progress_bar(steps, f"epoch {epoch + 1}/{recipe.epochs} @{size}px") if progress else None
    for step, (x, y) in enumerate(stream):
        if step >= steps:
            break
        lr = lr_at(recipe, epoch * steps + step, total, steps)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        x = prep(x.to(run.device)).contiguous(memory_format=torch.channels_last)
        y = y.to(run.device)
        logits, _ = run.model(x)
        loss = criterion(logits, y)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", lr=f"{lr:.2e}")
    if bar is not None:
        bar.close()
    return {"img_size": size, "lr_end": lr, "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1), "train_time_s": time.perf_counter() - start}


def _progress_bar(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True, file=sys.stderr)


def _save_epoch(run: _Run, epoch: int, m: BinaryMetrics, *, save_best: bool, log: Log) -> None:
    """best.pt (when this epoch is the best), last.pt, metrics.json and curves.png."""
    recipe = run.recipe.to_json()
    meta = {"epoch": epoch + 1, "recipe": recipe, "val": m.as_dict(),
            "data_dir": str(run.data_dir.resolve()), "torch": str(torch.__version__)}
    if save_best:
        save_checkpoint(run.model, run.best_path, meta=meta)
    if run.keep_epochs:
        save_checkpoint(run.model, run.run_dir / f"epoch_{epoch + 1:02d}.pt", meta=meta)
    save_last(run.model, run.last_path, meta, {
        "recipe": recipe, "epoch": epoch, "optimizer": run.optimizer.state_dict(),
        "history": run.history, "best_acc": run.best_acc, "best_epoch": run.best_epoch,
        "best_loss": run.best_loss, "torch_rng": torch.get_rng_state()})
    (run.run_dir / "metrics.json").write_text(json.dumps(
        {"recipe": recipe, "best_epoch": run.best_epoch + 1, "epochs": run.history}, indent=2) + "\n")
    try:
        plot_curves(run.history, run.run_dir / "curves.png")
    except Exception as err:  # noqa: BLE001 -- a plotting failure must not stop training
        log(f"warning: could not draw curves.png ({err})")


def _finish(run: _Run, log: Log) -> TrainResult:
    """The best epoch's confusion matrix (JSON and figure), the closing log lines, the result."""
    history = run.history
    best = history[run.best_epoch] if 0 <= run.best_epoch < len(history) else history[-1]
    best_m = BinaryMetrics.from_confusion(np.asarray(best["val_confusion"]))
    (run.run_dir / "confusion_matrix.json").write_text(json.dumps(
        {"epoch": best["epoch"], "split": "val", **best_m.as_dict()}, indent=2) + "\n")
    try:
        plot_confusion(best_m.confusion(), run.run_dir / "confusion_matrix.png",
                       title=f"val, best epoch {best['epoch']}")
    except Exception as err:  # noqa: BLE001 -- a plotting failure must not lose the run
        log(f"warning: could not draw confusion_matrix.png ({err})")
    log(f"best epoch {best['epoch']}: {best_m.summary()}")
    log(format_confusion(best_m.confusion()))
    log(f"wrote {run.best_path}, {run.last_path}, metrics.json, curves.png, confusion_matrix.png "
        f"in {run.run_dir}")
    return TrainResult(run.run_dir, run.best_path, run.last_path, best["epoch"], best_m.as_dict(),
                       history)
