"""The figures a training run leaves in RUN_DIR: learning curves and the confusion matrix.

matplotlib is imported inside each function (Agg backend), so nothing else pays for it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maskrt.labels import CLASSES
from maskrt.train.metrics import BinaryMetrics


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per epoch (dotted lines where --progressive changes the size)."""
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
    """The 2x2 confusion matrix ``cm[true, predicted]`` with accuracy, sensitivity, specificity."""
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
