"""What the optimiser may change: frozen early stages (transfer learning) and the parameter groups
of the rest, with the optimiser the recipe names."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from maskrt.graph.model import MaskNet
from maskrt.train.recipe import STAGES, Recipe


def _stage_modules(model: MaskNet) -> dict[str, list[nn.Module]]:
    net = model.net
    return {"stem": [net.conv1, net.bn1], "layer1": [net.layer1], "layer2": [net.layer2],
            "layer3": [net.layer3], "layer4": [net.layer4]}


def frozen_modules(model: MaskNet, freeze_until: str) -> list[nn.Module]:
    """The modules of stage ``freeze_until`` and of every stage before it ("none": no module)."""
    if freeze_until == "none":
        return []
    if freeze_until not in STAGES:
        raise ValueError(f"freeze_until: expected 'none' or one of {STAGES}, got {freeze_until!r}")
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
    """Training mode, except for the frozen stages: their BatchNorm statistics must not move."""
    model.train()
    for m in frozen:
        m.eval()


def make_optimizer(recipe: Recipe, model: MaskNet) -> torch.optim.Optimizer:
    """The recipe's optimiser over the trainable parameters."""
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
