"""The detector's scale chosen per frame (upscale="auto"): the rule on synthetic probes, the same
faces found in a photo and in its enlarged copy, one probe per ``probe_every`` frames of a video,
and the option's parsing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from maskrt.detect import face_stage, parse_face_options, preset_settings, scale_rule
from maskrt.detect.base import Detections
from maskrt.detect.scale import ScaleRule, SequenceScale, same_scale
from maskrt.detect.stage import FaceStage
from maskrt.detect.yunet import YuNetDetector
from maskrt.stream.pipeline import Pipeline
from streaming_fixtures import check_accounting, run_pipeline, shared_engine
from test_faces import annotated_boxes, recall_at_half_iou, scene_paths


def probe_of(sides: list[float], scores: list[float]) -> Detections:
    boxes = np.array([[10.0, 10.0, 10.0 + s, 10.0 + s] for s in sides], np.float32).reshape(-1, 4)
    return Detections(boxes, np.array(scores, np.float32), np.zeros((len(sides), 5, 2), np.float32),
                      len(sides))


def test_the_rule_brings_the_small_confident_faces_to_the_target_size():
    rule = ScaleRule(face_target=32.0, quantile=0.0, min_scale=0.5, max_scale=2.5)
    assert rule.choose(probe_of([16.0, 64.0], [0.9, 0.9])) == pytest.approx(2.0)
    # a face under probe_score does not count: the confident 64 px face sets the scale
    assert rule.choose(probe_of([8.0, 64.0], [0.3, 0.9])) == pytest.approx(0.5)
    assert rule.choose(probe_of([400.0], [0.9])) == 0.5  # clamped to min_scale
    assert rule.choose(probe_of([4.0], [0.9])) == 2.5  # and to max_scale
    assert rule.choose(probe_of([], [])) == 2.5  # nothing sure: small faces or none
    assert rule.probe_scale((280, 400, 3)) == 1.0  # never enlarged
    assert rule.probe_scale((720, 1280, 3)) == pytest.approx(0.5)
    assert same_scale(1.0, 1.2) and not same_scale(1.0, 1.3)
    with pytest.raises(ValueError, match="expected face_target > 0"):
        ScaleRule(face_target=0.0)


def test_a_video_frame_is_not_detected_below_the_sequence_floor():
    # the probe of a camera frame: a close-up (confident) and far faces it is unsure of
    probe = probe_of([200.0, 14.0, 12.0], [0.95, 0.3, 0.2])
    rule = ScaleRule(face_target=40.0, quantile=0.0, min_scale=0.5, max_scale=2.5,
                     sequence_min_scale=1.0)
    assert rule.choose(probe) == 0.5  # a photo: the close-up sets the scale
    assert rule.choose(probe, sequence=True) == 1.0  # a video keeps its far faces' pixels
    assert rule.choose(probe_of([16.0], [0.9]), sequence=True) == pytest.approx(2.5)
    # the floor never passes max_scale, and min_scale still holds where it is higher
    assert ScaleRule(max_scale=0.8, min_scale=0.5).choose(probe, sequence=True) == 0.8
    assert ScaleRule(min_scale=1.5).choose(probe, sequence=True) == 1.5
    with pytest.raises(ValueError, match="sequence_min_scale > 0"):
        ScaleRule(sequence_min_scale=0.0)
    assert parse_face_options(["sequence_min_scale=0.5"]) == {"sequence_min_scale": 0.5}
    sequence = SequenceScale(rule)  # a probe chosen elsewhere (a served one) is floored too
    sequence.probed(0.5)
    assert sequence.scale == 1.0


def test_a_sequence_probes_its_first_frame_then_every_probe_every_frames_and_moves_slowly():
    sequence = SequenceScale(ScaleRule(probe_every=3, smoothing=0.5, sequence_min_scale=0.5))
    assert sequence.due()
    sequence.probed(2.0)
    assert sequence.scale == 2.0
    for _ in range(3):
        assert not sequence.due()
        sequence.step()
    assert sequence.due()
    sequence.probed(0.5)
    assert sequence.scale == pytest.approx(math.sqrt(2.0 * 0.5))  # geometric mean


def test_a_new_scene_is_probed_at_once_and_takes_its_scale_unsmoothed():
    first, second = (cv2.imread(str(p)) for p in scene_paths(2))
    sequence = SequenceScale(ScaleRule(probe_every=30, probe_cut=0.8, smoothing=0.5,
                                       sequence_min_scale=0.5))
    assert not sequence.new_scene(first)  # nothing to compare with yet
    sequence.probed(2.0)
    # the same shot, the camera moved a little and the light dimmed: not a new scene
    assert not sequence.new_scene(np.roll(first, 7, axis=1))
    assert not sequence.new_scene(cv2.convertScaleAbs(np.roll(first, 9, axis=0), alpha=0.9))
    sequence.step()
    assert not sequence.due()
    assert sequence.new_scene(second)  # another photo: probe now
    sequence.probed(0.5, restart=True)
    assert sequence.scale == 0.5  # not the geometric mean with the previous shot's 2.0
    sequence.probed(2.0)
    assert sequence.scale == pytest.approx(1.0)  # within a shot: smoothed as before
    off = SequenceScale(ScaleRule(probe_cut=0.0))
    off.probed(1.0)
    assert not off.new_scene(first) and not off.new_scene(second)
    with pytest.raises(ValueError, match=r"probe_cut in \[0, 1\]"):
        ScaleRule(probe_cut=1.5)
    assert parse_face_options(["probe_cut=0.5"]) == {"probe_cut": 0.5}


@pytest.fixture(scope="module")
def auto_stage():
    stage = face_stage("default", upscale="auto")
    yield stage
    stage.close()


def test_a_photo_and_its_enlarged_copy_give_the_same_faces(auto_stage):
    """What a fixed 2x upscale cannot do: a 3x copy of a scene photo is detected at a third of
    the scale, so its faces are found as in the original (within resampling)."""
    paths = scene_paths(12)
    images = [cv2.imread(str(p)) for p in paths]
    large = [cv2.resize(im, None, fx=3.0, fy=3.0, interpolation=cv2.INTER_LINEAR) for im in images]
    truth = [annotated_boxes(p) for p in paths]
    total = sum(len(t) for t in truth)
    small_found = auto_stage.detect(images)
    large_found = auto_stage.detect(large)
    small = sum(recall_at_half_iou(t, f.boxes) for t, f in zip(truth, small_found)) / total
    large_recall = sum(recall_at_half_iou(t * 3.0, f.boxes) for t, f in zip(truth, large_found))
    assert small > 0.8, small
    assert abs(large_recall / total - small) < 0.05, (small, large_recall / total)
    fixed = YuNetDetector(upscale=2.0, score_threshold=0.1, max_side=8192)
    fixed_recall = sum(recall_at_half_iou(t * 3.0, f.boxes)
                       for t, f in zip(truth, fixed.detect(large))) / total
    assert large_recall / total > fixed_recall, "the rule should beat 2x on large photos"


class CountingDetector(YuNetDetector):
    """The real detector, counting the frames it detects at each scale."""

    def __init__(self) -> None:
        super().__init__(score_threshold=0.1)
        self.frames_at: dict[float, int] = {}

    def detect(self, frames, scales=None):  # type: ignore[no-untyped-def]
        for scale in scales or [self.upscale] * len(frames):
            self.frames_at[scale] = self.frames_at.get(scale, 0) + 1
        return super().detect(frames, scales)


def test_a_video_is_probed_on_its_first_frame_and_every_probe_every_frames(tmp_path):
    image = cv2.imread(str(scene_paths(1)[0]))  # about 400 px wide: probed at 200/400
    path = tmp_path / "people.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10,
                             (image.shape[1], image.shape[0]))
    for k in range(12):
        writer.write(np.roll(image, 3 * k, axis=1))
    writer.release()
    detector = CountingDetector()
    # probes at 0.5, the rule always chooses 1.5 (min_scale = max_scale): two passes per probe
    stage = FaceStage(detector, scale_rule=ScaleRule(probe_side=200, min_scale=1.5,
                                                     max_scale=1.5, probe_every=5))
    probe_scale = stage.scale_rule.probe_scale(image.shape)
    records, counters = run_pipeline(Pipeline(shared_engine(), [str(path)], stages=[stage],
                                              regions="frame", track="off"))
    check_accounting(records, counters)
    assert counters["total"]["scored"] == 12
    # every frame detected once at the source's scale; probes on frames 0 and 6 (5 frames at
    # the source's scale between them) however the frames batched
    assert detector.frames_at[1.5] == 12, detector.frames_at
    assert detector.frames_at[probe_scale] == 2, detector.frames_at


def test_a_video_cut_to_another_shot_is_probed_at_the_cut(tmp_path):
    first, second = (cv2.imread(str(p)) for p in scene_paths(2))
    size = (first.shape[1], first.shape[0])
    path = tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for k in range(12):  # six frames of one shot, then six of another
        writer.write(np.roll(first, 3 * k, axis=1) if k < 6 else
                     np.roll(cv2.resize(second, size), 3 * k, axis=1))
    writer.release()
    probes = {}
    for probe_cut in (0.8, 0.0):
        detector = CountingDetector()
        stage = FaceStage(detector, scale_rule=ScaleRule(probe_side=200, min_scale=1.5,
                                                         max_scale=1.5, probe_every=30,
                                                         probe_cut=probe_cut))
        records, counters = run_pipeline(Pipeline(shared_engine(), [str(path)], stages=[stage],
                                                  regions="frame", track="off"))
        check_accounting(records, counters)
        assert detector.frames_at[1.5] == 12, detector.frames_at
        probes[probe_cut] = detector.frames_at[stage.scale_rule.probe_scale(first.shape)]
    assert probes == {0.8: 2, 0.0: 1}  # frames 0 and 6; off: frame 0 only


class FrameDependentDetector:
    """A stand-in detector that logs (source, frame, scale) of every frame it detects and finds
    one confident face whose size depends on the frame (its first pixel says which), so that
    each probe moves its source's scale."""

    name = "frame-dependent"

    def __init__(self) -> None:
        self.log: list[tuple[int, int, float]] = []

    def detect(self, frames, scales):  # type: ignore[no-untyped-def]
        out = []
        for frame, scale in zip(frames, scales):
            source, index = int(frame[0, 0, 0]), int(frame[0, 0, 1])
            self.log.append((source, index, round(scale, 6)))
            side = 12.0 + 7.0 * (index % 5) + 5.0 * source
            out.append(Detections(np.array([[50.0, 50.0, 50.0 + side, 50.0 + side]], np.float32),
                                  np.array([0.9], np.float32), np.zeros((1, 5, 2), np.float32), 1))
        return out

    def close(self) -> None:
        pass


