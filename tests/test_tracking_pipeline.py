"""Tracking through the real pipeline: a camera clip (shared/tools/make_clips.py, MJPG written by
OpenCV) scored with the shipped detector and classifier; records, tracks and events agree; reuse
and the batch ceiling; a live camera (a real MJPEG server process) under a slow stage keeps its
latency bounded by dropping late frames; track events through a real mosquitto."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import pytest

from maskrt.cli import main as cli_main
from maskrt.stream import Stage
from maskrt.stream.pipeline import Pipeline
from maskrt.stream.sinks import safe_name
from maskrt.stream.sources import StreamSource
from maskrt.stream.work import REASON_LATE, REASON_SUPERSEDED, REASON_WOULD_BE_LATE
from streaming_fixtures import REPO, check_accounting, read_jsonl, shared_engine
from streaming_servers import mjpeg_server
from test_mqtt_sinks import Subscriber, broker  # noqa: F401 - the broker fixture

SHARED = REPO.parent / "shared"
MAKE_CLIPS = SHARED / "tools" / "make_clips.py"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 2 s, 10 fps, 640x360 clip of scene photos (about 40 detections a frame)."""
    if not MAKE_CLIPS.is_file() or not (SHARED / "data" / "scenes" / "val").is_dir():
        pytest.skip(f"make_clips.py or the scene photos not found under {SHARED}")
    out = tmp_path_factory.mktemp("clips")
    subprocess.run([sys.executable, str(MAKE_CLIPS), str(SHARED / "data" / "scenes" / "val"),
                    str(out), "--clips", "1", "--seconds", "2", "--size", "640x360",
                    "--seed", "3"], check=True, capture_output=True)
    return out / "clip_000.avi"


def score(clip: Path, out: Path, *flags: str) -> tuple[list[dict], dict]:
    shared_engine()  # the graph is exported once for the session
    rc = cli_main(["score", str(clip), "--out", str(out), "--progress-interval", "0", *flags])
    assert rc == 0
    records = read_jsonl(out / "records.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accounting_ok"] is True
    return records, summary


def test_tracked_clip_gives_people_with_reused_decisions(clip, tmp_path):
    records, summary = score(clip, tmp_path / "out", "--explain", "--batch-size", "8")
    faces = [r for r in records if r["region_index"] is not None]
    assert summary["counts"]["scored"] == 20 and faces
    assert summary["max_batch_size"] <= 8
    assert summary["reused_faces"] > 0 and summary["classified_faces"] > 0
    assert summary["classified_faces"] + summary["reused_faces"] == len(faces)
    assert sum(not r["classified"] for r in faces) == summary["reused_faces"]
    by_track = defaultdict(list)
    for r in faces:
        assert r["track_frames"] >= 1 and r["track_label"] in (None, "with_mask", "without_mask")
        if r["track_id"] is not None:
            by_track[r["track_id"]].append(r)
    assert by_track, "no confirmed track in 20 frames"
    reused = 0
    for track in by_track.values():  # a reused face repeats its track's last classification
        last = None
        for r in track:
            if r["classified"]:
                last = (r["label"], r["p_without_mask"])
            elif last is not None:
                assert (r["label"], r["p_without_mask"]) == last
                reused += 1
    assert reused > 0
    # one overlay per scored frame, drawn also where every face reused its track's CAM
    assert sum(1 for r in records if "overlay" in r) == 20
    check_tracks_and_events(tmp_path / "out", by_track)


def check_tracks_and_events(out: Path, by_track: dict[int, list[dict]]) -> None:
    tracks, events = read_jsonl(out / "tracks.jsonl"), read_jsonl(out / "events.jsonl")
    assert sorted(t["track_id"] for t in tracks) == sorted(by_track)  # every person ends once
    assert [e for e in events if e["event"] == "track_ended"] and \
        len([e for e in events if e["event"] == "track_started"]) == len(by_track)
    for track in tracks:
        last = by_track[track["track_id"]][-1]
        assert track["track_frames"] == last["track_frames"]
        assert track["track_label"] == last["track_label"]
        assert track["p_track_without_mask"] == pytest.approx(last["p_track_without_mask"],
                                                             abs=1e-6)
        assert track["last_frame"] == last["frame_index"]
    decisions = defaultdict(list)
    for event in events:
        if event["event"] == "decision":
            decisions[event["track_id"]].append(event["track_label"])
    for track_id, labels in decisions.items():  # the first decision, then only changes
        assert all(a != b for a, b in zip(labels, labels[1:])), (track_id, labels)


