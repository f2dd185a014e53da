"""Detector ensembles: weighted boxes fusion against a plain per-face reference, on random and
real detections; EnsembleDetector on scene photos; the "+" syntax of ``detector_model`` and
where an ensemble is refused."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from maskrt.detect import PRESETS, detector_model_paths, face_stage, make_detector
from maskrt.detect.base import Detections, box_iou
from maskrt.detect.ensemble import FUSE_IOU, EnsembleDetector, fuse_detections
from helpers import scene_images, scene_paths

def reference_fusion(parts: list[Detections], iou: float = FUSE_IOU) -> list[tuple]:
    """Weighted boxes fusion written out face by face: (box, score, landmarks) per cluster."""
    faces = [(float(s), b.astype(float), l.astype(float))
             for p in parts for b, s, l in zip(p.boxes, p.scores, p.landmarks)]
    faces.sort(key=lambda face: -face[0])
    clusters: list[list[tuple]] = []
    for face in faces:
        best, best_iou = None, iou
        for cluster in clusters:
            fused = sum(s * b for s, b, _ in cluster) / sum(s for s, _, _ in cluster)
            overlap = box_iou(face[1][None], fused[None])[0, 0]
            if overlap >= best_iou and (best is None or overlap > best[0]):
                best = (overlap, cluster)
        if best is None:
            clusters.append([face])
        else:
            best[1].append(face)
    out = []
    for cluster in clusters:
        total = sum(s for s, _, _ in cluster)
        score = total / len(cluster) * min(len(cluster), len(parts)) / len(parts)
        out.append((sum(s * b for s, b, _ in cluster) / total, score,
                    sum(s * l for s, _, l in cluster) / total))
    return sorted(out, key=lambda face: -face[1])


def random_detections(rng: np.random.Generator, centres: np.ndarray) -> Detections:
    """Faces near ``centres`` (jittered boxes of 10-60 px), some left out, plus a stray one."""
    keep = rng.random(len(centres)) < 0.8
    c = centres[keep] + rng.normal(0, 1.5, (int(keep.sum()), 2))
    side = rng.uniform(10, 60, int(keep.sum()))
    boxes = np.concatenate([c - side[:, None] / 2, c + side[:, None] / 2], axis=1)
    boxes = np.concatenate([boxes, rng.uniform(0, 300, (1, 2)).repeat(2, 0).reshape(1, 4)
                            + [0, 0, 20, 20]])
    scores = rng.uniform(0.1, 1.0, len(boxes))
    landmarks = boxes[:, None, :2] + rng.uniform(0, 10, (len(boxes), 5, 2))
    return Detections(boxes.astype(np.float32), scores.astype(np.float32),
                      landmarks.astype(np.float32), len(boxes))


def assert_matches_reference(got: Detections, parts: list[Detections]) -> None:
    want = reference_fusion(parts)
    assert len(got) == len(want) == got.found
    np.testing.assert_allclose(got.scores, [w[1] for w in want], rtol=1e-5)
    np.testing.assert_allclose(got.boxes, np.array([w[0] for w in want]), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got.landmarks, np.array([w[2] for w in want]), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("seed", range(5))
def test_fusion_equals_the_reference_on_random_faces(seed):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 600, (12, 2))
    parts = [random_detections(rng, centres) for _ in range(2 + seed % 2)]
    assert_matches_reference(fuse_detections(parts), parts)


def test_agreement_averages_and_a_lone_face_keeps_its_share():
    box = np.array([[10, 10, 50, 50]], np.float32)
    a = Detections(box, np.array([0.9], np.float32), np.zeros((1, 5, 2), np.float32), 1)
    b = Detections(box + 2, np.array([0.6], np.float32), np.ones((1, 5, 2), np.float32), 1)
    lone = Detections(np.array([[200, 200, 230, 230]], np.float32), np.array([0.8], np.float32),
                      np.zeros((1, 5, 2), np.float32), 1)
    fused = fuse_detections([a, Detections(np.concatenate([b.boxes, lone.boxes]),
                                           np.array([0.6, 0.8], np.float32),
                                           np.concatenate([b.landmarks, lone.landmarks]), 2)])
    assert fused.scores.tolist() == pytest.approx([0.75, 0.4])  # mean of two; 0.8 x 1/2
    np.testing.assert_allclose(fused.boxes[0], box[0] + 2 * 0.6 / 1.5)  # score-weighted mean
    np.testing.assert_allclose(fused.landmarks[0], 0.6 / 1.5)
    assert len(fuse_detections([Detections(), Detections()])) == 0


def test_an_ensemble_of_one_graph_twice_is_that_graph():
    images = scene_images(4)
    with make_detector("default") as single, \
            make_detector("default", detector_model="yunet-masks+yunet-masks") as twice:
        assert isinstance(twice, EnsembleDetector) and "boxes fused" in twice.describe()
        for want, got in zip(single.detect(images, [2.0] * 4), twice.detect(images, [2.0] * 4)):
            assert len(want) > 0
            np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
            np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)


def test_two_graphs_fuse_their_faces_on_scene_photos():
    images = scene_images(3)
    with make_detector("default", detector_model="yunet-masks") as a, \
            make_detector("default", detector_model="yunet") as b, \
            make_detector("default", detector_model="yunet-masks+yunet") as both:
        for image in images:
            parts = [a.detect([image], [2.0])[0], b.detect([image], [2.0])[0]]
            got = both.detect([image], [2.0])[0]
            assert len(got) >= max(len(p) for p in parts) > 0
            assert_matches_reference(got, parts)


def test_photos_go_through_the_scale_rule_member_by_member_then_fuse():
    images = scene_images(3)
    stages = [face_stage("default", detector_model=name)
              for name in ("yunet-masks", "yunet", "yunet-masks+yunet")]
    try:
        a, b, both = (stage.detect(images) for stage in stages)
    finally:
        for stage in stages:
            stage.close()
    for parts, got in zip(zip(a, b), both):
        assert len(got) > 0
        assert_matches_reference(got, list(parts))


def test_detector_model_names_several_graphs_and_says_what_it_expected():
    paths = detector_model_paths("yunet-masks + yunet")
    assert [p.name for p in paths] == ["yunet_n_masks.onnx", "yunet_n_dynamic.onnx"]
    with pytest.raises(FileNotFoundError, match=r"several joined by '\+', got 'nope.onnx'"):
        detector_model_paths("yunet-masks+nope.onnx")
    with pytest.raises(ValueError, match="at least 2 detectors, got 1"):
        EnsembleDetector([object()])


def test_the_served_faces_pipeline_refuses_an_ensemble():
    from maskrt.serving.triton_faces_repo import FacesSettings

    settings = FacesSettings(preset="default", face_options=("detector_model=yunet-masks+yunet",))
    with pytest.raises(ValueError, match="runs one detector graph, got the ensemble"):
        settings.detector_graph()
    assert "+" not in str(PRESETS["default"]["detector_model"])


def test_the_accurate_preset_fuses_the_three_shipped_graphs():
    paths = detector_model_paths(str(PRESETS["accurate"]["detector_model"]))
    assert [p.name for p in paths] == ["yunet_n_masks.onnx", "yunet_n_masks_seed1.onnx",
                                       "yunet_n_masks_seed2.onnx"]
    assert all(p.is_file() for p in paths)
    same = {k: v for k, v in PRESETS["accurate"].items() if k != "detector_model"}
    assert same == {k: v for k, v in PRESETS["default"].items() if k != "detector_model"}
    images = scene_images(2)
    with make_detector("accurate") as detector:
        assert isinstance(detector, EnsembleDetector) and len(detector.members) == 3
        found = detector.detect(images, [2.0, 2.0])
    assert all(len(faces) > 0 for faces in found)


def test_score_with_the_accurate_preset_gives_the_ensembles_faces(tmp_path):
    from maskrt.cli import main as cli_main

    paths = scene_paths(2)
    out = tmp_path / "out"
    argv = ["score", *map(str, paths), "--out", str(out), "--preset", "accurate",
            "--face-option", "report_threshold=0", "--progress-interval", "0"]
    assert cli_main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accounting_ok"] and summary["counts"]["scored"] == 2
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    stage = face_stage("accurate")
    try:
        found = stage.detect([stage.sharpened(cv2.imread(str(p))) for p in paths])
    finally:
        stage.close()
    assert sorted(r["faces"] for r in records if r["region_index"] in (0, None)) == \
        sorted(min(len(f), 200) for f in found)
