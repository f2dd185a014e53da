"""maskrt.Engine: classify and explain frames of any size through the default backend."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from maskrt.engine import Engine, softmax
from maskrt.graph.model import MaskNet
from maskrt.image import ImageError, decode_image, prepare_batch
from tests.helpers import val_image_paths


@pytest.fixture(scope="module")
def engine():
    torch.manual_seed(5)
    with Engine(MaskNet().eval(), chunk_size=4) as ready:
        yield ready


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    """Real face images of their own, different sizes."""
    return [decode_image(p) for p in val_image_paths(per_class=3)]


def test_classify_agrees_with_the_backend_on_real_faces(engine, faces) -> None:
    results = engine.classify(faces)
    logits, _ = engine.backend.infer(prepare_batch(faces))
    probabilities = softmax(logits.astype(np.float64))
    assert [r.class_index for r in results] == list(np.argmax(logits, axis=1))
    np.testing.assert_allclose([r.probabilities for r in results], probabilities, rtol=1e-5)
    for result in results:
        assert result.label in ("with_mask", "without_mask")
        assert result.p_with_mask + result.p_without_mask == pytest.approx(1.0, abs=1e-6)
        assert result.overlay is None and result.heatmap is None


def test_one_image_gives_one_result_and_paths_work(engine, faces) -> None:
    single = engine.classify(faces[0])
    from_path = engine.classify(str(val_image_paths(per_class=3)[0]))
    assert single.class_index == from_path.class_index
    np.testing.assert_allclose(single.probabilities, from_path.probabilities, rtol=1e-6)


def test_batch_array_and_chunking_give_the_same_answers(engine, faces) -> None:
    square = np.stack([cv2.resize(f, (100, 100)) for f in faces])  # 6 frames, chunk_size 4
    from_array = engine.classify(square)
    from_list = [engine.classify(frame) for frame in square]
    assert len(from_array) == len(faces)
    for a, b in zip(from_array, from_list):
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-5, atol=1e-6)


def test_gray_and_bgra_frames_are_converted(engine, faces) -> None:
    gray = cv2.cvtColor(faces[0], cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(faces[0], cv2.COLOR_BGR2BGRA)
    from_gray = engine.classify(gray)
    from_bgra = engine.classify(bgra)
    expected = engine.classify(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    np.testing.assert_allclose(from_gray.probabilities, expected.probabilities, rtol=1e-6)
    np.testing.assert_allclose(from_bgra.probabilities, engine.classify(faces[0]).probabilities,
                               rtol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4, 2), np.uint8), r"expected shape \[H, W\], \[H, W, 3\] or \[H, W, 4\], got \[4, 4, 2\]"),
    (np.zeros((4, 4, 3), np.int32), r"expected dtype uint8 \(BGR \[H, W, 3\].*got int32"),
    (np.zeros((0, 4, 3), np.uint8), "expected a non-empty image"),
    ([], "expected at least one image"),
    (42, "got int"),
    ("/nonexistent/face.jpg", "cannot read image file"),
])
def test_bad_frames_raise_clear_errors(engine, bad, message) -> None:
    with pytest.raises(ImageError, match=message):
        engine.classify(bad)


def test_explain_draws_at_each_frames_own_size(engine, faces) -> None:
    from maskrt.cam import cam_reference

    results = engine.explain(faces)
    for frame, result in zip(faces, results):
        assert result.overlay.shape == frame.shape and result.overlay.dtype == np.uint8
        assert result.heatmap.shape == frame.shape[:2] and result.heatmap.dtype == np.float32
        assert result.heatmap.min() == pytest.approx(0.0, abs=1e-6)
        assert result.heatmap.max() == pytest.approx(1.0, abs=1e-5)
    # Same decision as classify, and the overlay is the reference CAM of the predicted class.
    assert [r.class_index for r in results] == [r.class_index for r in engine.classify(faces)]
    _, features = engine.backend.infer(prepare_batch(faces[:1]))
    expected_overlay, expected_heat = cam_reference(
        features, engine.backend.fc_weight, np.array([results[0].class_index]), faces[0][None],
        heatmaps=True)
    np.testing.assert_allclose(results[0].heatmap, expected_heat[0], atol=1e-5)
    # Within one level, except where 255*heat sits on a colour-map step (tests/test_cam.py
    # checks that case exactly); such pixels are rare.
    within_one_level = np.abs(results[0].overlay.astype(int) - expected_overlay[0]) <= 1
    assert within_one_level.mean() > 0.999


def test_explain_requested_class_changes_the_map(engine, faces) -> None:
    as_with = engine.explain(faces[:2], classes=[0, 0])
    as_without = engine.explain(faces[:2], classes=[1, 1])
    assert not np.allclose(as_with[0].heatmap, as_without[0].heatmap)
    with pytest.raises(ValueError, match="expected 2 class indices, got 1"):
        engine.explain(faces[:2], classes=[0])


def test_engine_argument_errors() -> None:
    with pytest.raises(ValueError, match="chunk_size: expected >= 1, got 0"):
        Engine(MaskNet(), chunk_size=0)
    with pytest.raises(ValueError, match=r"alpha: expected a value in \[0, 1\], got 2"):
        Engine(MaskNet(), alpha=2)
