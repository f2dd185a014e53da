"""The per-person decision, the reuse rule and the per-source tracks, on synthetic frames (no
model): which faces go to the classifier, what the records and events say."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from maskrt.stream.queue import BoundedQueue
from maskrt.track.decision import TrackDecision
from maskrt.track.settings import TrackSettings, check_track_mode, parse_track_options
from maskrt.track.source import DECISION, TRACK_ENDED, TRACK_STARTED, SourceTracks
from maskrt.stream.sources.base import Frame, Source
from maskrt.stream.work import (REASON_DEFERRED, REASON_NOT_CLASSIFIED, FrameTask, Region,
                                 SourceHandle, unclassified_reason)
from maskrt.track.stage import TrackStage


def result(p_without: float) -> SimpleNamespace:
    """What the engine decides for a face (only the fields tracking reads)."""
    probs = np.array([1.0 - p_without, p_without], np.float32)
    label = "without_mask" if p_without >= 0.5 else "with_mask"
    return SimpleNamespace(probabilities=probs, label=label, class_index=int(p_without >= 0.5))


def task(index: int, boxes: list[list[float]], scores: list[float] | None = None) -> SimpleNamespace:
    scores = scores or [0.9] * len(boxes)
    regions = [Region(tuple(int(v) for v in b), score=s) for b, s in zip(boxes, scores)]
    image = np.zeros((240, 320, 3), np.uint8)
    return SimpleNamespace(frame=SimpleNamespace(index=index, timestamp=index / 10.0),
                           regions=regions, tracks=None, image=image, reduction=None)


def test_new_track_is_classified_then_reused_until_reclassify_every():
    settings = TrackSettings(min_classified=2, reclassify_every=5, uncertain=0.2)
    decision = TrackDecision(settings)
    asked = []
    for frame in range(12):
        wants = decision.wants(frame, side=40)
        asked.append(wants)
        if wants:
            decision.requested_at(frame, 40)
            decision.add(result(0.05), 0.9, [0, 0, 40, 40], frame)
    # two to start, then every 5 frames after the last request
    assert [f for f, w in enumerate(asked) if w] == [0, 1, 6, 11]


def test_grown_box_and_uncertain_decision_are_reclassified():
    settings = TrackSettings(min_classified=1, reclassify_every=100, grow=1.25, uncertain=0.2)
    decision = TrackDecision(settings)
    decision.requested_at(0, 40)
    decision.add(result(0.02), 0.9, [0, 0, 40, 40], 0)
    assert not decision.wants(1, side=45)  # 1.125x: not clearly larger
    assert decision.wants(1, side=50)  # 1.25x: a better view
    uncertain = TrackDecision(settings)
    uncertain.requested_at(0, 40)
    uncertain.add(result(0.6), 0.9, [0, 0, 40, 40], 0)
    uncertain.settle(0)
    # p 0.6 is within 0.2 of 0.5, read settle_frames after it was asked for (whenever it came)
    assert not uncertain.wants(settings.settle_frames - 1, side=40)
    assert uncertain.wants(settings.settle_frames, side=40)


def uncertain_asks(settings: TrackSettings, frames: int) -> list[int]:
    """The frames a track whose every face comes back at p 0.55 is classified in (each result
    back at once)."""
    decision, asked = TrackDecision(settings), []
    for frame in range(frames):
        if decision.wants(frame, side=40):
            asked.append(frame)
            decision.requested_at(frame, 40)
            decision.add(result(0.55), 0.9, [0, 0, 40, 40], frame)
            decision.settle(frame)
    return asked


def test_an_uncertain_track_is_asked_again_less_and_less_often_with_a_backoff():
    plain = TrackSettings(reclassify_every=100, uncertain=0.2, settle_frames=2)
    assert uncertain_asks(plain, 20) == list(range(0, 20, 2))  # every settle_frames frames
    backoff = TrackSettings(reclassify_every=100, uncertain=0.2, settle_frames=2,
                            uncertain_backoff=2.0)
    assert uncertain_asks(backoff, 40) == [0, 2, 6, 14, 30]  # waits of 2, 4, 8, 16
    # another rule's request (here reclassify_every) starts the waits over
    again = TrackSettings(reclassify_every=10, uncertain=0.2, settle_frames=2,
                          uncertain_backoff=2.0)
    assert uncertain_asks(again, 31) == [0, 2, 6, 14, 24, 26, 30]
    with pytest.raises(ValueError, match="uncertain_backoff >= 1"):
        TrackSettings(uncertain_backoff=0.5)


def test_one_bad_frame_does_not_flip_the_decision():
    decision = TrackDecision(TrackSettings())
    for frame in range(5):
        decision.add(result(0.03), 0.9, [0, 0, 64, 64], frame)
    decision.add(result(0.99), 0.9, [0, 0, 64, 64], 5)
    assert decision.label == "with_mask" and decision.p_without_mask < 0.5
    # a small, doubtful face weighs less than a large, sure one
    small = TrackDecision(TrackSettings())
    small.add(result(0.9), 0.2, [0, 0, 8, 8], 0)
    small.add(result(0.2), 0.9, [0, 0, 64, 64], 1)
    assert small.label == "with_mask"


def test_source_tracks_reuse_and_events():
    tracks = SourceTracks("cam", None, TrackSettings(min_classified=1, reclassify_every=4,
                                                     max_lost=2), reuse=True)
    classified, events = [], []
    for frame in range(10):  # one face drifting right, seen in frames 0..6
        boxes = [[100 + 2 * frame, 50, 150 + 2 * frame, 110]] if frame <= 6 else []
        t = task(frame, boxes)
        tracks.assign(t)
        classified += [frame for r in t.regions if r.classify]
        results = [result(0.9) if r.classify else None for r in t.regions]
        events += tracks.resolve(t, results, [None] * len(results))
    assert classified == [0, 4]  # new, then reclassify_every
    kinds = [(e["event"], e["track_id"]) for e in events]
    assert kinds == [(TRACK_STARTED, 1), (DECISION, 1), (TRACK_ENDED, 1)]
    ended = events[-1]
    assert (ended["first_frame"], ended["last_frame"], ended["track_frames"]) == (0, 6, 7)
    assert ended["track_label"] == "without_mask" and ended["classified"] == 2


def test_reuse_off_classifies_every_face_and_low_unconfirmed_faces_are_left_out():
    every = SourceTracks("cam", None, TrackSettings(), reuse=False)
    lazy = SourceTracks("cam", None, TrackSettings(high_score=0.5), reuse=True)
    for frame in range(3):
        a, b = task(frame, [[10, 10, 60, 60], [200, 10, 240, 50]], [0.9, 0.2]), \
            task(frame, [[10, 10, 60, 60], [200, 10, 240, 50]], [0.9, 0.2])
        every.assign(a)
        lazy.assign(b)
        assert all(r.classify for r in a.regions)
        assert not b.regions[1].classify and b.regions[1].track_id is None


def test_cancelled_request_is_asked_again():
    tracks = SourceTracks("cam", None, TrackSettings(min_classified=1), reuse=True)
    first = task(0, [[10, 10, 60, 60]])
    tracks.assign(first)
    assert first.regions[0].classify
    first.tracks = tracks
    tracks.cancel(first)  # its frame was dropped before the classifier
    second = task(1, [[11, 10, 61, 60]])
    tracks.assign(second)
    assert second.regions[0].classify


def test_finish_ends_open_tracks_once():
    tracks = SourceTracks("cam", None, TrackSettings(), reuse=True)
    t = task(0, [[10, 10, 60, 60]])
    tracks.assign(t)
    tracks.resolve(t, [result(0.1)], [None])
    ended = tracks.finish()
    assert [e["event"] for e in ended] == [TRACK_ENDED]
    assert tracks.finish() == []


@pytest.mark.parametrize("scene_cut", [1, 0])
def test_a_scene_cut_ends_every_track(scene_cut: int):
    import cv2

    rng = np.random.default_rng(2)
    first, second = (cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), np.uint8), (5, 5), 0)
                     for _ in range(2))
    second = cv2.addWeighted(second, 0.5, np.full_like(second, 220), 0.5, 0)
    tracks = SourceTracks("cam", None, TrackSettings(scene_cut=scene_cut), reuse=True)
    ids, events = [], []
    for index, image in enumerate([first, first, first, second, second]):
        t = task(index, [[100, 80, 150, 140]])  # a face where another one was before the cut
        t.image = image
        tracks.assign(t)
        events += [(e["event"], e["track_id"], e["frame_index"])
                   for e in tracks.resolve(t, [result(0.1)], [None])]
        ids.append(t.regions[0].track_id)
    if scene_cut:
        assert ids == [1, 1, 1, 2, 2]
        assert events == [(TRACK_STARTED, 1, 0), (DECISION, 1, 0), (TRACK_STARTED, 2, 3),
                          (DECISION, 2, 3), (TRACK_ENDED, 1, 3)]
    else:
        assert ids == [1] * 5 and [e[0] for e in events] == [TRACK_STARTED, DECISION]


def test_track_options_parse_and_check():
    assert parse_track_options(["max_lost=12", "grow=1.5"]) == {"max_lost": 12, "grow": 1.5}
    with pytest.raises(ValueError, match="unknown|expected KEY=VALUE"):
        parse_track_options(["nonsense=1"])
    with pytest.raises(ValueError, match="max_lost: expected an integer"):
        parse_track_options(["max_lost=abc"])
    with pytest.raises(ValueError, match="low_score <= high_score"):
        TrackSettings(high_score=0.2, low_score=0.5)
    assert check_track_mode(True) == "on" and check_track_mode("auto") == "auto"
    with pytest.raises(ValueError, match="track: expected one of"):
        check_track_mode("sometimes")


def test_weighted_queue_counts_faces_not_frames():
    queue: BoundedQueue[list[int]] = BoundedQueue(8, weight=len, name="faces")
    assert queue.put([1] * 5) and queue.put([1] * 3)
    done = threading.Event()

    def producer() -> None:
        queue.put([1] * 2)  # 5 + 3 + 2 > 8: waits for room
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert not done.wait(0.2)
    assert queue.get() == [1] * 5
    assert done.wait(5)
    thread.join()
    # an item heavier than the whole capacity still goes into an empty queue
    big: BoundedQueue[list[int]] = BoundedQueue(4, weight=len)
    assert big.put([1] * 40) and len(big) == 1


def test_camera_motion_is_estimated_from_the_frames():
    import cv2

    from maskrt.track.motion import CameraMotion

    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.integers(0, 255, (720, 1280, 3), np.uint8), (5, 5), 0)
    truth = cv2.getRotationMatrix2D((640, 360), 1.5, 1.04)
    truth[:, 2] += (17.0, -9.0)
    moved = cv2.warpAffine(scene, truth, (1280, 720), borderMode=cv2.BORDER_REFLECT)
    motion = CameraMotion()
    assert motion.estimate(scene) is None  # the first frame: nothing to compare with
    affine = motion.estimate(moved)
    assert affine is not None
    corners = np.array([[100, 100, 1], [1180, 620, 1], [640, 360, 1]], np.float64)
    assert np.abs(corners @ affine.T - corners @ truth.T).max() < 1.5  # pixels
    assert not motion.cut
    # a cut to an unrelated frame (or a dark one) is no motion anyone can tell
    assert motion.estimate(np.zeros_like(scene)) is None
    assert motion.cut  # and the picture changed: a scene cut


def test_a_scene_cut_is_unknown_motion_and_a_changed_picture():
    import cv2

    from maskrt.track.motion import CameraMotion

    rng = np.random.default_rng(1)
    one, other = (cv2.GaussianBlur(rng.integers(0, 255, (360, 640, 3), np.uint8), (5, 5), 0)
                  for _ in range(2))
    other = cv2.addWeighted(other, 0.5, np.full_like(other, 200), 0.5, 0)  # another light
    motion = CameraMotion()
    motion.estimate(one)
    assert not motion.cut  # the first frame starts the source, not a new scene
    motion.estimate(np.roll(one, 5, axis=1))
    assert not motion.cut
    assert motion.estimate(other) is None and motion.cut
    # a blank view: no motion to tell, but the same picture frame after frame
    blank = np.full_like(one, 40)
    motion.estimate(blank)
    assert motion.cut
    assert motion.estimate(blank) is None and not motion.cut
    noisy = np.clip(blank + rng.integers(0, 3, blank.shape), 0, 255).astype(np.uint8)
    assert motion.estimate(noisy) is None and not motion.cut
    motion.estimate(cv2.resize(one, (320, 180)))
    assert motion.cut  # another frame size: the old boxes mean nothing there


def test_tracks_follow_a_panning_camera():
    from maskrt.track.bytetrack import ByteTracker

    tracker = ByteTracker(TrackSettings())
    pan = np.array([[1.0, 0.0, -30.0], [0.0, 1.0, 0.0]])  # 30 px a frame, faces 24 px wide
    ids = []
    for frame in range(8):
        boxes = np.array([[300 - 30 * frame, 100, 324 - 30 * frame, 130],
                          [500 - 30 * frame, 100, 524 - 30 * frame, 130]], np.float64)
        update = tracker.update(boxes, np.array([0.9, 0.9]), frame,
                                None if frame == 0 else pan)
        ids.append([t.track_id for t in update.tracks])
    assert ids == [[1, 2]] * 8
    without = ByteTracker(TrackSettings())
    for frame in range(3):
        boxes = np.array([[300 - 30 * frame, 100, 324 - 30 * frame, 130]], np.float64)
        last = without.update(boxes, np.array([0.9]), frame)
    assert last.tracks[0].track_id != 1  # without the camera's motion the face is lost


def test_frames_between_detections_take_the_predicted_faces():
    tracks = SourceTracks("cam", None, TrackSettings(detect_every=2, camera_motion=0),
                          reuse=True)
    for frame in range(8):  # a face moving 10 px a frame, detected in frames 0..7
        t = task(frame, [[100 + 10 * frame, 50, 140 + 10 * frame, 100]])
        tracks.assign(t)
        tracks.resolve(t, [result(0.1) if r.classify else None for r in t.regions], [None])
    coasted = task(8, [])
    tracks.coast(coasted)
    (region,) = coasted.regions
    assert region.track_id == 1 and not region.classify
    # where it went (180, 220), not where it was last seen (170, 210)
    assert abs(region.box[0] - 180) <= 4 and abs(region.box[2] - 220) <= 4, region.box
    assert "predicted" in coasted.note
    events = tracks.resolve(coasted, [None], [None])
    assert events == [] and region.track.data.frames == 9


def test_live_frames_give_way_to_newer_ones_before_the_detector_and_when_aging_after():
    from maskrt.stream.sources.base import Frame
    from maskrt.stream.work import FrameTask

    camera = SimpleNamespace(max_latency_s=1.0)
    other = SimpleNamespace(max_latency_s=1.0)
    video = SimpleNamespace(max_latency_s=None)

    def frame(handle, t_read: float) -> FrameTask:
        f = Frame(0, None)
        f.t_read = t_read
        return FrameTask(handle, f)

    old, new = frame(camera, 10.0), frame(camera, 10.2)
    assert new.replaces(old)  # in front of the detector: the newest frame only
    assert not new.supersedes(old)  # after it: 0.2 s is a burst, not a backlog
    assert frame(camera, 10.6).supersedes(old)  # half the 1 s limit spent waiting
    assert not frame(other, 10.6).supersedes(old) and not frame(other, 10.6).replaces(old)
    assert not frame(video, 99.0).replaces(frame(video, 0.0))  # files never drop
    queue: BoundedQueue[FrameTask] = BoundedQueue(4, supersede=FrameTask.replaces,
                                                  on_drop=lambda t, why: dropped.append(t),
                                                  drop_reason="superseded")
    dropped: list[FrameTask] = []
    queue.put(old)
    queue.put(frame(other, 10.1))
    queue.put(new)
    assert dropped == [old] and len(queue) == 2



@pytest.mark.parametrize("mode, reuse, options, cheap", [
    ("auto", True, {}, True), ("on", True, {}, True), ("off", True, {}, False),
    ("auto", False, {}, False), ("auto", True, {"live_lag_ms": 0}, False),
    ("auto", True, {"live_max_every": 1}, False)])
def test_late_live_frames_are_kept_in_front_of_the_detector_only_when_predicting_them_is_cheap(
        mode, reuse, options, cheap):
    """A live frame the machine is behind on waits for the detector (and is then left to the
    tracker) only where the tracker predicts it and its classifications are capped; otherwise
    its camera's newer frame replaces it at once (an untracked frame would cost a detection)."""
    stage = TrackStage(mode, reuse, TrackSettings().with_options(options))
    assert stage.predicts_late_live_frames is cheap


