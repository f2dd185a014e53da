"""The face tracker (maskrt.track): the Kalman filter and ByteTracker's association, on
synthetic boxes."""

from __future__ import annotations

import numpy as np
import pytest

from maskrt.detect.base import box_iou
from maskrt.track.bytetrack import ByteTracker, Track, TrackerUpdate, assign
from maskrt.track.kalman import BoxKalman, to_cxcywh, to_xyxy
from maskrt.track.settings import TrackSettings

SIZE = 40.0


def box(cx: float, cy: float, size: float = SIZE) -> list[float]:
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def step(tracker: ByteTracker, frame: int, faces: list[list[float]],
         scores: list[float] | None = None) -> TrackerUpdate:
    """One update with ``faces`` (boxes) scored 0.9 unless told."""
    scores = [0.9] * len(faces) if scores is None else scores
    return tracker.update(np.array(faces, dtype=np.float64).reshape(-1, 4), np.array(scores),
                          frame)


def ids(update: TrackerUpdate) -> list[int | None]:
    return [t.track_id for t in update.tracks]


def test_two_faces_moving_steadily_keep_their_ids() -> None:
    tracker = ByteTracker()
    for frame in range(30):
        update = step(tracker, frame, [box(100 + 5 * frame, 100), box(400, 100 + 3 * frame)])
        assert ids(update) == [1, 2], frame  # the first frame confirms at once
        assert update.ended == []
        assert [t.state for t in update.tracks] == ["tracked", "tracked"]
    a = update.tracks[0]
    assert (a.hits, a.first_frame, a.last_frame) == (30, 0, 29)
    np.testing.assert_allclose(a.box, box(100 + 5 * 29, 100))
    assert [t.track_id for t in tracker.active] == [1, 2]


def crossing(tracker: ByteTracker) -> list[list[int | None]]:
    """Two faces in opposite directions at 12 px a frame, 6 px apart vertically; the ids of
    every frame. At frame 15 they are 12 px apart, so at frame 16 each face's detection lies
    exactly on the other's last box (IoU 0.74, against 0.54 with its own last box)."""
    return [ids(step(tracker, frame, [box(100 + 12 * frame, 100), box(472 - 12 * frame, 106)]))
            for frame in range(31)]


def test_crossing_faces_keep_their_ids_thanks_to_the_prediction() -> None:
    assert crossing(ByteTracker()) == [[1, 2]] * 31


def test_crossing_faces_swap_ids_without_the_prediction(monkeypatch: pytest.MonkeyPatch) -> None:
    # The control: a "filter" that puts each track where it was last seen follows the wrong face.
    def last_box(self: BoxKalman, mean: np.ndarray, cov: np.ndarray, boxes: np.ndarray):
        return np.concatenate([to_cxcywh(boxes), np.zeros((len(boxes), 4))], axis=1), cov

    monkeypatch.setattr(BoxKalman, "update", last_box)
    monkeypatch.setattr(BoxKalman, "predict", lambda self, mean, cov, steps=1: (mean, cov))
    assert crossing(ByteTracker())[16] == [2, 1]


def walker(settings: TrackSettings, start: int = 1) -> list[list[int | None]]:
    """A face of 24 px stepping in at frame ``start`` (after a first frame with another face,
    so it is not confirmed at once) and walking 20 px a frame: two frames of it overlap at IoU
    0.09, under every pass's least IoU until the track has learnt its velocity."""
    tracker = ByteTracker(settings)
    out = []
    for frame in range(12):
        faces = [box(600, 300)] + ([box(100 + 20 * (frame - start), 100, 24)]
                                   if frame >= start else [])
        out.append(ids(step(tracker, frame, faces)))
    return out


def test_a_small_fast_face_keeps_one_track_thanks_to_the_buffer() -> None:
    assert TrackSettings().buffer == 0.3
    assert walker(TrackSettings()) == [[1]] + [[1, None]] + [[1, 2]] * 10


def test_a_small_fast_face_is_never_confirmed_without_the_buffer() -> None:
    # The control: every frame starts a new tentative track, removed unmatched the next.
    assert walker(TrackSettings(buffer=0.0)) == [[1]] + [[1, None]] * 11
    with pytest.raises(ValueError, match="buffer >= 0"):
        TrackSettings(buffer=-0.1)


