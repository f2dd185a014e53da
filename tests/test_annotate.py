"""Face labels on overlays: the face score beside the decision, compact tags on small faces, and
labels that never cover one another, also in a crowd."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskrt.stream.annotate import (annotate_faces, face_labels, face_texts, label_size,
                                    place_labels)
from maskrt.stream.records import Record
from streaming_fixtures import shared_engine

SCENES = Path(__file__).resolve().parents[2] / "shared" / "data" / "scenes" / "val" / "images"


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def check_placement(labels, boxes, size) -> None:
    width, height = size
    rects = [label.rect for label in labels if label is not None]
    for rect in rects:
        assert 0 <= rect[0] < rect[2] <= width and 0 <= rect[1] < rect[3] <= height, rect
    for a, b in combinations(rects, 2):
        assert not overlap(a, b), (a, b)
    for label, box in zip(labels, boxes):
        if label is not None and label.position == "inside":
            assert box[0] <= label.rect[0] and label.rect[2] <= box[2]


def test_labels_say_the_decision_and_the_face_score():
    record = Record("s", 0, None, "scored", label="without_mask", p_with_mask=0.03,
                    p_without_mask=0.97, region_index=0, box=[0, 0, 10, 10], faces=1,
                    face_score=0.82)
    assert face_texts(record) == ("without_mask", "NO MASK 0.97 | face 0.82", "NO .97 f.82")
    record.track_id, record.track_label, record.p_track_without_mask = 7, "with_mask", 0.09
    assert face_texts(record) == ("with_mask", "#7 mask 0.91 | face 0.82", "#7 mask .91 f.82")


def test_placement_tries_above_then_below_then_inside_then_compact_then_none():
    scale, thickness = 0.5, 1
    texts = ("NO MASK 0.97 | face 0.82", "NO .97 f.82")
    (w, h), (cw, _) = label_size(texts[0], scale, thickness), label_size(texts[1], scale, thickness)
    size = (400, 300)
    big = [100, 100, 100 + w + 10, 200]  # room above, below and inside
    [first] = place_labels([big], [texts], size, scale, thickness)
    assert first.position == "above" and first.rect == (100, 100 - h, 100 + w, 100)
    # two big faces stacked: above the lower one would cover the upper face; below is free
    lower = [100, 200 + h // 2, 100 + w + 10, 300 - h]
    labels = place_labels([big, lower], [texts, texts], size, scale, thickness)
    check_placement(labels, [big, lower], size)
    assert [label.position for label in labels] == ["above", "below"]
    # a small face gets the compact tag at once
    small = [10, 50, 20, 60]
    [tag] = place_labels([small], [texts], size, scale, thickness)
    assert tag.compact and tag.text == texts[1] and tag.rect[2] - tag.rect[0] == cw
    # a face at the top of a frame too short for a label below: inside, when it fits
    top = [0, 0, w + 4, h + 6]
    [inside] = place_labels([top], [texts], (w + 4, h + 6), scale, thickness)
    assert inside.position == "inside"
    # no room anywhere: no label (its box alone)
    assert place_labels([[0, 0, 5, 5]], [texts], (5, 5), scale, thickness) == [None]


def test_without_mask_faces_are_labelled_first():
    scale, thickness = 0.5, 1
    texts = ("mask 0.97 | face 0.82", "mask .97 f.82")
    boxes = [[50, 50, 150, 150], [60, 60, 120, 120]]  # the same spot: one label only fits above
    labels = place_labels(boxes, [texts, texts], (400, 460), scale, thickness,
                          first=[False, True])
    check_placement(labels, boxes, (400, 460))
    assert labels[1] is not None and labels[1].position == "above"


@pytest.fixture(scope="module")
def crowd() -> np.ndarray:
    path = SCENES / "scene_1d816055ee3e.jpg"
    if not path.is_file():
        pytest.skip(f"expected a scene photo at {path}")
    return np.tile(cv2.imread(str(path)), (3, 3, 1))


@pytest.mark.parametrize("report_threshold", [None, 0.0])
def test_labels_never_cover_one_another_in_a_crowd(crowd, report_threshold):
    faces = shared_engine().faces(crowd, report_threshold=report_threshold)
    assert len(faces) >= 25  # a crowd: nine copies of a scene's faces
    labels = face_labels(faces, crowd.shape)
    check_placement(labels, [f.box for f in faces], (crowd.shape[1], crowd.shape[0]))
    placed = [label for label in labels if label is not None]
    assert len(placed) >= len(faces) // 3  # most faces keep a label
    assert any(label.compact for label in placed)  # the small faces: compact tags
    drawn = annotate_faces(crowd, faces)
    assert drawn.shape == crowd.shape and (drawn != crowd).any()