def detections_of(batches: list[list[tuple[int, int]]],
                  bright: frozenset[int] = frozenset()) -> list[tuple[int, int, float]]:
    """What FrameDependentDetector was asked, frame by frame, when a face stage detects
    ``batches`` of (source, frame index) of two videos, in this order."""
    detector = FrameDependentDetector()
    stage = FaceStage(detector, scale_rule=ScaleRule(  # type: ignore[arg-type]
        face_target=40.0, quantile=0.0, min_scale=0.5, max_scale=3.0, sequence_min_scale=0.5,
        probe_every=3, large_side=0.0))
    for batch in batches:
        tasks = []
        for source, index in batch:
            image = np.full((360, 640, 3), 180 if index in bright else 0, np.uint8)
            image[0, 0] = (source, index, 0)  # another shot where ``bright`` changes
            tasks.append(SimpleNamespace(image=image, sequence_key=(f"cam{source}", None)))
        stage._detect(tasks)  # type: ignore[arg-type]
    return sorted(detector.log)


def test_how_frames_batch_does_not_change_the_scale_any_frame_is_detected_at():
    frames = [(source, index) for index in range(14) for source in (0, 1)]
    one_by_one = detections_of([[f] for f in frames])
    probes = [(s, k) for s, k, scale in one_by_one if scale == 1.0]  # 640x360: probed as it is
    assert [k for s, k in probes if s == 0] == [0, 4, 8, 12], probes  # every 3 frames after
    rng = np.random.default_rng(3)
    for _ in range(5):  # batches of 1-9 frames: a source due twice in one batch too
        cuts = np.sort(rng.choice(np.arange(1, len(frames)), size=5, replace=False))
        batches = [list(part) for part in np.split(np.array(frames), cuts)]
        assert detections_of([[tuple(int(v) for v in f) for f in b] for b in batches]) \
            == one_by_one, [len(b) for b in batches]