def test_a_missed_detection_keeps_the_id() -> None:
    tracker = ByteTracker()
    for frame in range(12):
        faces = [] if frame == 6 else [box(100 + 4 * frame, 100)]
        update = step(tracker, frame, faces)
        if frame == 6:
            assert update.tracks == [] and update.ended == []
            assert [t.state for t in tracker.active] == ["lost"]
        else:
            assert ids(update) == [1]


def occluded(tracker: ByteTracker, hidden: int) -> tuple[list[int | None], list[Track]]:
    """A face moving right, hidden for ``hidden`` frames from frame 10; its ids once back and
    every track ended."""
    ended: list[Track] = []
    back: list[int | None] = []
    for frame in range(10 + hidden + 5):
        visible = not 10 <= frame < 10 + hidden
        update = step(tracker, frame, [box(100 + 3 * frame, 200)] if visible else [])
        ended += update.ended
        if frame >= 10 + hidden:
            back += ids(update)
    return back, ended


def test_an_occlusion_within_max_lost_keeps_the_id() -> None:
    back, ended = occluded(ByteTracker(TrackSettings(max_lost=30)), hidden=10)
    assert back == [1] * 5 and ended == []


def test_an_occlusion_longer_than_max_lost_gives_a_new_id() -> None:
    back, ended = occluded(ByteTracker(TrackSettings(max_lost=5)), hidden=10)
    assert back == [None, 2, 2, 2, 2]  # tentative when it reappears, confirmed one frame later
    assert [(t.track_id, t.state, t.last_frame) for t in ended] == [(1, "removed", 9)]


def test_a_track_lasts_exactly_max_lost_missed_frames() -> None:
    back, _ = occluded(ByteTracker(TrackSettings(max_lost=5)), hidden=5)
    assert back[0] == 1
    back, _ = occluded(ByteTracker(TrackSettings(max_lost=5)), hidden=6)
    assert back[0] is None


def test_a_scene_cut_gives_new_ids_and_the_old_tracks_end_after_max_lost() -> None:
    tracker = ByteTracker(TrackSettings(max_lost=8))
    for frame in range(5):
        step(tracker, frame, [box(100, 100), box(300, 100)])
    ended_at = {}
    for frame in range(5, 20):
        update = step(tracker, frame, [box(150, 400), box(500, 400)])
        assert ids(update) == ([None, None] if frame == 5 else [3, 4]), frame
        ended_at.update({t.track_id: frame for t in update.ended})
    assert ended_at == {1: 4 + 8 + 1, 2: 4 + 8 + 1}  # last seen at 4, lost 8 frames
    assert [t.track_id for t in tracker.active] == [3, 4]


def test_a_face_seen_once_never_gets_an_id() -> None:
    tracker = ByteTracker()
    step(tracker, 0, [])  # not the first frame: that one confirms at once
    update = step(tracker, 1, [box(100, 100)])
    once = update.tracks[0]
    assert (once.track_id, once.state, once.confirmed) == (None, "tentative", False)
    assert tracker.active == []
    update = step(tracker, 2, [])
    assert update.ended == [once] and once.state == "removed" and once.track_id is None


def test_a_low_score_detection_continues_a_confirmed_track() -> None:
    tracker = ByteTracker()
    for frame in range(5):
        step(tracker, frame, [box(100 + 2 * frame, 100)])
    for frame in range(5, 10):
        update = step(tracker, frame, [box(100 + 2 * frame, 100)], scores=[0.3])
        assert ids(update) == [1] and update.tracks[0].score == 0.3
    assert update.tracks[0].best_score == 0.9


def test_a_low_score_detection_alone_is_never_confirmed() -> None:
    tracker = ByteTracker()
    keys = set()
    for frame in range(10):
        update = step(tracker, frame, [box(100 + 2 * frame, 100)], scores=[0.3])
        assert ids(update) == [None]
        keys.add(update.tracks[0].key)
    assert keys == {1} and update.tracks[0].hits == 10  # one tentative track, matched throughout
    # once it scores high it is confirmed: it has been matched in min_hits frames already
    assert ids(step(tracker, 10, [box(120, 100)], scores=[0.8])) == [1]