def reuse_of(engine, clip: Path) -> dict:
    """(frame, region) -> (classified, track id, track label) of the clip through a Pipeline."""
    records = list(Pipeline(engine, [str(clip)], batch_size=8))
    return {(r.frame_index, r.region_index): (r.classified, r.track_id, r.track_label)
            for r in records if r.region_index is not None}


def test_reuse_does_not_depend_on_how_fast_classifications_come_back(clip):
    """The uncertain rule reads classifications settle_frames old and waits for them, so a
    slow classifier (a loaded machine) gives the same records, not fewer reclassifications."""
    engine = shared_engine()
    fast = reuse_of(engine, clip)
    infer = engine.backend.infer

    def slow_infer(*args, **kwargs):
        time.sleep(0.15)  # results come back frames after the track stage has moved on
        return infer(*args, **kwargs)

    engine.backend.infer = slow_infer
    try:
        slow = reuse_of(engine, clip)
    finally:
        del engine.backend.infer
    assert slow == fast
    assert sum(classified for classified, _, _ in fast.values()) < len(fast)  # reuse ran


def test_reuse_off_classifies_every_face_and_track_off_has_no_tracks(clip, tmp_path):
    records, summary = score(clip, tmp_path / "every", "--reuse", "off")
    faces = [r for r in records if r["region_index"] is not None]
    assert faces and all(r["classified"] and r["label"] for r in faces)
    assert summary["reused_faces"] == 0
    assert any(r["track_id"] is not None for r in faces)
    records, summary = score(clip, tmp_path / "off", "--track", "off", "--batch-size", "4")
    faces = [r for r in records if r["region_index"] is not None]
    assert all(r["track_id"] is None and r["track_label"] is None and r["classified"]
               for r in faces)
    assert not (tmp_path / "off" / "tracks.jsonl").exists()
    # frames of ~40 faces, batches of at most 4: a frame's faces are split across calls
    assert max(r["faces"] for r in faces) > 4
    assert summary["max_batch_size"] == 4
    assert summary["batches"] >= len(faces) / 4


def write_frames(clip: Path, folder: Path, n: int) -> Path:
    """The clip's first n frames as JPEG files in ``folder``."""
    folder.mkdir()
    capture = cv2.VideoCapture(str(clip))
    for i in range(n):
        ok, frame = capture.read()
        assert ok
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), frame)
    capture.release()
    return folder


def test_photos_are_not_tracked_by_default(clip, tmp_path):
    folder = write_frames(clip, tmp_path / "photos", 3)
    records, _ = score(folder, tmp_path / "out")
    faces = [r for r in records if r["region_index"] is not None]
    assert faces and all(r["track_frames"] is None and r["classified"] for r in faces)


MAX_LATENCY_MS = 1500


class SlowStage(Stage):
    """A stage slower than the camera (a loaded machine, a slow model)."""

    name = "slow"

    def process(self, task):
        time.sleep(0.25)
        return task


