"""maskrt eval on VOC scene splits: reading them, the CLI's numbers, JSON, gallery and errors.

Most tests give the Engine an oracle ``faces`` (the annotations themselves, optionally spoiled),
so the expected figures are known exactly; one test runs the real detector when it exists.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from maskrt import cli
from maskrt.engine import Engine
from maskrt.image import decode_image
from maskrt.labels import CLASSES
from maskrt.train.data import DatasetError
from maskrt.train.scenes import index_scenes, read_annotation

SCENES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scenes" / "val"
FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "facemask" / "val"
#: Small val photos with both classes and one difficult (mask_worn_incorrectly) box.
PICK = ("scene_1d816055ee3e", "scene_b57cde0e71f2", "scene_2a5c37610421", "scene_0015b84d76a8")


def make_split(root: Path, names: tuple[str, ...] = PICK) -> Path:
    if not SCENES.is_dir():
        pytest.skip(f"shared scene data not found at {SCENES}")
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for name in names:
        shutil.copy(SCENES / "images" / f"{name}.jpg", root / "images")
        shutil.copy(SCENES / "annotations" / f"{name}.xml", root / "annotations")
    return root


@dataclass
class Face:
    """What ``Engine.faces`` returns per face (the fields eval reads)."""

    label: str
    class_index: int
    probabilities: np.ndarray
    box: list[int]
    face_score: float
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((5, 2), np.float32))
    overlay: Any = None


def oracle(split: Path, spoil: bool = False) -> Any:
    """An Engine.faces that answers from the annotations. spoil: in the first photo, miss its
    first (non-difficult) face, call its second the other class, and add a false face in a
    corner."""
    truth = {}
    for k, scene in enumerate(index_scenes(split)):
        frame = decode_image(scene.image)
        truth[hashlib.sha1(frame.tobytes()).hexdigest()] = (k, scene.truth)

    def faces(self: Engine, frames: list[np.ndarray], *, explain: bool = False,
              report_threshold: float | None = None) -> list[list[Face]]:
        assert report_threshold == 0.0  # eval ranks every candidate
        out = []
        for frame in frames:
            k, gt = truth[hashlib.sha1(frame.tobytes()).hexdigest()]
            found = []
            plain = np.cumsum(~gt.difficult) - 1  # index among the non-difficult faces
            for g, (box, label) in enumerate(zip(gt.boxes, gt.labels)):
                index = CLASSES.index(label) if label in CLASSES else 0
                spoilt = spoil and k == 0 and not gt.difficult[g]
                if spoilt and plain[g] == 0:
                    continue
                if spoilt and plain[g] == 1:
                    index = 1 - index
                found.append(_face(index, [int(v) for v in box], frame, explain))
            if spoil and k == 0:
                found.append(_face(0, [0, 0, 12, 12], frame, explain, score=0.99))
            out.append(found)
        return out
    return faces


def _face(index: int, box: list[int], frame: np.ndarray, explain: bool, score: float = 0.9) -> Face:
    probabilities = np.array([0.2, 0.2], np.float32)
    probabilities[index] = 0.8
    overlay = None
    if explain:  # a visibly different full frame, as the real overlay is
        overlay = frame.copy()
        overlay[box[1]:box[3], box[0]:box[2]] = (0, 0, 255)
    return Face(CLASSES[index], index, probabilities, box, score, overlay=overlay)


def test_reading_a_split_converts_voc_boxes(tmp_path) -> None:
    split = make_split(tmp_path / "val")
    scenes = index_scenes(split)
    assert [s.image.stem for s in scenes] == sorted(PICK)
    first = read_annotation(SCENES / "annotations" / "scene_0015b84d76a8.xml")
    # VOC <xmin>107 <xmax>136 (1-based, inclusive) -> [106, 136): 30 pixels wide.
    np.testing.assert_array_equal(first.boxes[0], [106, 66, 136, 95])
    assert first.labels[1] == "mask_worn_incorrectly" and list(first.difficult) == [0, 1, 0, 0]


@pytest.mark.parametrize("mutate, message", [
    (lambda s: (s / "annotations" / f"{PICK[0]}.xml").unlink(), "expected an annotation per image"),
    (lambda s: (s / "images" / f"{PICK[0]}.jpg").unlink(), "expected its image"),
    (lambda s: (s / "annotations" / f"{PICK[0]}.xml").write_text("<annotation><object>"),
     "not valid XML"),
    (lambda s: _edit(s, "<name>with_mask</name>", "<name>cat</name>"),
     "expected <name> one of .* got 'cat'"),
    (lambda s: _edit(s, "<xmin>", "<xmin>x"), r"expected a number in <xmin>"),
])
def test_bad_splits_say_what_is_wrong(tmp_path, mutate, message) -> None:
    split = make_split(tmp_path / "val")
    mutate(split)
    with pytest.raises(DatasetError, match=message):
        index_scenes(split)


def _edit(split: Path, old: str, new: str) -> None:
    path = split / "annotations" / f"{PICK[1]}.xml"
    path.write_text(path.read_text().replace(old, new, 1))


def test_eval_cli_with_a_perfect_oracle(tmp_path, monkeypatch, capsys) -> None:
    split = make_split(tmp_path / "val")
    monkeypatch.setattr(Engine, "faces", oracle(split), raising=False)
    out = tmp_path / "scenes.json"
    assert cli.main(["eval", str(split), "--json", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    for key in ("map50", "map30", "ap50", "ap30", "recall50", "recall30", "face_recall50",
                "face_recall30", "counts", "images_per_second", "faces_per_second"):
        assert key in report, key
    # Boxes as the detector gives them (0-based, exclusive) overlap the VOC boxes exactly.
    assert report["map50"] == 1.0 and report["map30"] == 1.0
    assert report["recall50"] == {"with_mask": 1.0, "without_mask": 1.0}
    assert report["face_recall50"] == 1.0
    # The oracle's with_mask answer on the difficult box is ignored, not a false positive.
    assert report["counts"]["difficult"] == 2 and report["counts"]["images"] == 4
    assert report["counts"]["positives"] == {"with_mask": 6, "without_mask": 4}
    assert report["images_per_second"] > 0
    printed = capsys.readouterr().out
    assert "mAP" in printed and "100.00%" in printed and "images/s" in printed


def test_eval_cli_mistakes_json_and_gallery(tmp_path, monkeypatch) -> None:
    pytest.importorskip("maskrt.cam")
    split = make_split(tmp_path / "val")
    monkeypatch.setattr(Engine, "faces", oracle(split, spoil=True), raising=False)
    out, gallery = tmp_path / "scenes.json", tmp_path / "mistakes.png"
    code = cli.main(["eval", str(split), "--json", str(out), "--gallery", str(gallery),
                     "--no-progress"])
    assert code == 0
    report = json.loads(out.read_text())
    # First photo (scene_0015b84d76a8: with_mask x3 + difficult): one with_mask face missed,
    # one called without_mask, one false with_mask face ranked first.
    assert 0 < report["map50"] < 1 and report["recall50"]["with_mask"] == pytest.approx(4 / 6)
    assert report["recall50"]["without_mask"] == 1.0
    # with_mask: the false face (0.99 x 0.8) first, then 4 hits: precision 4/5 up to recall 4/6.
    assert report["ap50"]["with_mask"] == pytest.approx(4 / 6 * 4 / 5, abs=1e-6)
    assert report["face_recall50"] == pytest.approx(9 / 10)
    image = cv2.imread(str(gallery))
    from maskrt.train.evaluate import CAPTION, TILE
    # 3 mistakes (missed, misclassified, false): one row of 3 cells.
    assert image.shape[1] == 3 * (2 * TILE + 8) + 8 and image.shape[0] >= TILE + CAPTION
    # The overlay half of a detection's tile shows the overlay, not the photo.
    y0, x = image.shape[0] - 8 - TILE, 4
    left = image[y0:y0 + TILE, x:x + TILE].astype(int)
    right = image[y0:y0 + TILE, x + TILE + 4:x + 2 * TILE + 4].astype(int)
    assert np.abs(left - right).mean() > 5


def test_unreadable_images_are_reported_not_fatal(tmp_path, monkeypatch, capsys) -> None:
    split = make_split(tmp_path / "val")
    monkeypatch.setattr(Engine, "faces", oracle(split), raising=False)
    (split / "images" / f"{PICK[0]}.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "scenes.json"
    with pytest.warns(UserWarning, match=PICK[0]):
        code = cli.main(["eval", str(split), "--json", str(out), "--no-progress"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["counts"]["skipped"] == 1 and report["counts"]["images"] == 3
    assert report["skipped_files"][0]["path"].endswith(f"{PICK[0]}.jpg")
    assert "1 unreadable skipped" in capsys.readouterr().out


@pytest.mark.parametrize("mutate, message", [
    (lambda s: (s / "annotations" / f"{PICK[0]}.xml").write_text("<annotation"), "not valid XML"),
    (lambda s: (s / "images" / f"{PICK[0]}.jpg").unlink(), "expected its image"),
])
def test_eval_cli_bad_split_exits_2(tmp_path, capsys, mutate, message) -> None:
    split = make_split(tmp_path / "val")
    mutate(split)
    code = cli.main(["eval", str(split), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "maskrt eval: error:" in err and message in err and PICK[0] in err


@pytest.mark.parametrize("present, absent", [("images", "annotations"),
                                             ("annotations", "images")])
def test_half_a_voc_split_names_the_voc_layout(tmp_path, capsys, present, absent) -> None:
    """A folder with images/ but no annotations/ (or the other way round) is not taken for a
    class tree only: the error also says what a VOC scene split needs."""
    (tmp_path / "val" / present).mkdir(parents=True)
    assert cli.main(["eval", str(tmp_path / "val"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("maskrt eval: error:")
    assert "images/ and annotations/*.xml" in err and f"found {present}/ but no {absent}/" in err


def test_the_image_folder_path_still_works(tmp_path) -> None:
    if not FACES.is_dir():
        pytest.skip(f"shared face data not found at {FACES}")
    for cls in CLASSES:
        (tmp_path / "data" / cls).mkdir(parents=True)
        for path in sorted((FACES / cls).glob("*.jpg"))[:2]:
            shutil.copy(path, tmp_path / "data" / cls)
    out = tmp_path / "eval.json"
    assert cli.main(["eval", str(tmp_path / "data"), "--json", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["images"] == 4 and "accuracy" in report and "map50" not in report


def test_eval_cli_with_the_real_detector(tmp_path) -> None:
    if not callable(getattr(Engine, "faces", None)):
        pytest.skip("Engine.faces (the face detector) is not in this build yet")
    split = make_split(tmp_path / "val")
    out = tmp_path / "scenes.json"
    assert cli.main(["eval", str(split), "--json", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert 0.0 <= report["map50"] <= 1.0 and 0.0 <= report["map30"] <= 1.0
    assert report["map30"] >= report["map50"] - 1e-9
    assert set(report["recall50"]) == set(CLASSES)
    assert report["counts"]["images"] == len(PICK) and report["counts"]["faces_detected"] > 0


# ---------------------------------------------------------------------------------------------
# The operating point, on a hand-made split with known answers

#: (image fill, annotated faces (label, box, difficult), found faces (label, box, face score))
HAND_MADE = [
    (40, [("with_mask", [10, 10, 50, 50], 0), ("without_mask", [100, 10, 140, 50], 0),
          ("mask_worn_incorrectly", [10, 100, 50, 140], 1)],
     [("with_mask", [10, 10, 50, 50], 0.9),          # right
      ("without_mask", [100, 10, 140, 50], 0.3),     # right, but not reported at 0.5
      ("without_mask", [10, 100, 50, 140], 0.8),     # on a difficult face: neither
      ("without_mask", [150, 150, 190, 190], 0.6)]),  # a false alarm
    (160, [("without_mask", [10, 10, 50, 50], 0)],
     [("without_mask", [10, 10, 50, 50], 0.95),      # right
      ("with_mask", [100, 100, 140, 140], 0.7),      # no face there
      ("without_mask", [11, 10, 50, 50], 0.55)]),    # a second box on a face: a false alarm
]


def hand_made_split(root: Path) -> tuple[Path, Any]:
    """The HAND_MADE split on disk (VOC boxes 1-based, inclusive) and its Engine.faces."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    answers = {}
    for k, (fill, truth, found) in enumerate(HAND_MADE):
        image = np.full((200, 200, 3), fill, np.uint8)
        cv2.imwrite(str(root / "images" / f"p{k}.png"), image)
        objects = "".join(
            f"<object><name>{name}</name><difficult>{hard}</difficult><bndbox><xmin>{x0 + 1}"
            f"</xmin><ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            for name, (x0, y0, x1, y1), hard in truth)
        (root / "annotations" / f"p{k}.xml").write_text(f"<annotation>{objects}</annotation>")
        answers[hashlib.sha1(image.tobytes()).hexdigest()] = [
            Face(label, CLASSES.index(label), np.array([0.1, 0.9] if label == CLASSES[1]
                                                       else [0.9, 0.1], np.float32), box, score)
            for label, box, score in found]

    def faces(self: Engine, frames: list[np.ndarray], *, explain: bool = False,
              report_threshold: float | None = None) -> list[list[Face]]:
        threshold = self.report_threshold if report_threshold is None else report_threshold
        return [[f for f in answers[hashlib.sha1(frame.tobytes()).hexdigest()]
                 if f.face_score >= threshold] for frame in frames]
    return root, faces


def test_eval_reports_the_operating_point_of_the_faces_people_see(tmp_path, monkeypatch,
                                                                   capsys) -> None:
    split, faces = hand_made_split(tmp_path / "hand")
    monkeypatch.setattr(Engine, "faces", faces, raising=False)
    runs = {}
    for threshold in ("0.5", "0"):
        out = tmp_path / f"at{threshold}.json"
        assert cli.main(["eval", str(split), "--json", str(out), "--no-progress",
                         "--face-option", f"report_threshold={threshold}"]) == 0
        runs[threshold] = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "operating point: faces reported at face score >= 0" in printed
    assert ("false without_mask alarms: 2 in 2 images (100.00 per 100 images): 1 no face, "
            "0 loose box, 0 other class, 1 second box") in printed
    # mAP ranks every candidate, whatever the report threshold
    assert runs["0.5"]["map50"] == runs["0"]["map50"]
    assert runs["0.5"]["recall50"] == runs["0"]["recall50"] == {"with_mask": 1.0,
                                                                "without_mask": 1.0}
    at = runs["0.5"]["operating_point"]
    assert at["report_threshold"] == 0.5 and at["iou"] == 0.5
    assert at["reported"] == {"with_mask": 2, "without_mask": 3, "all": 5}
    assert at["right"] == {"with_mask": 1, "without_mask": 1, "all": 2}
    assert at["positives"] == {"with_mask": 1, "without_mask": 2, "all": 3}
    assert at["precision"] == {"with_mask": 0.5, "without_mask": pytest.approx(1 / 3),
                               "all": 0.4}
    assert at["recall"] == {"with_mask": 1.0, "without_mask": 0.5, "all": pytest.approx(2 / 3)}
    assert at["f1"] == {"with_mask": pytest.approx(2 / 3), "without_mask": pytest.approx(0.4),
                        "all": pytest.approx(0.5)}
    assert at["false_without_mask_alarms"] == 2 and at["false_alarms_per_100_images"] == 100.0
    assert at["false_alarm_kinds"] == {"no_face": 1, "loose_box": 0, "other_class": 0,
                                       "second_box": 1}
    every = runs["0"]["operating_point"]  # the low face is reported, and right
    assert every["right"]["without_mask"] == 2 and every["reported"]["without_mask"] == 4
    assert every["recall"]["without_mask"] == 1.0 and every["false_without_mask_alarms"] == 2


def test_false_alarms_are_told_apart_by_what_is_under_them() -> None:
    from maskrt.train.voc_metric import Detections, GroundTruth, operating_point

    truth = GroundTruth.make([[0, 0, 40, 40], [100, 0, 140, 40], [0, 100, 40, 140],
                              [100, 100, 140, 140]],
                             ["without_mask", "with_mask", "without_mask", "with_mask"],
                             [False, False, False, True])
    alarms = [[0, 0, 40, 40],        # right
              [1, 0, 40, 40],        # a second box on that bare face
              [100, 0, 140, 40],     # a masked face called bare
              [0, 100, 20, 120],     # a quarter of a bare face: too loose (IoU 0.25)
              [200, 200, 240, 240],  # nothing annotated
              [100, 100, 140, 140],  # on a difficult face: neither right nor wrong
              [300, 0, 340, 40]]     # under the report threshold: not shown
    found = Detections.make(alarms, ["without_mask"] * 7, [0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8],
                            [0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.1])
    point = operating_point([found], [truth], report_threshold=0.5)
    assert point.false_alarms == 4
    assert point.alarm_kinds == {"no_face": 1, "loose_box": 1, "other_class": 1,
                                 "second_box": 1}


def test_the_default_operating_point_is_the_presets(tmp_path, monkeypatch) -> None:
    from maskrt.detect import preset_settings

    split, faces = hand_made_split(tmp_path / "hand")
    monkeypatch.setattr(Engine, "faces", faces, raising=False)
    out = tmp_path / "eval.json"
    assert cli.main(["eval", str(split), "--json", str(out), "--no-progress"]) == 0
    point = json.loads(out.read_text())["operating_point"]
    assert point["report_threshold"] == preset_settings("default")["report_threshold"]