def test_a_steady_low_score_track_is_confirmed_after_steady_hits() -> None:
    tracker = ByteTracker(TrackSettings(steady_hits=6, steady_score=0.4))
    steady, weak = box(100, 100), box(400, 100)
    for frame in range(5):
        assert ids(step(tracker, frame, [steady, weak], scores=[0.45, 0.2])) == [None, None]
    update = step(tracker, 5, [steady, weak], scores=[0.35, 0.2])  # mean 0.433 over 6 frames
    assert ids(update) == [1, None] and update.tracks[0].state == "tracked"
    assert update.tracks[1].hits == 6  # a mean of 0.2 stays tentative however long it lasts
    for frame in range(6, 20):
        assert ids(step(tracker, frame, [steady, weak], scores=[0.45, 0.2])) == [1, None]


def test_a_steady_track_must_be_matched_in_a_row() -> None:
    tracker = ByteTracker(TrackSettings(steady_hits=4, steady_score=0.4))
    for frame in range(7):  # missed in frame 3: the tentative track ends there
        update = step(tracker, frame, [] if frame == 3 else [box(100, 100)],
                      scores=[] if frame == 3 else [0.6])
    assert ids(update) == [None] and update.tracks[0].hits == 3
    assert ids(step(tracker, 7, [box(100, 100)], scores=[0.6])) == [1]


def test_a_low_score_detection_does_not_revive_a_lost_track() -> None:
    tracker = ByteTracker()
    step(tracker, 0, [box(100, 100)])
    step(tracker, 1, [])
    update = step(tracker, 2, [box(100, 100)], scores=[0.3])
    assert ids(update) == [None] and update.tracks[0].key == 2


def test_a_steady_track_over_a_lost_one_revives_it() -> None:
    # A person back from an occlusion whose detections stay under high_score: one low
    # detection never revives the lost track (above), but steady_hits of them do, keeping the
    # id and the track object (its decision) instead of confirming a second person.
    tracker = ByteTracker(TrackSettings(steady_hits=3, steady_score=0.4))
    first = step(tracker, 0, [box(100, 100)]).tracks[0]
    step(tracker, 1, [box(102, 100)])
    for frame in range(2, 6):
        step(tracker, frame, [])
    assert first.state == "lost"
    seen = [step(tracker, frame, [box(110 + 2 * (frame - 6), 100)], scores=[0.5])
            for frame in range(6, 10)]
    assert [ids(u) for u in seen] == [[None], [None], [1], [1]]
    assert seen[2].tracks[0] is first and first.state == "tracked" and first.hits == 2 + 4
    assert [(t.track_id, t.state) for t in seen[2].ended] == [(None, "removed")]  # absorbed
    assert [t.track_id for t in tracker.active] == [1]
    # far from any lost track, the same steady detections are a new person
    assert ids(step(tracker, 10, [box(112, 100), box(400, 300)], scores=[0.5, 0.5])) == [1, None]
    step(tracker, 11, [box(114, 100), box(400, 300)], scores=[0.5, 0.5])
    assert ids(step(tracker, 12, [box(116, 100), box(400, 300)], scores=[0.5, 0.5])) == [1, 2]


def test_ids_follow_confirmation_order_and_are_never_reused() -> None:
    tracker = ByteTracker(TrackSettings(max_lost=2))
    a, b, c, d = box(100, 100), box(300, 100), box(500, 100), box(100, 400)
    assert ids(step(tracker, 0, [a])) == [1]
    assert ids(step(tracker, 1, [a, c])) == [1, None]
    # b appears after c but comes first among the detections: c is still confirmed first
    assert ids(step(tracker, 2, [a, b, c])) == [1, None, 2]
    assert ids(step(tracker, 3, [a, b, c])) == [1, 3, 2]
    for frame in range(4, 8):  # a leaves and ends
        step(tracker, frame, [b, c])
    assert ids(step(tracker, 8, [a, d])) == [None, None]
    assert ids(step(tracker, 9, [a, d])) == [4, 5]  # a comes back as a new person
    keys = [t.key for t in step(tracker, 10, [a, d]).tracks]
    assert len(set(keys)) == 2 and min(keys) > 3


