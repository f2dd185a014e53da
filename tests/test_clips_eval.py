"""maskrt eval on camera clips (shared/tools/make_clips.py): loading a clip set, the README's clip
metrics on records made from the ground truth itself (so the expected figures are known
exactly, then spoiled in known ways), the command line, and one run of the real pipeline."""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from maskrt import cli
from maskrt.train.clips import (
    GT_CLASSES,
    METRIC_KEYS,
    ClipSet,
    clip_metrics,
    is_clip_set,
    load_clip_set,
)
from maskrt.train.data import DatasetError
from tests.helpers import REPO

pytest.importorskip("motmetrics", reason="clip metrics need maskrt[clips] (py-motmetrics)")

SHARED = REPO.parent / "shared"
MAKE_CLIPS = SHARED / "tools" / "make_clips.py"
SCENES = SHARED / "data" / "scenes" / "val"
RATES = ("idf1", "det_recall", "det_precision", "track_decision_acc",
         "without_mask_track_recall", "label_flicker")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 2-second 640x360 clips (20 frames each), made once for the module."""
    if not MAKE_CLIPS.is_file() or not SCENES.is_dir():
        pytest.skip(f"make_clips.py or the scene photos not found under {SHARED}")
    out = tmp_path_factory.mktemp("clips")
    subprocess.run([sys.executable, str(MAKE_CLIPS), str(SCENES), str(out), "--clips", "2",
                    "--seconds", "2", "--size", "640x360"], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def clip_set(clip_dir: Path) -> ClipSet:
    return load_clip_set(clip_dir)


def truth_records(clip_set: ClipSet, edit: Any = None) -> list[dict[str, Any]]:
    """One record per considered gt box: track_id = gt id, labels = the gt class name, face
    score 0.9. ``edit(record, position, count)`` may change it (position: the how-many-th of
    its gt track's considered frames, count: how many there are)."""
    where = considered_frames(clip_set)
    records = []
    for clip in clip_set:
        for frame, gt in sorted(clip.truth.items()):
            for k in range(len(gt.ids)):
                if not gt.consider[k]:
                    continue
                oid, name = int(gt.ids[k]), GT_CLASSES[int(gt.classes[k])]
                record = {"source_id": str(clip.video), "frame_index": frame, "status": "scored",
                          "label": name, "p_with_mask": 0.5, "p_without_mask": 0.5,
                          "uri": None, "region_index": 0, "box": gt.boxes[k].tolist(),
                          "face_score": 0.9, "faces": 1, "track_id": oid, "track_label": name}
                if edit is not None:
                    seen = where[(clip.name, oid)]
                    edit(record, seen.index(frame), len(seen))
                records.append(record)
    return records


def considered_frames(clip_set: ClipSet) -> dict[tuple[str, int], list[int]]:
    """(clip, gt id) -> the sorted frames where that gt track is considered."""
    out: dict[tuple[str, int], list[int]] = {}
    for clip in clip_set:
        for frame, gt in sorted(clip.truth.items()):
            for oid in gt.ids[gt.consider]:
                out.setdefault((clip.name, int(oid)), []).append(frame)
    return out


def other(name: str) -> str:
    return "without_mask" if name == "with_mask" else "with_mask"


def test_load_clip_set(clip_dir: Path, clip_set: ClipSet, tmp_path: Path) -> None:
    assert is_clip_set(clip_dir) and not is_clip_set(tmp_path)
    assert [c.name for c in clip_set] == ["clip_000", "clip_001"]
    clip = clip_set.clips[0]
    assert clip.frames == 20 and clip.size == (640, 360) and clip.video.is_file()
    gt = clip.truth[0]  # gt frame 1
    assert (gt.boxes[:, 2] > gt.boxes[:, 0]).all() and (gt.boxes[:, 3] > gt.boxes[:, 1]).all()
    assert set(gt.classes) <= {1, 2, 3} and not gt.consider[gt.classes == 3].any()
    assert set(clip.tracks) >= {int(i) for f in clip.truth.values() for i in f.ids}


def test_the_ground_truth_scores_perfectly(clip_set: ClipSet) -> None:
    report = clip_metrics(truth_records(clip_set), clip_set)
    assert report["tracked"]
    assert (report["mota"], report["idf1"], report["id_switches"]) == (1.0, 1.0, 0)
    assert (report["det_recall"], report["det_precision"]) == (1.0, 1.0)
    assert report["track_decision_acc"] == 1.0 and report["without_mask_track_recall"] == 1.0
    assert report["label_flicker"] == 0.0 and report["pred_tracks_per_person"] == 1.0
    assert report["counts"]["decided_tracks"] > 0 and report["counts"]["without_mask_tracks"] > 0
    assert set(report["per_clip"]) == {"clip_000", "clip_001"}
    assert not report["id_switch_events"] and not report["wrong_decisions"]


def test_track_ids_switching_halfway(clip_set: ClipSet) -> None:
    def switch(record: dict[str, Any], position: int, count: int) -> None:
        if position >= count // 2:
            record["track_id"] += 1000

    report = clip_metrics(truth_records(clip_set, switch), clip_set)
    lengths = [len(v) for v in considered_frames(clip_set).values()]
    switched = sum(n >= 2 for n in lengths)
    assert report["id_switches"] == switched == len(report["id_switch_events"])
    assert report["pred_tracks_per_person"] == pytest.approx(
        (len(lengths) + switched) / len(lengths))
    assert report["pred_tracks_per_person"] > 1 and report["idf1"] < 1
    assert report["det_recall"] == 1.0 and report["track_decision_acc"] == 1.0
    event = report["id_switch_events"][0]
    assert event["track_id"] == event["previous_track_id"] + 1000 == event["gt_id"] + 1000
    assert event["previous_frame_index"] < event["frame_index"] and len(event["box"]) == 4


def test_flipped_labels_flicker_and_decide_wrong(clip_set: ClipSet) -> None:
    def flip(record: dict[str, Any], position: int, count: int) -> None:
        if position >= count // 2:
            record["label"] = record["track_label"] = other(record["label"])

    report = clip_metrics(truth_records(clip_set, flip), clip_set)
    lengths = [len(v) for v in considered_frames(clip_set).values()]
    assert report["label_flicker"] == pytest.approx(
        sum(n >= 2 for n in lengths) / sum(n - 1 for n in lengths))
    assert report["track_decision_acc"] == 0.0 and report["without_mask_track_recall"] == 0.0
    assert len(report["wrong_decisions"]) == report["counts"]["decided_tracks"]
    wrong = report["wrong_decisions"][0]
    assert wrong["predicted"] == other(wrong["gt_class"]) and wrong["track_id"] == wrong["gt_id"]
    assert report["mota"] == 1.0 and report["id_switches"] == 0


def test_without_track_ids_each_sure_face_is_a_one_frame_track(clip_set: ClipSet) -> None:
    def untrack(record: dict[str, Any], position: int, count: int) -> None:
        del record["track_id"], record["track_label"]
        record["face_score"] = 0.9 if position % 2 == 0 else 0.3

    records = truth_records(clip_set, untrack)
    report = clip_metrics(records, clip_set)
    sure = [(n + 1) // 2 for n in (len(v) for v in considered_frames(clip_set).values())]
    assert not report["tracked"]
    assert report["det_recall"] == pytest.approx(sum(sure) / len(records))
    assert report["det_precision"] == 1.0
    assert report["id_switches"] == sum(k - 1 for k in sure)
    assert report["pred_tracks_per_person"] == pytest.approx(sum(sure) / len(sure))
    # one record with a track id: from then on only records with one count
    records[0]["track_id"] = 7
    report = clip_metrics(records, clip_set)
    assert report["tracked"] and report["counts"]["matched_boxes"] == 1


def test_a_prediction_on_an_ignore_box_is_not_false(clip_set: ClipSet) -> None:
    from maskrt.train.voc_metric import iou_matrix

    clip, frame, box = next(
        (clip, f, gt.boxes[k].tolist()) for clip in clip_set for f, gt in sorted(clip.truth.items())
        for k in range(len(gt.ids)) if not gt.consider[k]
        and (iou_matrix(gt.boxes[k:k + 1], gt.boxes[gt.consider]) < 0.5).all())
    records = truth_records(clip_set)
    extra = dict(records[0], source_id=str(clip.video), frame_index=frame, track_id=99999)
    report = clip_metrics(records + [dict(extra, box=box)], clip_set)
    assert report["det_precision"] == 1.0 and report["mota"] == 1.0
    assert report["counts"]["removed_on_ignore"] == 1
    assert report["false_tracks"] == [] and report["counts"]["false_tracks"] == 0
    far = [box[0] + 1000, box[1] + 1000, box[2] + 1000, box[3] + 1000]  # on nothing at all
    report = clip_metrics(records + [dict(extra, box=far)], clip_set)
    assert report["counts"]["false_positives"] == 1 and report["det_precision"] < 1.0
    assert report["counts"]["false_tracks"] == 1
    assert report["false_tracks"] == [{
        "clip": clip.name, "track_id": 99999, "frames": 1, "frame_index": frame, "box": far,
        "label": extra["track_label"], "first_frame_index": frame, "first_box": far,
        "face_score": 0.9}]


def test_false_tracks_are_the_tracks_matching_no_face_in_any_frame(clip_set: ClipSet) -> None:
    def shift(record: dict[str, Any], position: int, count: int) -> None:
        """Half the people: their track off the face for its first half, then on it."""
        if record["track_id"] % 2 == 0 and position < count // 2:
            record["box"] = [v + 2000 for v in record["box"]]

    records = truth_records(clip_set, shift)
    off = [dict(r, track_id=r["track_id"] + 500, box=[v + 3000 for v in r["box"]])
           for r in records if r["track_id"] % 3 == 0]  # copies of a third of them, never on
    report = clip_metrics(records + off, clip_set)
    expected = {(clip, oid + 500): len(frames) for (clip, oid), frames
                in considered_frames(clip_set).items() if oid % 3 == 0}
    assert {(e["clip"], e["track_id"]): e["frames"] for e in report["false_tracks"]} == expected
    assert [e["frames"] for e in report["false_tracks"]] == sorted(expected.values(),
                                                                   reverse=True)
    assert report["counts"]["false_tracks"] == len(expected)


def test_eval_cli_with_records(clip_dir: Path, clip_set: ClipSet, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    def switch(record: dict[str, Any], position: int, count: int) -> None:
        if position >= count // 2:
            record["track_id"] += 1000
            record["track_label"] = other(record["label"])

    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in truth_records(clip_set, switch)))
    out, gallery = tmp_path / "clips.json", tmp_path / "gallery.png"
    code = cli.main(["eval", str(clip_dir), "--records", str(records), "--json", str(out),
                     "--gallery", str(gallery), "--gallery-max", "6", "--no-progress"])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(METRIC_KEYS) | {"frames_per_s", "per_clip", "settings"} <= set(report)
    assert report["id_switches"] > 0 and report["track_decision_acc"] == 0.0
    assert report["frames_per_s"] is None and report["settings"]["records"] == str(records)
    assert report["classified_faces"] == sum(1 for line in records.read_text().splitlines()
                                             if json.loads(line).get("label") is not None)
    assert set(METRIC_KEYS) <= set(report["per_clip"]["clip_000"])
    assert gallery.stat().st_size > 0
    printed = capsys.readouterr().out
    assert "pred_tracks_per_person" in printed and "clip_001" in printed
    assert "false_tracks               0" in printed and "0 false tracks" in printed


def test_clip_gallery_shares_its_limit_among_the_kinds() -> None:
    from maskrt.cli.eval_clips import _pick

    def events(n: int, **extra: Any) -> list[dict[str, Any]]:
        return [{"frame_index": i, "box": [0, 0, 1, 1], "previous_frame_index": 0,
                 "previous_box": [0, 0, 1, 1], "decision_frame_index": 1,
                 "decision_box": [0, 0, 1, 1], "first_frame_index": 0, "first_box": [0, 0, 1, 1],
                 **extra} for i in range(n)]

    report = {"id_switch_events": events(1), "wrong_decisions": events(10, predicted=None),
              "false_tracks": events(10)}
    kinds = [kind for kind, _, _ in _pick(report, 9)]
    assert kinds == ["switch"] + ["decision"] * 4 + ["false"] * 4
    assert len(_pick(report, 0)) == 21 and len(_pick(report, 100)) == 21
    assert all(len(shots) == 2 for _, _, shots in _pick(report, 0))


def test_eval_cli_clip_set_without_gt_is_one_line(clip_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(clip_dir / "clips.json", broken)
    (broken / "clip_000.avi").symlink_to(clip_dir / "clip_000.avi")
    done = subprocess.run([sys.executable, "-m", "maskrt", "eval", str(broken), "--records",
                           str(tmp_path / "none.jsonl")], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maskrt eval: error:") and "gt" in lines[0]


def test_load_clip_set_names_a_bad_gt_line(clip_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(clip_dir, tmp_path / "bad")
    (tmp_path / "bad" / "gt" / "clip_001.txt").write_text("1,2,3\n")
    with pytest.raises(DatasetError, match=r"clip_001.txt:1: expected frame,track_id"):
        load_clip_set(tmp_path / "bad")


def test_eval_cli_scores_clips_through_the_pipeline(clip_dir: Path, tmp_path: Path) -> None:
    from maskrt.stream.pipeline import Pipeline

    if "track" not in inspect.signature(Pipeline).parameters:
        pytest.skip("Pipeline has no track parameter yet")
    out, records = tmp_path / "run.json", tmp_path / "records.jsonl"
    code = cli.main(["eval", str(clip_dir), "--json", str(out), "--records-out", str(records),
                     "--frames", "16", "--no-progress"])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(METRIC_KEYS) | {"frames_per_s", "per_clip", "settings"} <= set(report)
    for key in RATES:
        assert report[key] is None or 0.0 <= report[key] <= 1.0, key
    assert report["mota"] <= 1.0 and report["id_switches"] >= 0
    assert report["pred_tracks_per_person"] is None or report["pred_tracks_per_person"] >= 1.0
    assert report["frames_per_s"] > 0 and report["settings"]["preset"] == "default"
    assert 0 < report["counts"]["frames"] <= 16  # evaluated up to the frames read
    written = [json.loads(line) for line in records.read_text().splitlines()]
    assert any(r["status"] == "scored" and r["box"] for r in written)
    # the classifier's load: faces whose record says they went through it (reuse on: fewer
    # than the faces recorded, at least one a track)
    faces = [r for r in written if r["status"] == "scored" and r["box"]]
    classified = sum(1 for r in faces if r["classified"])
    assert report["classified_faces"] == classified
    assert len({r["track_id"] for r in faces if r["track_id"] is not None}) <= classified < len(faces)
    assert report["classified_per_frame"] == pytest.approx(classified / report["counts"]["frames"])


def test_clip_crops_are_the_considered_faces_of_every_nth_frame(clip_dir: Path,
                                                                clip_set: ClipSet) -> None:
    from maskrt.labels import CLASSES
    from maskrt.train.scene_data import clip_crops

    crops = clip_crops(clip_dir, every=5)
    expected = [(f"{clip.name}_f{frame:04d}", GT_CLASSES[int(cls)])
                for clip in clip_set for frame, gt in sorted(clip.truth.items()) if frame % 5 == 0
                for considered, cls in zip(gt.consider, gt.classes)
                if considered and GT_CLASSES[int(cls)] in CLASSES]
    assert len(expected) > 10
    assert [(c.photo, CLASSES[c.label]) for c in crops] == expected
    assert all(c.source == "clip" and c.image.ndim == 3 and min(c.image.shape[:2]) >= 4
               for c in crops)
    assert len({c.image.shape for c in crops}) > 3  # cut at each face's own size
    with pytest.raises(ValueError, match="every >= 1"):
        clip_crops(clip_dir, every=0)


def test_clip_crops_can_take_masks_worn_incorrectly_as_without_mask(clip_dir: Path,
                                                                   clip_set: ClipSet) -> None:
    from maskrt.labels import CLASSES
    from maskrt.train.scene_data import clip_crops

    plain, both = clip_crops(clip_dir, every=1), clip_crops(clip_dir, every=1, incorrect=True)
    expected = sum(int(not considered and cls == 3 and visible >= 0.5
                       and min(box[2] - box[0], box[3] - box[1]) >= 8)
                   for clip in clip_set for gt in clip.truth.values()
                   for box, considered, cls, visible in zip(gt.boxes, gt.consider, gt.classes,
                                                            gt.visibility))
    extra = [c for c in both if c.source == "incorrect"]
    assert expected > 0, "the generated clips hold no visible mask_worn_incorrectly face"
    assert len(extra) == expected and len(both) == len(plain) + expected
    assert {CLASSES[c.label] for c in extra} == {"without_mask"}
    assert not [c for c in plain if c.source == "incorrect"]


def test_incorrect_crops_are_the_splits_masks_worn_incorrectly() -> None:
    from maskrt.labels import CLASSES
    from maskrt.train.scene_data import incorrect_crops
    from maskrt.train.scenes import index_scenes

    if not SCENES.is_dir():
        pytest.skip(f"scene photos not found under {SHARED}")
    expected = sum(name == "mask_worn_incorrectly" for scene in index_scenes(SCENES)
                   for name in scene.truth.labels)
    crops = incorrect_crops(SCENES)
    assert expected > 0 and len(crops) == expected
    assert all(CLASSES[c.label] == "without_mask" and c.source == "incorrect" and c.image.size
               for c in crops)


def test_clip_frames_become_a_voc_split_the_detector_trainer_reads(clip_dir: Path,
                                                                    clip_set: ClipSet,
                                                                    tmp_path: Path) -> None:
    from maskrt.train.clip_frames import MIN_VISIBILITY, main as clip_frames_main
    from maskrt.train.scenes import index_scenes

    out = tmp_path / "frames"
    assert clip_frames_main([str(clip_dir), str(out), "--every", "5"]) == 0
    scenes = index_scenes(out)
    wanted = {(clip.name, index) for clip in clip_set for index in clip.truth
              if index % 5 == 0 and (clip.truth[index].visibility >= MIN_VISIBILITY).any()}
    assert {(s.image.stem[:-6], int(s.image.stem[-5:])) for s in scenes} == wanted
    for scene in scenes:
        truth = clip_set.by_name()[scene.image.stem[:-6]].truth[int(scene.image.stem[-5:])]
        visible = truth.visibility >= MIN_VISIBILITY
        assert cv2.imread(str(scene.image)).shape[:2] == (360, 640)
        assert sorted(scene.truth.labels) == sorted(GT_CLASSES[int(c)] for c in truth.classes[visible])
        want = np.clip(np.rint(truth.boxes[visible]), 0, [640, 360, 640, 360])
        got = scene.truth.boxes.astype(np.float64)
        assert sorted(map(tuple, got)) == sorted(map(tuple, want))
    assert clip_frames_main([str(tmp_path), str(out)]) == 2  # not a clip set: said, status 2