def test_the_pipeline_keeps_a_tracked_live_frame_until_it_ages():
    from maskrt.stream.pipeline import Pipeline
    from streaming_fixtures import shared_engine

    def rule(**kwargs):
        pipeline = Pipeline(shared_engine(), [], **kwargs)
        return pipeline.tracking.before_detector(pipeline._chain)

    assert rule() == FrameTask.supersedes
    assert rule(track="off") == FrameTask.replaces
    assert rule(reuse=False) == FrameTask.replaces
    assert rule(regions="frame") == FrameTask.replaces  # no detector to skip

class _Camera(Source):
    kind, live = "camera", True


class _Video(Source):
    kind, live = "video", False


def test_live_sources_detect_every_second_frame_even_when_frames_are_dropped():
    """live_detect_every (2): counted in the frames that arrive, so a camera whose even frames
    were all dropped is still detected on every second frame that arrives (by index modulo 2,
    never); a video (detect_every 1) is detected on every frame."""
    stage = TrackStage(settings=TrackSettings())
    camera, dropping = SourceHandle(_Camera("cam")), SourceHandle(_Camera("cam2"))
    video = SourceHandle(_Video("clip"))

    def skipped(handle, indices):  # fresh frames: read just now
        return [stage.skips_detection(FrameTask(handle, Frame(i, 0.0, t_read=time.perf_counter())))
                for i in indices]

    assert skipped(camera, [0, 1, 2, 3, 4]) == [False, True, False, True, False]
    assert skipped(dropping, [1, 3, 5, 7]) == [False, True, False, True]  # the even ones dropped
    assert skipped(video, [0, 1, 2, 3]) == [False] * 4
    with pytest.raises(ValueError, match="live_detect_every >= 1"):
        TrackSettings(live_detect_every=0)


