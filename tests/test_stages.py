"""The stage pipeline's seams: the bounded queue's policies, user stages (a detector that makes
regions, a filter, a failing stage), user sinks, and the device path through the torch backend
(the GPU code path, run on the CPU here)."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from maskrt.stream.pipeline import Pipeline
from maskrt.stream.queue import CLOSED, BoundedQueue, Policy
from maskrt.stream.sinks import Sink
from maskrt.stream.stages import Stage
from maskrt.stream.work import Region
from streaming_fixtures import run_pipeline, check_accounting, face_frames, shared_engine, write_video


# --------------------------------------------------------------------------- the queue

def test_block_policy_waits_for_room_and_abort_releases_the_producer() -> None:
    queue: BoundedQueue[int] = BoundedQueue(2, Policy.BLOCK)
    assert queue.put(1) and queue.put(2)
    outcome: list[bool] = []
    producer = threading.Thread(target=lambda: outcome.append(queue.put(3)))
    producer.start()
    time.sleep(0.1)
    assert producer.is_alive() and len(queue) == 2  # blocked: nothing lost, nothing added
    assert queue.get() == 1
    producer.join(2)
    assert outcome == [True] and len(queue) == 2
    blocked = threading.Thread(target=lambda: outcome.append(queue.put(4)))
    blocked.start()
    time.sleep(0.05)
    assert queue.abort() == [2, 3]
    blocked.join(2)
    assert outcome == [True, False] and queue.get() is CLOSED


def test_drop_oldest_policy_hands_the_dropped_item_to_the_accounting() -> None:
    dropped: list[tuple[int, str]] = []
    queue: BoundedQueue[int] = BoundedQueue(2, Policy.DROP_OLDEST,
                                            on_drop=lambda item, why: dropped.append((item, why)),
                                            drop_reason="full")
    for item in range(5):
        assert queue.put(item)
    assert dropped == [(0, "full"), (1, "full"), (2, "full")]
    queue.close()
    assert [queue.get(), queue.get(), queue.get()] == [3, 4, CLOSED]
    assert queue.get(timeout=0.01) is CLOSED and not queue.put(9) and queue.put(9, force=True)
    with pytest.raises(ValueError, match="dropping needs on_drop"):
        BoundedQueue(1, Policy.DROP_OLDEST)


def test_get_times_out_with_none() -> None:
    queue: BoundedQueue[int] = BoundedQueue(1)
    start = time.perf_counter()
    assert queue.get(timeout=0.05) is None and time.perf_counter() - start >= 0.04


# --------------------------------------------------------------------------- user stages

class HalvesDetector(Stage):
    """A stand-in detector: the left and right halves of every frame are its two 'faces'."""

    name = "halves"

    def process(self, task):
        h, w = task.image.shape[:2]
        task.regions = [Region((0, 0, w // 2, h), score=0.9), Region((w // 2, 0, w, h), score=0.8)]
        return task


class EveryOther(Stage):
    """A filter: odd frames go no further."""

    name = "every-other"
    closed = 0

    def process(self, task):
        return task if task.frame.index % 2 == 0 else None

    def close(self):
        self.closed += 1


class Faceless(Stage):
    """Frame 0 has nothing to score; frame 1 breaks the stage."""

    name = "faceless"

    def process(self, task):
        if task.frame.index == 1:
            raise RuntimeError("model file vanished")
        task.regions = [] if task.frame.index == 0 else task.regions
        return task


@pytest.fixture(scope="module")
def engine():
    return shared_engine()




def test_a_user_stage_splits_frames_into_regions_scored_like_their_crops(engine, tmp_path):
    video = write_video(tmp_path / "clip.avi", 6, size=(160, 120))
    records, counters = run_pipeline(Pipeline(engine, [str(video)], regions="frame", stages=[HalvesDetector()],
                                     batch_size=4, explain=True))
    by_source = check_accounting(records, counters)
    scored = by_source[str(video)]
    assert counters["total"]["scored"] == 6 and len(scored) == 12
    assert {tuple(r.box) for r in scored} == {(0, 0, 80, 120), (80, 0, 160, 120)}
    assert all(r.faces == 2 and r.face_score in (0.9, 0.8) for r in scored)
    # One overlay per frame, on its first record: the frame with each region's CAM in its box.
    assert all(r.overlay.shape == (120, 160, 3) for r in scored if r.region_index == 0)
    assert all(r.overlay is None for r in scored if r.region_index == 1)
    cap = cv2.VideoCapture(str(video))
    first = cap.read()[1]
    cap.release()
    left, right = engine.explain([first[:, :80], first[:, 80:]])
    got = sorted((r for r in scored if r.frame_index == 0), key=lambda r: r.region_index)
    assert got[0].p_with_mask == pytest.approx(left.p_with_mask, abs=1e-4)
    assert got[1].p_with_mask == pytest.approx(right.p_with_mask, abs=1e-4)
    inside = (slice(20, 80), slice(5, 75))  # away from the drawn boxes and labels
    frame_overlay = got[0].overlay
    assert np.abs(frame_overlay[:, :80][inside].astype(int)
                  - left.overlay[inside].astype(int)).max() <= 1
    assert np.abs(frame_overlay[:, 80:][inside].astype(int)
                  - right.overlay[inside].astype(int)).max() <= 1
    assert counters["mean_batch_size"] > 1  # regions of several frames share batches


def test_filters_drop_and_failing_stages_fail_only_their_frames(engine, tmp_path):
    video = write_video(tmp_path / "clip.avi", 6)
    every_other = EveryOther()
    records, counters = run_pipeline(Pipeline(engine, [str(video)], regions="frame",
                                     stages=[every_other, Faceless()]))
    assert every_other.closed == 1
    by_source = check_accounting(records, counters)
    by_index = {r.frame_index: r for r in by_source[str(video)]}
    assert [by_index[i].status for i in range(6)] == ["scored", "dropped", "scored", "dropped",
                                                      "scored", "dropped"]
    assert by_index[1].reason == "filtered by stage every-other"
    assert by_index[0].faces == 0 and by_index[0].label is None and by_index[0].box is None
    assert by_index[2].faces == 1 and by_index[2].box == [0, 0, 160, 120]
    faceless = Pipeline(engine, [str(video)], regions="frame", stages=[Faceless()])
    records, counters = run_pipeline(faceless)
    check_accounting(records, counters)
    failed = [r for r in records if r.status == "failed"]
    assert len(failed) == 1 and failed[0].frame_index == 1
    assert failed[0].reason == "faceless error: RuntimeError: model file vanished"


# --------------------------------------------------------------------------- user sinks

class FrameSizes(Sink):
    """A user sink: the size of each frame it is given, and when it was opened and closed."""

    needs_frames = True

    def __init__(self):
        self.events: list[str] = []
        self.sizes: list[tuple[int, int] | None] = []

    def open(self, pipeline):
        self.events.append("open")

    def write(self, record, frame):
        self.sizes.append(None if frame is None else frame.shape[:2])

    def close(self):
        self.events.append("close")
        return {"frame_sizes": len(self.sizes)}


def test_a_user_sink_gets_every_record_with_its_frame_and_joins_the_summary(engine, tmp_path):
    video = write_video(tmp_path / "clip.avi", 5, size=(96, 64))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    sink = FrameSizes()
    pipeline = Pipeline(engine, [str(video), str(tmp_path / "broken.jpg")], regions="frame",
                        sinks=[sink])
    summary = pipeline.run()
    assert sink.events == ["open", "close"]
    assert sink.sizes.count((64, 96)) == 5 and sink.sizes.count(None) == 1
    assert summary["outputs"] == {"frame_sizes": 6}
    assert summary["counts"] == {"read": 6, "scored": 5, "dropped": 0, "failed": 1}
    assert summary["accounting_ok"] and summary["sources"][str(video)]["kind"] == "video"
    assert sum(summary["labels"].values()) == 5


# --------------------------------------------------------------------------- the device path

@pytest.fixture(scope="module")
def torch_engine():
    pytest.importorskip("torch")
    from maskrt.engine import Engine

    with Engine(shared_engine().backend.graph, backend="torch", device="cpu") as ready:
        yield ready


@pytest.fixture(scope="module")
def fp32_engine(engine):
    """ONNX Runtime in FP32, the torch CPU backend's precision (the shared engine runs INT8)."""
    from maskrt.engine import Engine

    with Engine(engine.backend.graph, precision="fp32") as ready:
        yield ready


