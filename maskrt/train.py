"""``maskrt train``: train the ResNet-18 of maskrt on an ImageFolder tree.

The default recipe is the paper's transfer learning (Ornek et al.): ImageNet weights, the
1000-class layer replaced by a 2-class one, early stages frozen, cross entropy, SGD with learning
rate 0.001 and momentum 0.9, 30 epochs, 224x224 inputs. Every part is an option, so the same
command trains from random initialisation with another recipe (see MODEL.md for the one that
produced the shipped weights).

Images go through the same path as scoring: decoded with OpenCV, squash-resized to 224x224
(:func:`maskrt.preprocess.resize_to_input`), kept as uint8 BGR and normalised by the very
:class:`maskrt.model.Preprocess` module that sits inside the exported graph. Augmentations act
on top of that 224x224 image; smaller training sizes (``--progressive``) are resized from it.
Validation always runs at ``--img-size`` on the un-augmented images, i.e. what users get.

RUN_DIR receives ``last.pt`` (every epoch, with the optimiser state, for ``--resume``),
``best.pt`` (best validation accuracy so far), ``metrics.json``, ``curves.png``,
``confusion_matrix.json``/``.png`` (best epoch) and ``recipe.json``. Both ``.pt`` files are
maskrt checkpoints that ``maskrt export``/``eval``/``score --model`` read directly.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from maskrt.data import DatasetError, LoadedImages, load_image_folder, split_dirs
from maskrt.labels import CLASSES, INPUT_SIZE
from maskrt.metrics import BinaryMetrics, format_confusion
from maskrt.model import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    MaskNet,
    ModelLoadError,
    Preprocess,
    build_model,
    save_checkpoint,
)

#: Stages of ResNet-18 in forward order; ``--freeze-until X`` freezes X and every stage before it.
STAGES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")
FREEZE_CHOICES: tuple[str, ...] = ("none",) + STAGES
OPTIMIZERS = ("sgd", "adamw", "adam")
SCHEDULES = ("constant", "cosine", "onecycle", "step")
AUGMENT = ("off", "light", "strong")
TRAIN_STATE = "train_state"


@dataclass
class Recipe:
    """Everything that defines a training run. Defaults = the paper's recipe."""

    pretrained: str = "imagenet"       # imagenet | none | path to torchvision resnet18 weights
    freeze_until: str = "layer2"       # none | stem | layer1 | layer2 | layer3 | layer4
    epochs: int = 30
    lr: float = 1e-3
    optimizer: str = "sgd"             # sgd | adamw | adam
    momentum: float = 0.9              # SGD momentum (Adam's beta1 otherwise)
    weight_decay: float = 0.0
    schedule: str = "constant"         # constant | cosine | onecycle | step
    warmup_epochs: float = 0.0         # linear warm-up (onecycle: fraction of all steps if < 1)
    batch_size: int = 32
    img_size: int = INPUT_SIZE         # final training size = validation size
    progressive: list[tuple[int, int]] = field(default_factory=list)  # [(size, epochs), ...] first
    augment: str = "light"             # off | light | strong
    final_augment: str | None = None   # augmentation of the epochs at img_size (None: = augment)
    label_smoothing: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.progressive = [(int(s), int(e)) for s, e in self.progressive]
        if self.freeze_until not in FREEZE_CHOICES:
            raise ValueError(f"freeze_until: expected one of {FREEZE_CHOICES}, got {self.freeze_until!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("augment", "final_augment"):
            value = getattr(self, name)
            if value not in AUGMENT and not (name == "final_augment" and value is None):
                raise ValueError(f"{name}: expected one of {AUGMENT}, got {value!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
        if self.img_size < 32 or any(s < 32 for s, _ in self.progressive):
            raise ValueError("image sizes must be >= 32 pixels")
        if sum(e for _, e in self.progressive) > self.epochs:
            raise ValueError(f"progressive stages take {sum(e for _, e in self.progressive)} epochs, "
                             f"more than epochs={self.epochs}")

    def size_at(self, epoch: int) -> int:
        """Training image size of 0-based ``epoch``."""
        end = 0
        for size, n in self.progressive:
            end += n
            if epoch < end:
                return size
        return self.img_size

    def augment_at(self, epoch: int) -> str:
        """Augmentation level of 0-based ``epoch``."""
        in_final = epoch >= sum(n for _, n in self.progressive)
        return self.final_augment if in_final and self.final_augment else self.augment

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["progressive"] = [list(p) for p in self.progressive]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Recipe:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ---------------------------------------------------------------------------------------------
# Augmentation: on uint8 BGR images (numpy/OpenCV per image, colour on the batch in torch)

def _augment_params(level: str) -> dict[str, Any]:
    if level == "strong":
        return {"scale": (0.45, 1.0), "ratio": (3 / 4, 4 / 3), "flip": True, "rotate": 12.0,
                "rotate_p": 0.4, "brightness": 0.35, "contrast": 0.35, "saturation": 0.4,
                "gray_p": 0.05, "blur_p": 0.15}
    if level == "light":
        return {"scale": (0.8, 1.0), "ratio": (0.9, 1.1), "flip": True, "rotate": 0.0,
                "rotate_p": 0.0, "brightness": 0.15, "contrast": 0.15, "saturation": 0.15,
                "gray_p": 0.0, "blur_p": 0.0}
    return {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "flip": False, "rotate": 0.0, "rotate_p": 0.0,
            "brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "gray_p": 0.0, "blur_p": 0.0}


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    import cv2
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def augment_image(image: np.ndarray, size: int, params: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Random resized crop (area ``scale``, aspect ``ratio``), flip, small rotation, blur."""
    import cv2
    h, w = image.shape[:2]
    lo, hi = params["scale"]
    if hi < 1.0 or lo < 1.0:
        for _ in range(10):
            area = h * w * rng.uniform(lo, hi)
            ratio = math.exp(rng.uniform(math.log(params["ratio"][0]), math.log(params["ratio"][1])))
            cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                image = image[y0:y0 + ch, x0:x0 + cw]
                break
    out = _resize(image, size)
    if params["flip"] and rng.random() < 0.5:
        out = out[:, ::-1]
    if params["rotate"] and rng.random() < params["rotate_p"]:
        angle = rng.uniform(-params["rotate"], params["rotate"])
        m = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle, 1.0)
        out = cv2.warpAffine(np.ascontiguousarray(out), m, (size, size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)
    if params["blur_p"] and rng.random() < params["blur_p"]:
        out = cv2.GaussianBlur(np.ascontiguousarray(out), (0, 0), rng.uniform(0.3, 1.2))
    return np.ascontiguousarray(out)


def color_jitter(batch: torch.Tensor, params: dict[str, Any], gen: torch.Generator) -> torch.Tensor:
    """float32[N, H, W, 3] BGR in [0, 255] -> jittered brightness/contrast/saturation (+ gray)."""
    n = batch.shape[0]
    if not (params["brightness"] or params["contrast"] or params["saturation"] or params["gray_p"]):
        return batch

    def factor(amount: float) -> torch.Tensor:
        return 1.0 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * amount

    weights = torch.tensor([0.114, 0.587, 0.299])  # BGR luma
    x = batch
    if params["brightness"]:
        x = x * factor(params["brightness"])
    if params["contrast"]:
        mean = (x * weights).sum(-1, keepdim=True).mean(dim=(1, 2), keepdim=True)
        x = (x - mean) * factor(params["contrast"]) + mean
    if params["saturation"]:
        gray = (x * weights).sum(-1, keepdim=True)
        x = (x - gray) * factor(params["saturation"]) + gray
    if params["gray_p"]:
        to_gray = (torch.rand(n, 1, 1, 1, generator=gen) < params["gray_p"]).float()
        gray = (x * weights).sum(-1, keepdim=True)
        x = x * (1 - to_gray) + gray * to_gray
    return x.clamp_(0, 255)


class BatchStream:
    """Shuffled, augmented training batches, prepared one batch ahead in a worker thread."""

    def __init__(self, data: LoadedImages, batch_size: int, size: int, augment: str, seed: int,
                 drop_last: bool = True) -> None:
        self.data, self.batch_size, self.size = data, batch_size, size
        self.params = _augment_params(augment)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        n = len(data)
        self.drop_last = drop_last and n >= batch_size
        self.steps = n // batch_size if self.drop_last else math.ceil(n / batch_size)

    def __len__(self) -> int:
        return self.steps

    def _make(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        out = np.empty((len(idx), self.size, self.size, 3), dtype=np.uint8)
        for j, i in enumerate(idx):
            out[j] = augment_image(self.data.images[i], self.size, self.params, self.rng)
        x = color_jitter(torch.from_numpy(out).float(), self.params, self.gen)
        return x, torch.from_numpy(self.data.labels[idx])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.rng.permutation(len(self.data))
        chunks = [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(self.steps)]
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._make, chunks[0]) if chunks else None
            for k in range(len(chunks)):
                batch = pending.result()
                pending = pool.submit(self._make, chunks[k + 1]) if k + 1 < len(chunks) else None
                yield batch


# ---------------------------------------------------------------------------------------------
# Model set-up

def _stage_modules(model: MaskNet) -> dict[str, list[nn.Module]]:
    net = model.net
    return {"stem": [net.conv1, net.bn1], "layer1": [net.layer1], "layer2": [net.layer2],
            "layer3": [net.layer3], "layer4": [net.layer4]}


def frozen_modules(model: MaskNet, freeze_until: str) -> list[nn.Module]:
    if freeze_until == "none":
        return []
    stages = _stage_modules(model)
    out: list[nn.Module] = []
    for name in STAGES[:STAGES.index(freeze_until) + 1]:
        out.extend(stages[name])
    return out


def apply_freeze(model: MaskNet, freeze_until: str) -> list[nn.Module]:
    """Stop gradients through the frozen stages; their BatchNorms keep their statistics."""
    frozen = frozen_modules(model, freeze_until)
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    return frozen


def set_train_mode(model: nn.Module, frozen: Sequence[nn.Module]) -> None:
    model.train()
    for m in frozen:
        m.eval()


def make_optimizer(recipe: Recipe, model: MaskNet) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BN and biases
    groups = [{"params": decay, "weight_decay": recipe.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=recipe.lr, betas=(recipe.momentum, 0.999))


def lr_at(recipe: Recipe, step: int, total: int, steps_per_epoch: int) -> float:
    """Learning rate at global step ``step`` (0-based) of ``total``."""
    t = step / max(total, 1)
    if recipe.schedule == "onecycle":
        warm = recipe.warmup_epochs if 0 < recipe.warmup_epochs < 1 else (
            recipe.warmup_epochs * steps_per_epoch / max(total, 1) if recipe.warmup_epochs else 0.25)
        if t < warm:
            return recipe.lr * (0.04 + 0.96 * t / warm)
        u = (t - warm) / max(1 - warm, 1e-9)
        return recipe.lr * (1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * u)))
    warm_steps = recipe.warmup_epochs * steps_per_epoch
    if warm_steps and step < warm_steps:
        return recipe.lr * (step + 1) / warm_steps
    if recipe.schedule == "cosine":
        u = (step - warm_steps) / max(total - warm_steps, 1)
        return recipe.lr * 0.5 * (1 + math.cos(math.pi * u))
    if recipe.schedule == "step":  # x0.1 every third of the run
        return recipe.lr * 0.1 ** int(3 * t)
    return recipe.lr


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


def train(recipe: Recipe, data_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str], *,
          device: str = "cpu", threads: int | None = 2, resume: str | os.PathLike[str] | None = None,
          progress: bool = True, max_steps_per_epoch: int | None = None,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train on ``data_dir/train``, validate on ``data_dir/val`` after every epoch, write RUN_DIR.

    ``resume`` names a ``last.pt`` written by an earlier run (its recipe is used); training then
    continues after the last completed epoch. ``max_steps_per_epoch`` caps each epoch (tests).
    """
    run_dir = Path(run_dir)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available (torch.cuda.is_available() "
                           "is False); use --device cpu")
    if threads:
        torch.set_num_threads(threads)
    state: dict[str, Any] | None = None
    if resume is not None:
        resume = Path(resume)
        if not resume.is_file():
            raise ModelLoadError(f"--resume: checkpoint not found: {resume}")
        obj = torch.load(resume, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT or TRAIN_STATE not in obj:
            raise ModelLoadError(f"--resume: {resume} is not a last.pt written by maskrt train "
                                 "(it has no optimiser state)")
        state = obj[TRAIN_STATE]
        saved = Recipe.from_json(state["recipe"])
        if saved != recipe:
            diff = {k: (v, getattr(recipe, k)) for k, v in asdict(saved).items() if getattr(recipe, k) != v}
            if diff:
                log(f"resume: using the recipe stored in {resume}; ignoring differing options "
                    f"{ {k: b for k, (a, b) in diff.items()} }")
        recipe = saved
    train_dir, val_dir = split_dirs(data_dir)
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_data = load_image_folder(train_dir, INPUT_SIZE, progress=progress, desc="decoding train")
        val_data = load_image_folder(val_dir, INPUT_SIZE, progress=progress, desc="decoding val")
    for w in caught:
        log(f"warning: {w.message}")
    val_images = val_data.images if recipe.img_size == INPUT_SIZE else np.stack(
        [_resize(im, recipe.img_size) for im in val_data.images])
    log(f"data: train {train_data.counts()} ({len(train_data.skipped)} unreadable skipped), "
        f"val {val_data.counts()} ({len(val_data.skipped)} skipped); decoded in "
        f"{time.perf_counter() - t0:.1f}s")

    if state is None:
        model = build_model(recipe.pretrained)
    else:
        model = MaskNet()
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in obj["state_dict"].items()})
    frozen = apply_freeze(model, recipe.freeze_until)
    model = model.to(device).to(memory_format=torch.channels_last)
    prep = Preprocess().to(device)
    optimizer = make_optimizer(recipe, model)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    history: list[dict[str, Any]] = []
    best_acc, best_epoch, best_loss, start_epoch = -1.0, -1, math.inf, 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        history = list(state["history"])
        best_acc, best_epoch = float(state["best_acc"]), int(state["best_epoch"])
        best_loss = float(state.get("best_loss", math.inf))
        start_epoch = int(state["epoch"]) + 1
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed from {resume} after epoch {start_epoch} (best val accuracy "
            f"{100 * best_acc:.2f}% at epoch {best_epoch + 1})")

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.json").write_text(json.dumps(recipe.to_json(), indent=2) + "\n")
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"recipe: {json.dumps(recipe.to_json())}")
    log(f"model: resnet18, {n_trainable:,} trainable parameters, frozen: {recipe.freeze_until}; "
        f"device {device}, {torch.get_num_threads()} threads")

    steps_per_epoch = BatchStream(train_data, recipe.batch_size, recipe.img_size, "off", 0).steps
    if max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, max_steps_per_epoch)
    total_steps = steps_per_epoch * recipe.epochs
    best_path, last_path = run_dir / "best.pt", run_dir / "last.pt"

    for epoch in range(start_epoch, recipe.epochs):
        size = recipe.size_at(epoch)
        stream = BatchStream(train_data, recipe.batch_size, size, recipe.augment_at(epoch),
                             seed=recipe.seed * 1000 + epoch)
        set_train_mode(model, frozen)
        t_epoch = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{recipe.epochs} @{size}px",
                       unit="batch", leave=True, dynamic_ncols=True, file=sys.stderr)
        for step, (x, y) in enumerate(stream):
            if step >= steps_per_epoch:
                break
            lr = lr_at(recipe, epoch * steps_per_epoch + step, total_steps, steps_per_epoch)
            for g in optimizer.param_groups:
                g["lr"] = lr
            x = prep(x.to(device)).contiguous(memory_format=torch.channels_last)
            y = y.to(device)
            logits, _ = model(x)
            loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", lr=f"{lr:.2e}")
        if bar is not None:
            bar.close()
        train_time = time.perf_counter() - t_epoch

        t_val = time.perf_counter()
        val_logits = predict(model, val_images, batch_size=64, device=device)
        val_loss, m = evaluate_logits(val_logits, val_data.labels)
        record = {"epoch": epoch + 1, "img_size": size, "lr_end": lr, "train_loss": loss_sum / max(seen, 1),
                  "train_accuracy": correct / max(seen, 1), "val_loss": val_loss,
                  "val_accuracy": m.accuracy, "val_sensitivity": m.sensitivity,
                  "val_specificity": m.specificity, "val_confusion": m.confusion().tolist(),
                  "train_time_s": round(train_time, 1), "val_time_s": round(time.perf_counter() - t_val, 1)}
        history.append(record)
        # Best = highest val accuracy; a tie goes to the lower val loss (the better-calibrated,
        # usually later, epoch).
        improved = m.accuracy > best_acc or (m.accuracy == best_acc and val_loss < best_loss)
        log(f"epoch {epoch + 1}/{recipe.epochs} @{size}px: train loss {record['train_loss']:.4f} "
            f"acc {100 * record['train_accuracy']:.2f}% | val@{recipe.img_size} loss {val_loss:.4f} "
            f"{m.summary()}{'  *best*' if improved else ''} | {train_time:.0f}s")

        meta = {"epoch": epoch + 1, "recipe": recipe.to_json(), "val": m.as_dict(),
                "data_dir": str(Path(data_dir).resolve()), "torch": str(torch.__version__)}
        if improved:
            best_acc, best_epoch, best_loss = m.accuracy, epoch, val_loss
            save_checkpoint(model, best_path, meta=meta)
        _save_last(model, last_path, meta, {
            "recipe": recipe.to_json(), "epoch": epoch, "optimizer": optimizer.state_dict(),
            "history": history, "best_acc": best_acc, "best_epoch": best_epoch, "best_loss": best_loss,
            "torch_rng": torch.get_rng_state()})
        (run_dir / "metrics.json").write_text(json.dumps(
            {"recipe": recipe.to_json(), "best_epoch": best_epoch + 1, "epochs": history}, indent=2) + "\n")
        try:
            plot_curves(history, run_dir / "curves.png")
        except Exception as err:  # noqa: BLE001 -- a plotting failure must not stop training
            log(f"warning: could not draw curves.png ({err})")

    best = history[best_epoch] if 0 <= best_epoch < len(history) else history[-1]
    best_m = BinaryMetrics.from_confusion(np.asarray(best["val_confusion"]))
    (run_dir / "confusion_matrix.json").write_text(json.dumps(
        {"epoch": best["epoch"], "split": "val", **best_m.as_dict()}, indent=2) + "\n")
    try:
        plot_confusion(best_m.confusion(), run_dir / "confusion_matrix.png",
                       title=f"val, best epoch {best['epoch']}")
    except Exception as err:  # noqa: BLE001
        log(f"warning: could not draw confusion_matrix.png ({err})")
    log(f"best epoch {best['epoch']}: {best_m.summary()}")
    log(format_confusion(best_m.confusion()))
    log(f"wrote {best_path}, {last_path}, metrics.json, curves.png, confusion_matrix.png in {run_dir}")
    return TrainResult(run_dir, best_path, last_path, best["epoch"], best_m.as_dict(), history)


