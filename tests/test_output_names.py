"""Output files per source are unique: sources whose readable names clash (``x y`` and ``x_y``,
``cam.avi`` and ``cam.mp4``) get a short stable hash of their full id, the others keep the
readable name, and the summary maps each source to its own video and overlay folder."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import cv2
import pytest
from streaming_fixtures import has_cam_kernel, read_jsonl, write_video

from maskrt.cli import main as cli_main
from maskrt.stream.sinks import OutputNames, VideoSink, safe_name, source_hash


def test_clashing_names_get_a_stable_hash_and_the_others_stay_readable():
    names = OutputNames()
    names.plan(["x y", "x_y", "X_Y", "rtsp://cam:554/x"])
    assert names("rtsp://cam:554/x") == "rtsp_cam_554_x"
    clashing = {names("x y"), names("x_y"), names("X_Y")}
    assert clashing == {"x_y_" + source_hash("x y"), "x_y_" + source_hash("x_y"),
                        "X_Y_" + source_hash("X_Y")}
    assert source_hash("x y") == hashlib.sha1(b"x y").hexdigest()[:8]  # stable across runs
    assert names("late x y") == "late_x_y"  # a source added later: readable when it is unique
    assert names("rtsp://cam:554?x") == "rtsp_cam_554_x_" + source_hash("rtsp://cam:554?x")
    assert names("rtsp://cam:554/x") == "rtsp_cam_554_x"  # a name given never changes
    # MQTT topics keep safe_name, unchanged
    assert safe_name("x y") == safe_name("x_y") == "x_y"


def test_video_names_clash_without_their_extension():
    names = OutputNames(VideoSink.readable_name)
    names.plan(["a/cam.avi", "a/cam.mp4", "b/cam.avi"])
    assert names("b/cam.avi") == "b_cam"
    assert names("a/cam.avi") == "a_cam_" + source_hash("a/cam.avi")
    assert names("a/cam.mp4") == "a_cam_" + source_hash("a/cam.mp4")


def frame_count(path: str) -> int:
    cap = cv2.VideoCapture(path)
    try:
        count = 0
        while cap.read()[0]:
            count += 1
        return count
    finally:
        cap.release()


def test_videos_and_overlays_of_similar_sources_do_not_overwrite_each_other(tmp_path):
    if not has_cam_kernel():
        pytest.skip("--explain needs the CAM kernel (maskrt._C)")
    lengths = {"a/cam.avi": 6, "b/cam.avi": 9, "x y/cam.avi": 4, "x_y/cam.avi": 5}
    videos = {}
    for name, n in lengths.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        videos[str(write_video(tmp_path / name, n))] = n
    out = tmp_path / "out"
    assert cli_main(["score", *videos, "--out", str(out), "--video", "--explain",
                     "--regions", "frame", "--progress-interval", "0"]) == 0
    outputs = json.loads((out / "summary.json").read_text())["outputs"]
    assert set(outputs["videos"]) == set(videos) == set(outputs["overlay_folders"])
    assert len(set(outputs["videos"].values())) == 4
    assert len(set(outputs["overlay_folders"].values())) == 4
    for source_id, n in videos.items():
        assert frame_count(outputs["videos"][source_id]) == n, source_id
        assert len(list(Path(outputs["overlay_folders"][source_id]).glob("*.jpg"))) == n
    # Readable where the names differ; the hash only where they would clash
    names = {Path(source_id).parent.name: Path(path).name
             for source_id, path in outputs["videos"].items()}
    assert names["a"].endswith("_a_cam_annotated.avi")
    assert names["b"].endswith("_b_cam_annotated.avi")
    for folder in ("x y", "x_y"):
        assert names[folder].endswith(f"_x_y_cam_{source_hash(str(tmp_path / folder / 'cam.avi'))}"
                                      "_annotated.avi")
    records = read_jsonl(out / "records.jsonl")
    overlays = Counter(record["overlay"] for record in records)
    assert len(overlays) == sum(lengths.values()) and set(overlays.values()) == {1}
    for record in records:
        folder = Path(outputs["overlay_folders"][record["source_id"]])
        assert Path(record["overlay"]).parent == folder