def test_the_kalman_prediction_converges_on_constant_velocity() -> None:
    kalman = BoxKalman()
    velocity = np.array([7.0, -3.0, 8.0, -2.0])  # x0, y0, x1, y1 per frame: moving and growing
    start = np.array([[100.0, 200.0, 140.0, 250.0]])
    mean, cov = kalman.initiate(start)
    errors = []
    for frame in range(1, 61):
        mean, cov = kalman.predict(mean, cov)
        truth = start + frame * velocity
        errors.append(np.abs(to_xyxy(mean) - truth).max())
        mean, cov = kalman.update(mean, cov, truth)
    assert errors[0] == 8.0  # at first it knows no motion
    assert all(later <= earlier for earlier, later in zip(errors[2:], errors[3:]))
    assert errors[-1] < 0.01
    np.testing.assert_allclose(mean[0, 4:], [7.5, -2.5, 1.0, 1.0], atol=0.01)  # cx, cy, w, h


def test_the_kalman_filter_runs_many_tracks_at_once() -> None:
    kalman = BoxKalman()
    boxes = np.array([[0.0, 0.0, 10.0, 20.0], [50.0, 50.0, 90.0, 70.0], [5.0, 5.0, 6.0, 6.0]])
    mean, cov = kalman.initiate(boxes)
    mean, cov = kalman.predict(mean, cov, steps=3)
    together = kalman.update(mean, cov, boxes + 2.0)
    for i in range(3):
        alone = kalman.update(mean[i:i + 1], cov[i:i + 1], boxes[i:i + 1] + 2.0)
        np.testing.assert_allclose(together[0][i], alone[0][0])
        np.testing.assert_allclose(together[1][i], alone[1][0])
    assert np.allclose(cov, cov.transpose(0, 2, 1))


def test_a_frame_gap_predicts_as_many_steps() -> None:
    tracker = ByteTracker()
    for frame in range(40):  # long enough for the velocity to settle
        step(tracker, frame, [box(100 + 4 * frame, 100)])
    update = step(tracker, 45, [box(100 + 4 * 45, 100)])
    assert ids(update) == [1]
    np.testing.assert_allclose(update.tracks[0].predicted_box(), box(280, 100), atol=0.5)


def test_iou_and_the_assignment() -> None:
    a = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]])  # the second one empty
    b = np.array([[5.0, 0.0, 15.0, 10.0], [0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    np.testing.assert_allclose(box_iou(a, b), [[1 / 3, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert assign(np.zeros((0, 3)), 0.2) == [] and assign(np.zeros((2, 0)), 0.2) == []
    # optimal, not greedy: (0, 0) first would leave row 1 with IoU 0.1, below the least
    assert assign(np.array([[0.9, 0.8], [0.85, 0.1]]), 0.2) == [(0, 1), (1, 0)]
    assert assign(np.array([[0.5]]), 0.5) == [(0, 0)] and assign(np.array([[0.4999]]), 0.5) == []
    assert assign(np.array([[0.0]]), 0.0) == []  # boxes that do not overlap never match


@pytest.mark.parametrize("boxes, scores, expected", [
    (np.zeros((2, 5)), np.zeros(2), r"boxes: expected shape \[N, 4\], got \[2, 5\]"),
    (np.zeros(4), np.zeros(1), r"boxes: expected shape \[N, 4\], got \[4\]"),
    (np.zeros((2, 4)), np.zeros(3), r"scores: expected shape \[2\] .*, got \[3\]"),
    (np.full((1, 4), np.nan), np.zeros(1), r"expected finite .* got NaN"),
])
def test_bad_input_names_expected_and_got(boxes, scores, expected) -> None:
    with pytest.raises(ValueError, match=expected):
        ByteTracker().update(boxes, scores, 0)


def test_frame_indices_must_increase() -> None:
    tracker = ByteTracker()
    step(tracker, 5, [])
    with pytest.raises(ValueError, match=r"frame_index: expected > 5 .*, got 5"):
        step(tracker, 5, [])


def test_finish_ends_every_track() -> None:
    tracker = ByteTracker()
    step(tracker, 0, [box(100, 100)])
    step(tracker, 1, [box(100, 100), box(300, 300)])  # the second one still tentative
    step(tracker, 2, [box(100, 100), box(300, 300), box(500, 500)])
    ended = tracker.finish()
    assert [(t.track_id, t.state) for t in ended] == [(1, "removed"), (2, "removed"),
                                                      (None, "removed")]
    assert tracker.active == [] and tracker.finish() == []
    assert ids(step(tracker, 0, [box(100, 100)])) == [3]  # a new start: ids go on