def test_live_camera_under_a_slow_stage_drops_late_frames(clip, tmp_path):
    frames = write_frames(clip, tmp_path / "frames", 10)
    with mjpeg_server(frames, fps=20) as server:
        source = StreamSource(f"http://127.0.0.1:{server.port}/cam.mjpg", id="cam")
        pipeline = Pipeline(shared_engine(), [source], stages=[SlowStage()], batch_size=8,
                            max_latency_ms=MAX_LATENCY_MS, stop_when_done=False)
        records = []
        with pipeline:
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                record = pipeline.get(timeout=0.1)
                if record is not None:
                    records.append(record)
            pipeline.stop()
            records.extend(pipeline)
    counters = pipeline.counters()
    check_accounting(records, counters)
    reasons = counters["sources"]["cam"]["reasons"]
    # The camera gives 20 frames/s, the slow stage takes 4: the older frames give way
    assert sum(reasons.get(r, 0) for r in (REASON_SUPERSEDED, REASON_LATE, REASON_WOULD_BE_LATE)) > 10, \
        reasons
    scored = [r for r in records if r.status == "scored" and r.frame_level]
    assert len(scored) >= 3
    # What passed the last check (the infer stage) was younger than the limit; what follows is
    # one backend call and the records: never the minutes a queue of stale frames would add.
    assert max(r.latency_ms for r in scored) < MAX_LATENCY_MS + 5000


def test_track_events_reach_an_mqtt_subscriber_once_per_person(clip, tmp_path, broker):  # noqa: F811
    subscriber = Subscriber(broker.port, "site")
    try:
        records, summary = score(clip, tmp_path / "out", "--mqtt", f"127.0.0.1:{broker.port}",
                                 "--mqtt-topic", "site")
        events = read_jsonl(tmp_path / "out" / "events.jsonl")
        messages = subscriber.wait_for(len(events))
    finally:
        subscriber.close()
    assert events and summary["outputs"]["mqtt_published"] == len(events)
    assert {topic for topic, _ in messages} == {f"site/{safe_name(str(clip))}/tracks"}
    assert sorted((m["event"], m["track_id"], m["frame_index"]) for _, m in messages) == \
        sorted((e["event"], e["track_id"], e["frame_index"]) for e in events)


def short_video(clip: Path, path: Path, n: int) -> Path:
    """The clip's first n frames as a video of its own."""
    capture = cv2.VideoCapture(str(clip))
    writer = None
    for _ in range(n):
        ok, frame = capture.read()
        assert ok
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0,
                                     (frame.shape[1], frame.shape[0]))
        writer.write(frame)
    capture.release()
    writer.release()
    return path


def test_people_end_when_their_video_ends_not_when_the_run_does(clip, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    short_video(clip, folder / "a.avi", 6)
    short_video(clip, folder / "b.avi", 6)
    alone = short_video(clip, tmp_path / "alone.avi", 6)
    pipeline = Pipeline(shared_engine(), [str(folder), str(alone), str(clip)])
    records = list(pipeline)
    check_accounting(records, pipeline.counters())
    ended = [(r.source_id, e) for r in records for e in r.events if e["event"] == "track_ended"]
    # every source ended before the run did: its people ended with its last frame
    assert pipeline.final_events == []
    by_source = {source for source, _ in ended}
    assert by_source == {str(folder), str(alone), str(clip)}
    # the folder's first video's people end when its second video starts
    first = [e for source, e in ended if e["uri"] and e["uri"].endswith("a.avi")]
    assert first
    starts_b = min(r.frame_index for r in records
                   if r.source_id == str(folder) and r.uri and r.uri.endswith("b.avi"))
    assert all(e["last_frame"] < starts_b for e in first)
    carrier = next(r for r in records if r.events and first[0] in r.events)
    assert carrier.uri.endswith("b.avi") and carrier.frame_index == starts_b


def test_detect_every_2_predicts_the_faces_of_the_frames_between(clip, tmp_path):
    records, summary = score(clip, tmp_path / "out", "--track-option", "detect_every=2")
    faces = [r for r in records if r["region_index"] is not None]
    predicted = [r for r in faces if r["frame_index"] % 2]
    detected = [r for r in faces if not r["frame_index"] % 2]
    assert predicted and detected
    # between detections: only confirmed people, where their tracks say, reusing decisions
    assert all(r["track_id"] is not None and not r["classified"] and "predicted" in r["reason"]
               for r in predicted)
    assert not any("predicted" in (r["reason"] or "") for r in detected)
    assert {r["track_id"] for r in predicted} <= {r["track_id"] for r in detected}
    assert summary["counts"]["scored"] == 20
