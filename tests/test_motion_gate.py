"""The motion gate (maskrt/track/gate.py): a tracked source's frame that barely changed since its
last detected frame is left to the tracker; noise and exposure drift are not motion, a passer-by
and a pan are; at least one frame in gate_max_every is detected; a fixed-camera video through the
real pipeline gives every frame's records with the still ones predicted."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskrt.stream.sources.base import Frame, Source
from maskrt.stream.work import REASON_PREDICTED as NOTE_PREDICTED
from maskrt.stream.work import REASON_STILL as NOTE_STILL
from maskrt.stream.work import FrameTask, SourceHandle
from maskrt.track.gate import MotionGate, thumbnail
from maskrt.track.settings import TrackSettings, parse_track_options
from maskrt.track.stage import TrackStage
from helpers import scene_images, scene_paths
from streaming_fixtures import read_jsonl, shared_engine

@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """A scene photo of the shared val split at 640x360 (a fixed camera's view)."""
    image = cv2.imread(str(scene_paths(1)[0]), cv2.IMREAD_COLOR)
    return cv2.resize(image, (640, 360), interpolation=cv2.INTER_AREA)


def noisy(image: np.ndarray, seed: int, gain: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """``image`` as a camera gives it again: sensor noise (sd 4), exposure (gain, offset)."""
    noise = np.random.default_rng(seed).normal(0.0, 4.0, image.shape)
    return np.clip(image.astype(np.float32) * gain + offset + noise, 0, 255).astype(np.uint8)


def passer_by(image: np.ndarray, left: int, width: int = 64) -> np.ndarray:
    """A dark vertical bar (make_clips.py's passer-by) at ``left``."""
    out = image.copy()
    out[:, left:left + width] = (out[:, left:left + width] * 0.15 + 20).astype(np.uint8)
    return out


def test_noise_and_exposure_are_not_motion_a_passer_by_and_a_pan_are(scene):
    gate = MotionGate(0.005)
    assert gate.still(scene) is False  # nothing detected yet
    gate.detected(scene)
    assert gate.still(noisy(scene, 1)) and gate.last_moved is not None and gate.last_moved < 0.005
    assert gate.still(noisy(scene, 2, gain=1.25, offset=-20.0))  # the exposure drifted
    assert not gate.still(passer_by(scene, 300))
    assert gate.last_moved > 0.05
    panned = cv2.warpAffine(scene, np.float32([[1, 0, 12], [0, 1, 0]]), (640, 360),
                            borderMode=cv2.BORDER_REFLECT101)
    assert not gate.still(panned)
    assert not gate.still(np.zeros((360, 480, 3), np.uint8))  # another size: never still
    with pytest.raises(ValueError, match=r"changed in \(0, 1\)"):
        MotionGate(0.0)


def test_the_thumbnail_is_small_and_normalised(scene):
    thumb = thumbnail(scene)
    assert thumb.shape == (180, 320) and thumb.dtype == np.float32
    assert abs(float(thumb.mean())) < 1e-3 and float(thumb.std()) == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(thumbnail(noisy(scene, 0, gain=0.8, offset=30.0)), thumb, atol=0.2)


class _Video(Source):
    kind, live = "video", False


def _skipped(stage: TrackStage, handle: SourceHandle, images: list[np.ndarray],
             start: int = 0) -> list[bool]:
    return [stage.skips_detection(FrameTask(handle, Frame(start + i, None), image=image))
            for i, image in enumerate(images)]


def test_still_frames_are_left_to_the_tracker_up_to_gate_max_every(scene):
    settings = TrackSettings()
    assert (settings.motion_gate, settings.gate_max_every) == (0.005, 10)
    stage, video = TrackStage(settings=settings), SourceHandle(_Video("door"))
    still = [noisy(scene, seed) for seed in range(12)]
    assert _skipped(stage, video, still) == [False] + [True] * 9 + [False, True]
    # a passer-by is detected at once, and the next frames are compared with that one
    moving = [passer_by(noisy(scene, 20 + i), 100 + 40 * i) for i in range(3)]
    assert _skipped(stage, video, moving, 12) == [False] * 3
    assert _skipped(stage, video, [moving[-1], noisy(scene, 30)], 15) == [True, False]
    off = TrackStage(settings=TrackSettings(motion_gate=0))
    assert _skipped(off, SourceHandle(_Video("door")), still[:4]) == [False] * 4
    every_frame = TrackStage(reuse=False)  # --reuse off: every frame detected and classified
    assert _skipped(every_frame, SourceHandle(_Video("door")), still[:4]) == [False] * 4


def test_gate_options_are_checked():
    assert parse_track_options(["motion_gate=0.01", "gate_max_every=5"]) == \
        {"motion_gate": 0.01, "gate_max_every": 5}
    with pytest.raises(ValueError, match=r"motion_gate in \[0, 1\)"):
        TrackSettings(motion_gate=1.0)
    with pytest.raises(ValueError, match="gate_max_every >= 1"):
        TrackSettings(gate_max_every=0)


class _Folder(Source):
    kind, live = "folder", False


def test_a_folders_next_video_drops_the_previous_videos_gate(scene):
    stage, folder = TrackStage(), SourceHandle(_Folder("archive"))
    for n in range(3):
        task = FrameTask(folder, Frame(0, None, uri=f"/archive/v{n}.avi"), image=scene)
        assert stage.skips_detection(task) is False
    assert list(stage._gates) == [("archive", "/archive/v2.avi")]
    assert list(stage._since_detected) == [("archive", "/archive/v2.avi")]


@pytest.fixture(scope="module", params=["mjpg", "h264"])
def fixed_camera_video(request, scene, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of a fixed camera at 10 fps: the scene with sensor noise, a passer-by crossing in
    frames 10-17; MJPG written by OpenCV, or that re-encoded by FFmpeg as H.264 (CRF 30, a key
    frame every 10: a codec's pulsing between key frames is not motion either)."""
    folder = tmp_path_factory.mktemp("fixed")
    path = folder / "door.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 360))
    assert writer.isOpened(), f"cv2.VideoWriter cannot write MJPG AVI to {path}"
    for i in range(30):
        frame = noisy(scene, i)
        writer.write(passer_by(frame, 80 * (i - 10)) if 10 <= i < 18 else frame)
    writer.release()
    if request.param == "mjpg":
        return path
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg (Debian package) not installed")
    encoded = folder / "door.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(path), "-c:v", "libx264",
                    "-crf", "30", "-g", "10", "-pix_fmt", "yuv420p", str(encoded)], check=True)
    return encoded


def _score(video: Path, out: Path, *flags: str) -> tuple[list[dict], dict]:
    from maskrt.cli import main as cli_main

    shared_engine()
    assert cli_main(["score", str(video), "--out", str(out), "--progress-interval", "0",
                     *flags]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accounting_ok"] is True
    return read_jsonl(out / "records.jsonl"), summary


def test_a_fixed_camera_is_detected_when_it_moves_and_tracked_in_between(fixed_camera_video,
                                                                         tmp_path):
    records, summary = _score(fixed_camera_video, tmp_path / "gated")
    assert summary["counts"]["scored"] == 30
    predicted = {r["frame_index"] for r in records if r.get("reason") == NOTE_STILL}
    frames = {r["frame_index"] for r in records}
    assert frames == set(range(30))
    # detected: the first frame, every passer-by frame, and one in gate_max_every (10)
    assert not predicted & {0, *range(10, 18)}
    assert len(predicted) >= 15
    assert all(r["track_id"] is not None for r in records
               if r.get("reason") == NOTE_STILL and r["region_index"] is not None)
    assert not any(r.get("reason") == NOTE_PREDICTED for r in records)  # files: detect_every 1
    everything, _ = _score(fixed_camera_video, tmp_path / "off",
                           "--track-option", "motion_gate=0")
    assert not any(r.get("reason") in (NOTE_STILL, NOTE_PREDICTED) for r in everything)
    people = {r["track_id"] for r in everything if r.get("track_id") is not None}
    assert people and {r["track_id"] for r in records if r.get("track_id")} <= people | {None}


def test_a_cut_then_a_still_view_keeps_the_new_scenes_people(tmp_path):
    """A fixed camera switched to another view (a cut), then still: the people of the new view
    are tracked from the cut on, through the still frames (which skip the camera-motion
    estimate: the cut it found on the frame before must not end their tracks again)."""
    views = [cv2.resize(image, (640, 360), interpolation=cv2.INTER_AREA)
             for image in scene_images(2)]
    path = tmp_path / "switched.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 360))
    assert writer.isOpened(), f"cv2.VideoWriter cannot write MJPG AVI to {path}"
    for i in range(20):
        writer.write(noisy(views[0 if i < 8 else 1], i))
    writer.release()
    records, _ = _score(path, tmp_path / "out")
    ids = {i: {r["track_id"] for r in records if r["frame_index"] == i and r.get("track_id")}
           for i in range(20)}
    still = {r["frame_index"] for r in records if r.get("reason") == NOTE_STILL}
    assert still >= set(range(9, 18)), sorted(still)  # detected: 0, the cut (8), then 18
    assert ids[8] and all(ids[i] == ids[8] for i in range(9, 18)), ids
    assert not ids[8] & ids[7]  # the cut ended the first view's people


def test_prometheus_counts_the_frames_the_gate_left_to_the_tracker(fixed_camera_video):
    """maskrt_predicted_frames_total{source,by}: the scored frames whose faces the tracker
    predicted, by why, scraped over real HTTP: the motion gate's equal the records saying so."""
    pytest.importorskip("prometheus_client", reason="pip install maskrt[metrics]")
    from maskrt.stream.metrics import PrometheusSink
    from maskrt.stream.pipeline import Pipeline
    from test_metrics_sinks import scrape

    sink = PrometheusSink(0, addr="127.0.0.1")
    pipeline = Pipeline(shared_engine(), [str(fixed_camera_video)], sinks=[sink])
    records = []
    with pipeline:
        for record in pipeline:
            records.append(record)
            if record.frame_index == 29 and record.frame_level:  # the last frame; not closed
                families = scrape(sink.port)
    source = str(fixed_camera_video)
    predicted = {l["by"]: v for l, v, n in families["maskrt_predicted_frames"]
                 if n == "maskrt_predicted_frames_total" and l["source"] == source}
    still = sum(r.frame_level and r.reason == NOTE_STILL for r in records)
    assert predicted == {"motion_gate": still, "cadence": 0.0} and still >= 15