def _save_last(model: MaskNet, path: Path, meta: dict[str, Any], train_state: dict[str, Any]) -> None:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "classes": list(CLASSES),
                "state_dict": state, "meta": meta, TRAIN_STATE: train_state}, tmp)
    os.replace(tmp, path)  # never leave a half-written last.pt behind


# ---------------------------------------------------------------------------------------------
# Figures

def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(ep, [h["val_loss"] for h in history], "o-", label="val")
    a.set_xlabel("epoch"), a.set_ylabel("cross entropy"), a.set_title("loss"), a.legend()
    b.plot(ep, [100 * h["train_accuracy"] for h in history], "o-", label="train accuracy")
    b.plot(ep, [100 * h["val_accuracy"] for h in history], "o-", label="val accuracy")
    b.plot(ep, [100 * h["val_sensitivity"] for h in history], ".--", label="val sensitivity")
    b.plot(ep, [100 * h["val_specificity"] for h in history], ".--", label="val specificity")
    b.set_xlabel("epoch"), b.set_ylabel("%"), b.set_title("accuracy (positive = without_mask)")
    lo = min([100 * h[k] for h in history for k in ("train_accuracy", "val_accuracy")] + [50])
    b.set_ylim(max(0, lo - 2), 100.5), b.legend(loc="lower right"), b.grid(alpha=0.3)
    for h0, h1 in itertools.pairwise(history):
        if h0["img_size"] != h1["img_size"]:
            for ax in (a, b):
                ax.axvline(h1["epoch"] - 0.5, color="gray", lw=0.8, ls=":")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, path: Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = BinaryMetrics.from_confusion(cm)
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.imshow(cm, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=14,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks([0, 1], CLASSES), ax.set_yticks([0, 1], CLASSES)
    ax.set_xlabel("predicted"), ax.set_ylabel("true")
    ax.set_title(f"{title}\nacc {100 * m.accuracy:.2f}%  sens {100 * m.sensitivity:.2f}%  "
                 f"spec {100 * m.specificity:.2f}%", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# CLI

def _progressive(text: str) -> list[tuple[int, int]]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            size, epochs = part.split(":")
            out.append((int(size), int(epochs)))
        except ValueError as err:
            raise argparse.ArgumentTypeError(
                f"expected SIZE:EPOCHS[,SIZE:EPOCHS...], got {text!r}") from err
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Recipe()
    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder with train/ and val/, each "
                        "holding with_mask/ and without_mask/")
    parser.add_argument("--out", metavar="RUN_DIR", required=True, help="where checkpoints, "
                        "metrics.json, curves.png and the confusion matrix go")
    g = parser.add_argument_group("recipe (defaults: the paper's transfer learning)")
    g.add_argument("--pretrained", default=d.pretrained, metavar="imagenet|none|PATH",
                   help="initial weights: torchvision's ImageNet weights (from the torch hub cache "
                   "or downloaded), none (random init) or a local resnet18 weights file (default %(default)s)")
    g.add_argument("--freeze-until", choices=FREEZE_CHOICES, default=d.freeze_until,
                   help="freeze this stage and all before it (default %(default)s: conv1, layer1, layer2)")
    g.add_argument("--epochs", type=int, default=d.epochs, help="default %(default)s")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default %(default)s)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="default %(default)s")
    g.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum / Adam beta1 (default %(default)s)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="default %(default)s")
    g.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help="learning-rate schedule (default %(default)s)")
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs,
                   help="linear warm-up epochs; for onecycle a value < 1 is the fraction of the run (default 0.25)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="default %(default)s")
    g.add_argument("--img-size", type=int, default=d.img_size,
                   help="training size of the last epochs and the validation size (default %(default)s, "
                   "what the exported graph runs at)")
    g.add_argument("--progressive", type=_progressive, default=[], metavar="SIZE:EPOCHS[,...]",
                   help="train the first epochs at smaller sizes, e.g. 128:14 (the rest run at --img-size)")
    g.add_argument("--augment", choices=AUGMENT, default=d.augment,
                   help="off, light (flip, crops of 80-100%%, mild colour) or strong (crops of "
                   "45-100%%, rotation, blur, colour, gray); default %(default)s")
    g.add_argument("--no-augment", dest="augment", action="store_const", const="off",
                   help="same as --augment off")
    g.add_argument("--final-augment", choices=AUGMENT, default=None,
                   help="augmentation of the epochs at --img-size after --progressive stages "
                   "(default: same as --augment)")
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="default %(default)s")
    g.add_argument("--seed", type=int, default=d.seed, help="default %(default)s")
    r = parser.add_argument_group("run")
    r.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default %(default)s")
    r.add_argument("--threads", type=int, default=2, help="CPU threads for torch (default %(default)s)")
    r.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="continue an interrupted run from CKPT (default RUN_DIR/last.pt)")
    r.add_argument("--max-steps-per-epoch", type=int, default=None, help=argparse.SUPPRESS)
    r.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    try:
        recipe = Recipe(pretrained=args.pretrained, freeze_until=args.freeze_until, epochs=args.epochs,
                        lr=args.lr, optimizer=args.optimizer, momentum=args.momentum,
                        weight_decay=args.weight_decay, schedule=args.schedule,
                        warmup_epochs=args.warmup_epochs, batch_size=args.batch_size,
                        img_size=args.img_size, progressive=args.progressive, augment=args.augment,
                        final_augment=args.final_augment,
                        label_smoothing=args.label_smoothing, seed=args.seed)
    except ValueError as err:
        print(f"maskrt train: error: {err}", file=sys.stderr)
        return 2
    resume = args.resume
    if resume == "auto":
        resume = Path(args.out) / "last.pt"
    try:
        train(recipe, args.data_dir, args.out, device=args.device, threads=args.threads, resume=resume,
              progress=not args.no_progress, max_steps_per_epoch=args.max_steps_per_epoch,
              log=lambda s: print(s, flush=True))
    except (DatasetError, ModelLoadError, RuntimeError) as err:
        print(f"maskrt train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmaskrt train: interrupted; continue with --resume (from {Path(args.out) / 'last.pt'})",
              file=sys.stderr)
        return 130
    return 0
