"""The VOC scene metric on hand-computed cases (maskrt.train.voc_metric)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from maskrt.train.voc_metric import (
    FALSE_POSITIVE,
    IGNORED,
    TRUE_POSITIVE,
    Detections,
    GroundTruth,
    average_precision,
    evaluate,
    iou_matrix,
    match_image,
)

W, WO, INC = "with_mask", "without_mask", "mask_worn_incorrectly"


def box(x: float, y: float = 0, side: float = 10) -> list[float]:
    return [x, y, x + side, y + side]


def gt(*objects: tuple) -> GroundTruth:
    """objects: (box, label) or (box, label, difficult)."""
    return GroundTruth.make([o[0] for o in objects], [o[1] for o in objects],
                            [bool(o[2]) if len(o) > 2 else False for o in objects])


def det(*objects: tuple) -> Detections:
    """objects: (box, label, confidence) or (box, label, confidence, face_score)."""
    return Detections.make([o[0] for o in objects], [o[1] for o in objects],
                           [o[2] for o in objects], [o[3] if len(o) > 3 else o[2] for o in objects])


def test_iou_by_hand() -> None:
    iou = iou_matrix(np.array([box(0), box(100)]), np.array([box(5), box(0), [0, 0, 0, 0]]))
    np.testing.assert_allclose(iou, [[50 / 150, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert iou_matrix(np.zeros((0, 4)), np.array([box(0)])).shape == (0, 1)


def test_a_perfect_detector_scores_one() -> None:
    truth = [gt((box(0), W), (box(20), WO)), gt((box(0), W))]
    found = [det((box(0), W, 0.9), (box(20), WO, 0.8)), det((box(0), W, 0.7))]
    for threshold in (0.5, 0.3):
        s = evaluate(found, truth, threshold)
        assert s.ap == {W: 1.0, WO: 1.0} and s.map == 1.0
        assert s.recall == {W: 1.0, WO: 1.0} and s.face_recall == 1.0
        assert s.positives == {W: 2, WO: 1} and s.true_positives == {W: 2, WO: 1}


def test_one_false_positive_ranked_first() -> None:
    truth = [gt((box(0), W), (box(20), W))]
    # FP first: precision 0, 1/2, 2/3 at recall 0, 1/2, 1 -> envelope 2/3 everywhere -> AP 2/3.
    s = evaluate([det((box(50), W, 0.9), (box(0), W, 0.8), (box(20), W, 0.7))], truth)
    assert s.ap[W] == pytest.approx(2 / 3)
    assert s.recall[W] == 1.0 and s.detections[W] == 3
    # The same false positive ranked last costs nothing: recall 1 is reached at precision 1.
    s = evaluate([det((box(50), W, 0.1), (box(0), W, 0.8), (box(20), W, 0.7))], truth)
    assert s.ap[W] == 1.0
    assert math.isnan(s.ap[WO]) and s.map == 1.0  # no without_mask positives: left out of mAP


def test_ranking_spans_images() -> None:
    # Image A: TP 0.9. Image B: FP 0.8, TP 0.7. Precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1:
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    truth = [gt((box(0), W)), gt((box(0), W))]
    s = evaluate([det((box(0), W, 0.9)), det((box(40), W, 0.8), (box(0), W, 0.7))], truth)
    assert s.ap[W] == pytest.approx(5 / 6)


def test_duplicates_are_false_positives() -> None:
    truth = [gt((box(0), W))]
    s = evaluate([det((box(0), W, 0.9), (box(1), W, 0.8))], truth)
    assert s.true_positives[W] == 1 and s.detections[W] == 2 and s.ap[W] == 1.0
    m = s.matchings[0][W]
    assert list(m.outcome) == [TRUE_POSITIVE, FALSE_POSITIVE] and list(m.matched_gt) == [0, -1]
    # The duplicate ranked first (less well placed) takes the box; the better one is the FP.
    s = evaluate([det((box(1), W, 0.9), (box(0), W, 0.8))], truth)
    assert list(s.matchings[0][W].outcome) == [TRUE_POSITIVE, FALSE_POSITIVE]


def test_greedy_matching_takes_the_best_free_box() -> None:
    # Two gt boxes 2 px apart: the second detection's best box is taken, so it takes the other.
    truth = [gt((box(0), W), (box(2), W))]
    found = det((box(0), W, 0.9), (box(0), W, 0.8))
    m = match_image(found, truth[0], W, 0.5)
    assert list(m.matched_gt) == [0, 1] and m.gt_matched.all()
    assert evaluate([found], truth).ap[W] == 1.0


def test_difficult_boxes_are_ignored_and_not_positives() -> None:
    truth = [gt((box(0), W), (box(30), INC, True), (box(60), W, True))]
    found = det((box(30), W, 0.95), (box(60), W, 0.9), (box(0), W, 0.5))
    s = evaluate([found], truth)
    m = s.matchings[0][W]
    # Detections on the difficult boxes (of any class) are neither TP nor FP.
    assert list(m.outcome) == [IGNORED, IGNORED, TRUE_POSITIVE]
    assert s.positives[W] == 1 and s.detections[W] == 1 and s.ap[W] == 1.0
    # An unmatched difficult box costs no recall; face recall counts only non-difficult faces.
    s = evaluate([det((box(0), W, 0.5))], truth)
    assert s.recall[W] == 1.0 and s.faces == 1 and s.face_recall == 1.0


def test_the_best_match_decides_difficult() -> None:
    truth = gt(([0, 0, 10, 10], W), ([0, 0, 10, 8], INC, True))
    # IoU 0.8 with the difficult box, 0.6 with the with_mask box: ignored.
    assert match_image(det(([0, 0, 10, 6], W, 0.9)), truth, W, 0.5).outcome[0] == IGNORED
    # IoU 0.9 with the with_mask box, 0.7 with the difficult box: a true positive.
    assert match_image(det(([0, 0, 10, 9], W, 0.9)), truth, W, 0.5).outcome[0] == TRUE_POSITIVE


def test_a_class_without_detections_and_wrong_labels() -> None:
    truth = [gt((box(0), W), (box(20), WO))]
    # The without_mask face is labelled with_mask: a with_mask FP, a without_mask miss.
    s = evaluate([det((box(0), W, 0.9), (box(20), W, 0.8))], truth)
    assert s.ap == {W: 1.0, WO: 0.0} and s.map == 0.5
    assert s.recall == {W: 1.0, WO: 0.0}
    assert s.detections == {W: 2, WO: 0}
    # The detector found both faces: the class-agnostic face recall does not care about labels.
    assert s.face_recall == 1.0 and s.faces_found == 2


def test_empty_images() -> None:
    # An image with neither boxes nor detections changes nothing.
    truth = [gt((box(0), W)), gt()]
    s = evaluate([det((box(0), W, 0.9)), det()], truth)
    assert s.ap[W] == 1.0 and s.faces == 1
    # Detections on an image without faces are false positives (ranked first here: AP 1/2).
    s = evaluate([det((box(0), W, 0.5)), det((box(0), W, 0.9))], truth)
    assert s.ap[W] == pytest.approx(0.5) and s.recall[W] == 1.0
    # No faces at all: nothing to measure.
    s = evaluate([det(), det()], [gt(), gt()])
    assert math.isnan(s.map) and math.isnan(s.face_recall) and math.isnan(s.recall[W])
    assert evaluate([], []).faces == 0


def test_thresholds() -> None:
    truth = [gt(([0, 0, 10, 10], W))]
    found = [det(([0, 0, 10, 4], W, 0.9))]  # IoU 0.4
    assert evaluate(found, truth, 0.5).ap[W] == 0.0
    assert evaluate(found, truth, 0.3).ap[W] == 1.0


def test_face_recall_is_one_to_one_by_face_score() -> None:
    truth = [gt((box(0), W), (box(2), WO))]
    # One detection covering both faces finds one face, not two.
    s = evaluate([det((box(1), W, 0.9))], truth, 0.5)
    assert s.faces_found == 1 and s.face_recall == 0.5
    m = s.matchings[0][None]
    assert list(m.outcome) == [TRUE_POSITIVE]


def test_average_precision_directly() -> None:
    assert average_precision(np.array([0.9, 0.8]), np.array([True, True]), 4) == pytest.approx(0.5)
    assert average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0
    assert math.isnan(average_precision(np.array([0.5]), np.array([False]), 0))
    # TP, FP, TP with 2 positives: 1/2 * 1 + 1/2 * 2/3.
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1], bool), 2) == \
        pytest.approx(0.5 + 1 / 3)


def test_bad_inputs_say_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"expected an \[N, 4\] array"):
        GroundTruth.make([[0, 0, 1]], [W])
    with pytest.raises(ValueError, match="expected 1 labels"):
        Detections.make([box(0)], [W, W], [0.5])
    with pytest.raises(ValueError, match="one Detections per image"):
        evaluate([det()], [])