def test_a_live_source_behind_its_frames_is_detected_less_often_up_to_live_max_every():
    """A live frame that waited longer than live_lag_ms before the face stage is left to the
    tracker up to live_max_every (6) frames after the last detected one; fresh frames go back to
    live_detect_every (2); files never lag-skip; live_lag_ms=0 turns it off."""
    def skipped(stage, handle, ages_ms):
        now = time.perf_counter()
        return [stage.skips_detection(FrameTask(handle, Frame(i, 0.0, t_read=now - age / 1000.0)))
                for i, age in enumerate(ages_ms)]

    defaults = TrackSettings()
    assert (defaults.live_lag_ms, defaults.live_max_every) == (150.0, 6)
    stage = TrackStage(settings=defaults)
    late, fresh = 900.0, 0.0
    camera, video = SourceHandle(_Camera("cam")), SourceHandle(_Video("clip"))
    assert skipped(stage, camera, [late] * 13) == [False] + [True] * 5 + [False] + [True] * 5 + [False]
    assert skipped(stage, camera, [fresh] * 4) == [True, False, True, False]
    assert skipped(stage, video, [late] * 4) == [False] * 4
    off = TrackStage(settings=TrackSettings(live_lag_ms=0))
    assert skipped(off, SourceHandle(_Camera("cam3")), [late] * 4) == [False, True, False, True]
    with pytest.raises(ValueError, match="live_lag_ms >= 0"):
        TrackSettings(live_lag_ms=-1)
    with pytest.raises(ValueError, match="live_max_every >= 1"):
        TrackSettings(live_max_every=0)


