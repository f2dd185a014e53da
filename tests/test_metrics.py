"""maskrt.train.metrics on hand-computed confusion matrices (positive = without_mask)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from maskrt.train.metrics import (
    BinaryMetrics,
    binary_metrics,
    confusion_matrix,
    format_confusion,
)


def truncate2(percent: float) -> float:
    """The paper prints percentages truncated (not rounded) to 2 decimals: 4385/4540 = 96.5859%
    appears as 96.58."""
    return math.floor(percent * 100 + 1e-9) / 100


def test_paper_table6() -> None:
    # Ornek et al., Table 6: 4090 of 4230 with_mask and 295 of 310 without_mask classified right.
    cm = np.array([[4090, 4230 - 4090],
                   [310 - 295, 295]])
    m = BinaryMetrics.from_confusion(cm)
    assert (m.tp, m.fn, m.tn, m.fp) == (295, 15, 4090, 140)
    assert truncate2(100 * m.sensitivity) == 95.16
    assert truncate2(100 * m.specificity) == 96.69
    assert truncate2(100 * m.accuracy) == 96.58
    assert 100 * m.sensitivity == pytest.approx(95.16, abs=0.01)
    assert 100 * m.specificity == pytest.approx(96.69, abs=0.01)
    assert 100 * m.accuracy == pytest.approx(96.58, abs=0.01)


def test_labels_to_confusion_matrix_by_hand() -> None:
    # true:  0 0 0 0 1 1 1   pred: 0 0 1 0 1 0 1  ->  [[3, 1], [1, 2]]
    y_true = [0, 0, 0, 0, 1, 1, 1]
    y_pred = [0, 0, 1, 0, 1, 0, 1]
    cm = confusion_matrix(y_true, y_pred)
    assert cm.tolist() == [[3, 1], [1, 2]]
    m = binary_metrics(y_true, y_pred)
    assert m.accuracy == pytest.approx(5 / 7)
    assert m.sensitivity == pytest.approx(2 / 3)   # without_mask found
    assert m.specificity == pytest.approx(3 / 4)   # with_mask kept
    assert m.precision == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 3 / 4) / 2)
    np.testing.assert_array_equal(m.confusion(), cm)


def test_sensitivity_is_without_mask_recall_not_with_mask() -> None:
    # Every with_mask image right, every without_mask image wrong: sensitivity 0, specificity 1.
    m = BinaryMetrics.from_confusion([[10, 0], [5, 0]])
    assert m.sensitivity == 0.0 and m.specificity == 1.0
    assert m.accuracy == pytest.approx(10 / 15)
    m = BinaryMetrics.from_confusion([[0, 10], [0, 5]])
    assert m.sensitivity == 1.0 and m.specificity == 0.0


def test_perfect_and_undefined_rates() -> None:
    m = BinaryMetrics.from_confusion([[7, 0], [0, 3]])
    assert (m.accuracy, m.sensitivity, m.specificity, m.f1) == (1.0, 1.0, 1.0, 1.0)
    only_masked = BinaryMetrics.from_confusion([[4, 1], [0, 0]])
    assert math.isnan(only_masked.sensitivity)
    assert only_masked.specificity == pytest.approx(0.8)
    d = only_masked.as_dict()
    assert d["sensitivity"] is None  # JSON has no NaN
    json.loads(json.dumps(d, allow_nan=False))
    assert d["counts"] == {"tp": 0, "fn": 0, "tn": 4, "fp": 1, "total": 5, "with_mask": 5, "without_mask": 0}
    assert d["confusion_matrix"]["matrix"] == [[4, 1], [0, 0]]


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        confusion_matrix([0, 2], [0, 1])
    with pytest.raises(ValueError, match="2x2"):
        BinaryMetrics.from_confusion(np.zeros((3, 3), dtype=int))


def test_format_confusion_shows_the_counts() -> None:
    text = format_confusion(np.array([[4090, 140], [15, 295]]))
    lines = text.splitlines()
    assert "with_mask" in lines[0] and "without_mask" in lines[0]
    assert lines[1].split()[-2:] == ["4090", "140"]
    assert lines[2].split()[-2:] == ["15", "295"]
