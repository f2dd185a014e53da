"""What defines a training run: the :class:`Recipe` and the learning-rate schedule it names.

Plain Python (no torch), so the ``maskrt train`` command line can take its defaults from here
without loading the training code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from maskrt.labels import INPUT_SIZE

#: Stages of ResNet-18 in forward order; ``--freeze-until X`` freezes X and every stage before it.
STAGES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")
FREEZE_CHOICES: tuple[str, ...] = ("none",) + STAGES
OPTIMIZERS = ("sgd", "adamw", "adam")
SCHEDULES = ("constant", "cosine", "onecycle", "step")
AUGMENT = ("off", "light", "strong", "degrade", "degrade-tiny")


@dataclass
class Recipe:
    """Everything that defines a training run. Defaults = the paper's recipe."""

    pretrained: str = "imagenet"       # imagenet | none | path to torchvision resnet18 weights
    init: str | None = None            # a maskrt checkpoint to start from (all weights, head too)
    # none | stem | layer1 | layer2 | layer3 | layer4 | auto: layer2 when starting from ImageNet
    # weights (the paper's transfer learning), none otherwise (frozen random weights learn nothing)
    freeze_until: str = "auto"
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
    augment: str = "light"             # off | light | strong | degrade | degrade-tiny
    final_augment: str | None = None   # augmentation of the epochs at img_size (None: = augment)
    label_smoothing: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.progressive = [(int(s), int(e)) for s, e in self.progressive]
        if self.freeze_until == "auto":
            self.freeze_until = "layer2" if self.pretrained == "imagenet" and not self.init \
                else "none"
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
            raise ValueError(f"expected epochs >= 1, batch_size >= 1 and lr > 0, got epochs="
                             f"{self.epochs}, batch_size={self.batch_size}, lr={self.lr}")
        if self.img_size < 32 or any(s < 32 for s, _ in self.progressive):
            raise ValueError(f"image sizes: expected >= 32 pixels, got img_size={self.img_size}, "
                             f"progressive={self.progressive}")
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


def lr_at(recipe: Recipe, step: int, total: int, steps_per_epoch: int) -> float:
    """Learning rate of ``recipe``'s schedule at global step ``step`` (0-based) of ``total``."""
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