def test_a_capped_frame_classifies_new_tracks_first_then_the_largest_and_defers_the_rest():
    """classify_max (a lagging live frame's live_classify_max): five new people, two a frame
    go to the classifier, the largest first; the others are deferred and asked for again in
    the next frames, new tracks before reclassifications."""
    tracks = SourceTracks("cam", None, TrackSettings(reclassify_every=2), reuse=True)
    sides = [20, 40, 25, 35, 30]
    boxes = [[10 + 50 * i, 10, 10 + 50 * i + s, 10 + s] for i, s in enumerate(sides)]
    asked, deferred = [], []
    for frame in range(4):
        t = task(frame, boxes)
        tracks.assign(t, classify_max=2)
        asked.append(sorted(r.box[2] - r.box[0] for r in t.regions if r.classify))
        deferred.append(sorted(r.box[2] - r.box[0] for r in t.regions if r.deferred))
        results = [result(0.1) if r.classify else None for r in t.regions]
        tracks.resolve(t, results, [None] * len(results))
    # frame 2: the last new one, then the largest of the two due again (reclassify_every 2
    # after frame 0); frame 3: the one deferred and the two classified in frame 1 are due
    assert asked == [[35, 40], [25, 30], [20, 40], [30, 35]]
    assert deferred == [[20, 25, 30], [20], [35], [25]]
    for uncapped, cap in ((SourceTracks("cam", None, TrackSettings(), reuse=True), None),
                          (SourceTracks("cam", None, TrackSettings(), reuse=False), 2)):
        t = task(0, boxes)  # no cap, or reuse off: every face, every frame
        uncapped.assign(t, classify_max=cap)
        assert all(r.classify and not r.deferred for r in t.regions)
    # a deferred face's record says why it has no label (not "an unconfirmed detection")
    fresh = TrackDecision(TrackSettings())
    assert unclassified_reason(Region((0, 0, 20, 20), deferred=True), fresh) == REASON_DEFERRED
    assert unclassified_reason(Region((0, 0, 20, 20)), fresh) == REASON_NOT_CLASSIFIED