def test_torch_tensors_take_the_device_path_and_agree_with_numpy(torch_engine, fp32_engine):
    import torch

    engine = fp32_engine
    frames = face_frames(3, size=(120, 100))
    from_numpy = engine.explain(frames)
    from_tensors = torch_engine.explain([torch.from_numpy(f) for f in frames])
    batch = torch_engine.classify(torch.from_numpy(np.stack(frames)))
    for a, b, c in zip(from_numpy, from_tensors, batch):
        assert a.label == b.label == c.label
        assert a.p_with_mask == pytest.approx(b.p_with_mask, abs=1e-4)
        assert np.abs(a.overlay.astype(int) - b.overlay.astype(int)).max() <= 2
    assert torch_engine.input_device == torch.device("cpu") and engine.input_device is None


def test_the_pipeline_runs_torch_backends_on_device_tensors(torch_engine, fp32_engine, tmp_path):
    video = write_video(tmp_path / "clip.avi", 4)
    calls: list[str] = []
    infer = torch_engine.backend.infer

    def spy(images):
        calls.append(type(images).__module__)
        return infer(images)

    torch_engine.backend.infer = spy
    try:
        records, counters = run_pipeline(Pipeline(torch_engine, [str(video)], regions="frame", explain=True))
    finally:
        del torch_engine.backend.infer
    check_accounting(records, counters)
    assert calls and set(calls) == {"torch"}  # batches went to the backend as device tensors
    reference, _ = run_pipeline(Pipeline(fp32_engine, [str(video)], regions="frame", explain=True))
    for a, b in zip(sorted(records, key=lambda r: r.frame_index),
                    sorted(reference, key=lambda r: r.frame_index)):
        assert a.label == b.label and a.p_with_mask == pytest.approx(b.p_with_mask, abs=1e-4)
        assert isinstance(a.overlay, np.ndarray) and a.overlay.dtype == np.uint8
        assert np.abs(a.overlay.astype(int) - b.overlay.astype(int)).max() <= 2


