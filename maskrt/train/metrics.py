"""Classification metrics with the paper's conventions.

"Positive" is ``without_mask`` (class index 1), as in Ornek et al.:

* sensitivity = correctly classified without_mask / all without_mask  (TP / (TP + FN))
* specificity = correctly classified with_mask / all with_mask        (TN / (TN + FP))
* accuracy    = all correct / all images

The confusion matrix is indexed ``[true class, predicted class]`` in :data:`maskrt.labels.CLASSES`
order, so ``cm[0, 0]`` = with_mask kept as with_mask (TN) and ``cm[1, 1]`` = without_mask found (TP).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from maskrt.labels import CLASSES, WITH_MASK, WITHOUT_MASK


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                     num_classes: int = len(CLASSES)) -> np.ndarray:
    """``int64[num_classes, num_classes]`` with ``cm[t, p]`` = images of class t predicted as p."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {t.size} and {p.size}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name}: expected class indices in [0, {num_classes}), got "
                             f"values in [{a.min()}, {a.max()}]")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def _ratio(num: int, den: int) -> float:
    return float(num) / den if den else float("nan")


def format_percent(rate: float, width: int = 0, digits: int = 2) -> str:
    """``rate`` in percent (``"97.45%"``, right-aligned in ``width``), or ``"n/a"`` when it is
    undefined (NaN: a ratio over zero images, e.g. precision when nothing was called
    without_mask)."""
    text = "n/a" if math.isnan(rate) else f"{100 * rate:.{digits}f}%"
    return text.rjust(width)


@dataclass(frozen=True)
class BinaryMetrics:
    """Counts and rates of a 2-class confusion matrix; positive = without_mask."""

    tp: int  # without_mask predicted without_mask
    fn: int  # without_mask predicted with_mask
    tn: int  # with_mask predicted with_mask
    fp: int  # with_mask predicted without_mask

    @classmethod
    def from_confusion(cls, cm: np.ndarray | Sequence[Sequence[int]]) -> BinaryMetrics:
        cm = np.asarray(cm)
        if cm.shape != (2, 2):
            raise ValueError(f"expected a 2x2 confusion matrix [true, predicted], got shape {list(cm.shape)}")
        if (cm < 0).any():
            raise ValueError("confusion matrix counts must be >= 0")
        return cls(tp=int(cm[WITHOUT_MASK, WITHOUT_MASK]), fn=int(cm[WITHOUT_MASK, WITH_MASK]),
                   tn=int(cm[WITH_MASK, WITH_MASK]), fp=int(cm[WITH_MASK, WITHOUT_MASK]))

    @classmethod
    def from_labels(cls, y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> BinaryMetrics:
        return cls.from_confusion(confusion_matrix(y_true, y_pred, 2))

    @property
    def total(self) -> int:
        return self.tp + self.fn + self.tn + self.fp

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.total)

    @property
    def sensitivity(self) -> float:
        """Recall of without_mask (true positive rate)."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float:
        """Recall of with_mask (true negative rate)."""
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def precision(self) -> float:
        """Of the images called without_mask, the share that are."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.sensitivity
        return 2 * p * r / (p + r) if p + r > 0 else float("nan")

    @property
    def balanced_accuracy(self) -> float:
        return (self.sensitivity + self.specificity) / 2

    def confusion(self) -> np.ndarray:
        cm = np.zeros((2, 2), dtype=np.int64)
        cm[WITH_MASK, WITH_MASK], cm[WITH_MASK, WITHOUT_MASK] = self.tn, self.fp
        cm[WITHOUT_MASK, WITH_MASK], cm[WITHOUT_MASK, WITHOUT_MASK] = self.fn, self.tp
        return cm

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: rates in [0, 1], counts, and the matrix with its axis convention."""
        def rate(x: float) -> float | None:  # JSON has no NaN: undefined rates are null
            return None if math.isnan(x) else x

        return {
            "accuracy": rate(self.accuracy),
            "sensitivity": rate(self.sensitivity),
            "specificity": rate(self.specificity),
            "precision": rate(self.precision),
            "f1": rate(self.f1),
            "balanced_accuracy": rate(self.balanced_accuracy),
            "positive_class": CLASSES[WITHOUT_MASK],
            "counts": {**asdict(self), "total": self.total,
                       CLASSES[WITH_MASK]: self.tn + self.fp, CLASSES[WITHOUT_MASK]: self.tp + self.fn},
            "confusion_matrix": {"rows": "true class", "columns": "predicted class",
                                 "classes": list(CLASSES), "matrix": self.confusion().tolist()},
        }

    def summary(self) -> str:
        """One line, the paper's three figures in percent."""
        return (f"accuracy {format_percent(self.accuracy)}  sensitivity "
                f"{format_percent(self.sensitivity)}  specificity {format_percent(self.specificity)}"
                f"  (n={self.total}, positive={CLASSES[WITHOUT_MASK]})")


def binary_metrics(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> BinaryMetrics:
    """Shorthand for :meth:`BinaryMetrics.from_labels`."""
    return BinaryMetrics.from_labels(y_true, y_pred)


def format_confusion(cm: np.ndarray) -> str:
    """A small text table of a confusion matrix, rows = true, columns = predicted."""
    cm = np.asarray(cm)
    width = max(len(c) for c in CLASSES) + 2
    cell = max(width, len(str(int(cm.max()))) + 2 if cm.size else width)
    lines = ["true \\ predicted".ljust(width) + "".join(c.rjust(cell) for c in CLASSES)]
    for i, name in enumerate(CLASSES):
        lines.append(name.ljust(width) + "".join(str(int(v)).rjust(cell) for v in cm[i]))
    return "\n".join(lines)