def test_how_frames_batch_does_not_change_where_a_new_shot_is_probed():
    """Cuts (the picture changes from dark to bright and back) at frames 2, 5 and 8: probed
    there, also the one among the first batch's frames, planned before any probe has set the
    source's scale, however the frames batch."""
    frames = [(source, index) for index in range(14) for source in (0, 1)]
    bright = frozenset({2, 3, 4, 8, 9, 10, 11, 12, 13})
    one_by_one = detections_of([[f] for f in frames], bright)
    # probes are the passes at 1.0 (640x360 as it is); no chosen scale of source 0 is 1.0 here
    probes = [k for s, k, scale in one_by_one if s == 0 and scale == 1.0]
    assert probes == [0, 2, 5, 8, 12], probes  # the cuts, and every 3 frames after a probe
    rng = np.random.default_rng(5)
    for _ in range(5):
        cuts = np.sort(rng.choice(np.arange(1, len(frames)), size=4, replace=False))
        batches = [list(part) for part in np.split(np.array(frames), cuts)]
        assert detections_of([[tuple(int(v) for v in f) for f in b] for b in batches],
                             bright) == one_by_one, [len(b) for b in batches]
    assert detections_of([frames[:8], frames[8:]], bright) == one_by_one  # frame 2 in batch 1