def test_every_backend_shares_the_graphs_cam_weights(torch_engine, engine):
    assert torch_engine.backend.graph is engine.backend.graph
    assert torch_engine.backend.cam_weights is engine.backend.cam_weights


@pytest.mark.cuda
def test_on_a_gpu_frames_features_and_overlays_stay_on_the_device(cuda_device, engine, tmp_path):
    import torch

    from maskrt.engine import Engine

    frames = face_frames(3, size=(120, 100))
    reference = engine.explain(frames)
    with Engine(engine.backend.graph, backend="torch", device="cuda") as gpu:
        assert gpu.input_device == cuda_device
        results = gpu.explain([torch.from_numpy(f).to(cuda_device) for f in frames])
        for expected, got in zip(reference, results):
            assert got.overlay.is_cuda and tuple(got.overlay.shape) == (100, 120, 3)
            assert got.label == expected.label  # FP16 on the device, FP32 on the host
            assert got.p_with_mask == pytest.approx(expected.p_with_mask, abs=0.02)
            diff = np.abs(got.overlay.cpu().numpy().astype(int) - expected.overlay.astype(int))
            assert diff.mean() < 2.0
        video = write_video(tmp_path / "clip.avi", 6)
        records, counters = run_pipeline(Pipeline(gpu, [str(video)], regions="frame", explain=True,
                                         batch_size=4))
    check_accounting(records, counters)
    assert all(isinstance(r.overlay, np.ndarray) and r.overlay.dtype == np.uint8 for r in records)


def test_an_aging_live_frame_the_classifier_would_return_late_is_dropped_before_the_call():
    """At the backend's recent pace (seconds per region), a live frame that has waited half its
    max latency and would come back past it is dropped; a younger one never (a frame of many
    new faces would be dropped again and again), nor a file's, nor any before the first call."""
    from types import SimpleNamespace

    from maskrt.stream.batching import InferStage
    from maskrt.stream.sources.base import Frame
    from maskrt.stream.work import FrameTask

    def late(max_latency_s, age_s, faces, before, pace):
        f = Frame(0, None)
        f.t_read = 100.0 - age_s
        task = FrameTask(SimpleNamespace(max_latency_s=max_latency_s), f)
        task.regions = [Region((0, 0, 10, 10)) for _ in range(faces)]
        return task.would_end_late(pace, before, 100.0)

    stage = InferStage(None, batch_size=8, max_wait_s=0.02, ledger=None)
    assert stage.region_s is None and not late(1.0, 0.95, 4, 8, stage.region_s)  # no pace yet
    stage._count([], 4, 0.4)
    assert stage.region_s == pytest.approx(0.1)  # 0.1 s a region
    assert not late(1.0, 0.8, 1, 0, 0.1)  # back at 0.9 s
    assert late(1.0, 0.8, 1, 2, 0.1)  # after 2 others: 1.1 s
    assert late(1.0, 0.8, 0, 3, 0.1)  # its records wait for the call too
    assert not late(1.0, 0.4, 40, 0, 0.1)  # young: never
    assert not late(None, 50.0, 4, 8, 0.1)  # files never drop
    stage._count([], 2, 0.6)  # slower now: the average moves a fifth of the way
    assert stage.region_s == pytest.approx(0.8 * 0.1 + 0.2 * 0.3)
