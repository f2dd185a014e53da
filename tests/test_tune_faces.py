"""benchmarks/tune_faces.py's cross-validation candidates: ``--grid`` gives every combination of
its values over the shared face options, the scale rule's grid stays the default, and a bad
grid is refused by name before any photo is scored."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "tune_faces.py"


@pytest.fixture(scope="module")
def tune_faces():
    spec = importlib.util.spec_from_file_location("tune_faces_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(**overrides):
    import argparse

    values = {"grid": [], "face_target": [40.0], "max_scale": [2.5, 3.0], "upscale": [2.0]}
    return argparse.Namespace(**{**values, **overrides})


def test_grid_candidates_are_every_combination_over_the_shared_options(tune_faces) -> None:
    args = _args(grid=["widen=1.2,1.4", "nms_iou=0.3,0.5"])
    candidates, baselines = tune_faces.cv_candidates(args, {"detector_model": "yunet", "widen": 9.0})
    assert baselines == []
    assert candidates == [
        {"detector_model": "yunet", "widen": w, "nms_iou": n}
        for w in (1.2, 1.4) for n in (0.3, 0.5)]  # the grid's value wins over the shared one


def test_without_a_grid_the_scale_rule_is_cross_validated_beside_fixed_factors(tune_faces) -> None:
    candidates, baselines = tune_faces.cv_candidates(_args(), {})
    assert [c["max_scale"] for c in candidates] == [2.5, 3.0]
    assert all(c["upscale"] == "auto" and c["face_target"] == 40.0 for c in candidates)
    assert baselines == [{"upscale": 2.0}]


@pytest.mark.parametrize("grid, says", [
    ("widen", "expected KEY=V1,V2"),
    ("box_fit=1,1,0,0", "other than box_fit"),
    ("not_an_option=1,2", "expected KEY=VALUE with KEY one of"),
    ("widen=1.2,wide", "widen: expected a number, got 'wide'"),
])
def test_a_bad_grid_is_refused_by_name(tune_faces, grid, says) -> None:
    with pytest.raises(ValueError, match=says):
        tune_faces.cv_candidates(_args(grid=[grid]), {})


def test_the_command_line_refuses_a_bad_grid_before_scoring_anything() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--cv", "2", "--cv-splits", "val", "--grid", "widen"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    if "--cv-splits: expected split names" in result.stderr:
        pytest.skip("the shared scene splits are not beside the repository")
    assert result.returncode == 2
    assert "--grid: expected KEY=V1,V2,..." in result.stderr


def test_a_grid_without_cross_validation_is_refused() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--grid", "widen=1.2,1.4"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2
    assert "--grid: expected --cv K with it" in result.stderr


def test_annotated_labels_relabel_only_the_detections_on_a_labelled_face() -> None:
    spec = importlib.util.spec_from_file_location("scene_study_under_test",
                                                  ROOT / "benchmarks" / "scene_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    from maskrt.train.voc_metric import Detections, GroundTruth

    truth = GroundTruth.make([[0, 0, 20, 20], [100, 100, 120, 120], [200, 0, 220, 20]],
                             ["with_mask", "mask_worn_incorrectly", "without_mask"],
                             [False, True, False])
    found = Detections.make([[1, 1, 21, 21], [101, 100, 121, 120], [300, 300, 320, 320],
                             [205, 0, 230, 20]],
                            ["without_mask", "with_mask", "without_mask", "with_mask"],
                            [0.63, 0.72, 0.45, 0.2], [0.7, 0.8, 0.5, 0.25])
    out = study._with_annotated_labels(found, truth)
    # on a masked face: its label, at the face score; on a difficult face or none: as it was;
    # overlapping a bare face at IoU 0.5 (>= 0.3): bare
    assert out.labels == ("with_mask", "with_mask", "without_mask", "without_mask")
    np.testing.assert_allclose(out.confidence, [0.7, 0.72, 0.45, 0.25])
    np.testing.assert_array_equal(out.boxes, found.boxes)
    assert found.labels[0] == "without_mask"  # the input is not changed