#: what ScaleDependentDetector finds: a small face, and a large one framed well at the probe's
#: scale and badly when enlarged past what YuNet frames well
SMALL_FACE = [40.0, 40.0, 60.0, 60.0]
LARGE_WELL, LARGE_BADLY = [200.0, 100.0, 500.0, 400.0], [230.0, 60.0, 520.0, 420.0]


class ScaleDependentDetector:
    """A stand-in detector whose answer depends on the scale only (frames of any content)."""

    name = "scale-dependent"

    def __init__(self) -> None:
        self.frames_at: dict[float, int] = {}

    def detect(self, frames, scales):  # type: ignore[no-untyped-def]
        out = []
        for scale in scales:
            self.frames_at[round(scale, 3)] = self.frames_at.get(round(scale, 3), 0) + 1
            large = LARGE_BADLY if scale >= 1.0 else LARGE_WELL
            out.append(Detections(np.array([large, SMALL_FACE], np.float32),
                                  np.array([0.95, 0.9], np.float32),
                                  np.zeros((2, 5, 2), np.float32), 2))
        return out

    def close(self) -> None:
        pass


def test_large_faces_come_from_the_probe_when_the_chosen_scale_would_enlarge_them_too_much():
    rule = ScaleRule(face_target=40.0, quantile=0.0, min_scale=0.5, max_scale=2.0,
                     probe_side=640, large_side=160.0)
    frame = np.zeros((720, 1280, 3), np.uint8)  # probed at 0.5; the 20 px face asks for 2x
    found = rule.detect(ScaleDependentDetector(), [frame], chosen := [], large := [])[0]
    assert chosen == [2.0] and large == [1]  # 300 px at 2x would be 600 px: from the probe
    np.testing.assert_allclose(found.boxes, [LARGE_WELL, SMALL_FACE])  # best first
    assert found.found == 2
    off = ScaleRule(face_target=40.0, quantile=0.0, min_scale=0.5, max_scale=2.0,
                    probe_side=640, large_side=0.0).detect(ScaleDependentDetector(), [frame])[0]
    np.testing.assert_allclose(off.boxes, [LARGE_BADLY, SMALL_FACE])  # large_side 0: as before
    assert len(rule.large(found, 0.5, 0.5)) == 0  # at the probe's own scale nothing is large
    with pytest.raises(ValueError, match="large_side >= 0"):
        ScaleRule(large_side=-1.0)


def test_a_source_whose_probe_found_large_faces_keeps_them_on_every_frame(tmp_path):
    path = tmp_path / "camera.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (1280, 720))
    rng = np.random.default_rng(0)
    for _ in range(7):
        writer.write(rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8))
    writer.release()
    detector = ScaleDependentDetector()
    stage = FaceStage(detector, scale_rule=ScaleRule(  # type: ignore[arg-type]
        face_target=40.0, quantile=0.0, max_scale=2.0, probe_every=30, large_side=160.0))
    records, counters = run_pipeline(Pipeline(shared_engine(), [str(path)], stages=[stage],
                                              regions="frame", track="off"))
    check_accounting(records, counters)
    assert counters["total"]["scored"] == 7
    for frame in range(7):
        boxes = sorted(list(r.box) for r in records if r.frame_index == frame and r.box)
        assert boxes == sorted([[int(v) for v in LARGE_WELL], [int(v) for v in SMALL_FACE]]), boxes
    # one probe; then every frame once at the source's scale and once at the probe's
    assert detector.frames_at == {0.5: 7, 2.0: 7}, detector.frames_at


def test_upscale_takes_a_number_or_auto():
    assert parse_face_options(["upscale=auto", "max_scale=3"]) == {"upscale": "auto",
                                                                     "max_scale": 3.0}
    with pytest.raises(ValueError, match="upscale: expected a number or auto, got 'big'"):
        parse_face_options(["upscale=big"])
    assert scale_rule(preset_settings("default", upscale=1.5)) is None
