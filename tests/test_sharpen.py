"""Blurred frames sharpened before faces are found (maskrt.detect.sharpen), on real scene photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from maskrt.detect import face_stage, parse_face_options
from maskrt.detect.sharpen import MEASURE_PIXELS, Sharpener, blur_ratio
from maskrt.image import decode_image

SCENES = Path(__file__).resolve().parents[2] / "shared" / "data" / "scenes" / "val" / "images"


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    paths = sorted(SCENES.glob("*.jpg"))[:12]
    if len(paths) < 12:
        pytest.skip(f"expected 12 scene photos under {SCENES}")
    return [decode_image(path) for path in paths]


def blurred(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma)


def test_the_measure_tells_sharp_photos_from_blurred_ones(photos):
    sharp = [blur_ratio(photo) for photo in photos]
    soft = [blur_ratio(blurred(photo)) for photo in photos]
    softer = [blur_ratio(blurred(photo, 2.0)) for photo in photos]
    rule = Sharpener()
    assert max(sharp) < rule.soft < min(soft)
    assert all(a < b < c for a, b, c in zip(sharp, soft, softer))
    assert blur_ratio(np.full((50, 60, 3), 128, np.uint8)) == 1.0  # nothing to measure


def test_sharp_photos_are_left_alone_and_blurred_ones_get_their_fine_detail_back(photos):
    rule = Sharpener()
    for photo in photos:
        assert rule(photo) is photo
        soft = blurred(photo)
        assert rule.weight(soft) > 0
        mended = rule(soft)
        assert mended.shape == photo.shape and mended.dtype == np.uint8
        # not a restoration (pixels move further from the original: strong on purpose, what
        # the detector gains from), but detail comes back
        assert blur_ratio(photo) < blur_ratio(mended) < blur_ratio(soft) - 0.05


def test_the_weight_grows_linearly_between_soft_and_blurred(photos):
    rule = Sharpener(amount=2.0)
    ratio = blur_ratio(blurred(photos[0]))
    assert Sharpener(amount=2.0, soft=ratio - 0.1, blurred=ratio + 0.1).weight(
        blurred(photos[0])) == pytest.approx(1.0, abs=1e-6)
    assert Sharpener(amount=2.0, soft=ratio + 0.01, blurred=ratio + 0.1).weight(
        blurred(photos[0])) == 0.0
    assert Sharpener(amount=2.0, soft=0.01, blurred=ratio).weight(
        blurred(photos[0])) == pytest.approx(2.0, abs=1e-6)
    assert Sharpener(amount=0.0).weight(blurred(photos[0], 3.0)) == 0.0
    assert rule.weight(photos[0]) == 0.0


def test_a_large_frame_is_measured_on_its_centre(photos):
    frame = cv2.resize(photos[1], (1280, 720), interpolation=cv2.INTER_LINEAR)
    assert frame.shape[0] * frame.shape[1] > MEASURE_PIXELS
    h, w = frame.shape[:2]
    centre = frame[h // 4:h - h // 4, w // 4:w - w // 4]
    assert blur_ratio(frame) == pytest.approx(blur_ratio(centre), rel=0.05)


def test_settings_are_checked_with_what_came():
    for bad in ({"amount": -1.0}, {"sigma": 0.0}, {"soft": 0.4, "blurred": 0.3}):
        with pytest.raises(ValueError, match="sharpen: expected"):
            Sharpener(**bad)
    with pytest.raises(ValueError,
                       match=r"sharpen: expected a weight >= 0 \(0 turns it off\), got -2.0"):
        face_stage("default", sharpen=-2.0)
    with pytest.raises(ValueError, match="got nan"):
        face_stage("default", sharpen=float("nan"))
    with pytest.raises(ValueError, match="--face-option sharpen: expected a number, got 'x'"):
        parse_face_options(["sharpen=x"])
    assert face_stage("default", sharpen=0.0).sharpen is None
    assert face_stage("fast").sharpen is None


def test_the_face_stage_finds_faces_in_the_sharpened_frame(photos):
    from types import SimpleNamespace

    stage = face_stage("default")
    try:
        soft = blurred(photos[2])
        sharpened = stage.sharpened(soft)
        assert sharpened is not soft and stage.sharpened(photos[2]) is photos[2]
        task = SimpleNamespace(image=soft, regions=None, unreported=[], note=None, extra={},
                               sequence_key=None)
        stage.process_batch([task])
        assert np.array_equal(task.image, sharpened)
        expected = stage.regions(stage.detect([sharpened])[0], soft.shape)[0]
        found = task.regions + task.unreported
        assert sorted(r.box for r in found) == sorted(r.box for r in expected)
    finally:
        stage.close()