def test_live_frames_are_capped_lagging_ones_most():
    """live_classify_max (2) applies to live frames read longer than live_lag_ms ago,
    live_classify_fresh (4) to the others (a scene cut's first frame is fresh); files are never
    capped; 0 turns either off."""
    def cap(stage, handle, age_ms):
        frame = Frame(0, 0.0, t_read=time.perf_counter() - age_ms / 1000.0)
        return stage._classify_max(FrameTask(handle, frame))

    stage = TrackStage(settings=TrackSettings())
    camera, video = SourceHandle(_Camera("cam")), SourceHandle(_Video("clip"))
    assert (TrackSettings().live_classify_max, TrackSettings().live_classify_fresh) == (2, 4)
    assert cap(stage, camera, 900.0) == 2
    assert cap(stage, camera, 0.0) == 4
    assert cap(stage, video, 900.0) is None and cap(stage, video, 0.0) is None
    assert cap(TrackStage(settings=TrackSettings(live_classify_max=0)), camera, 900.0) is None
    assert cap(TrackStage(settings=TrackSettings(live_classify_fresh=0)), camera, 0.0) is None
    for name in ("live_classify_max", "live_classify_fresh"):
        with pytest.raises(ValueError, match=f"{name} >= 0"):
            TrackSettings(**{name: -1})
