"""The streaming pipeline end to end on real media: videos written with OpenCV, bad files on
disk, a real HTTP MJPEG server process and a real GStreamer RTSP server process on loopback,
killed and restarted. The accounting identity is checked after every run."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import functools

from maskrt.stream.accounting import FlowClock
from maskrt.stream.pipeline import Pipeline as FacesPipeline
from maskrt.stream.stages import Stage
from maskrt.stream.work import (REASON_LATE, REASON_QUEUE_FULL, REASON_REMOVED, REASON_STOPPED,
                               REASON_SUPERSEDED, REASON_WOULD_BE_LATE)
from maskrt.stream.sources import DropFolderSource, Frame, Source, StreamSource
from streaming_fixtures import (assert_threads_end, run_pipeline, check_accounting, face_frames, face_paths, maskrt_threads,
                                shared_engine, write_frames_dir, write_video)
from streaming_servers import free_port, mjpeg_server, rtsp_server, rtsp_unavailable_reason


# These tests stream face crops (and frames made of them): each frame is one region, as with
# `maskrt score --regions frame`. Face detection has its own tests (test_faces.py).
Pipeline = functools.partial(FacesPipeline, regions="frame")


@pytest.fixture(scope="module")
def engine():
    return shared_engine()


@pytest.fixture(autouse=True)
def no_leaked_threads():
    yield
    assert_threads_end(5)




# --------------------------------------------------------------------------- files and videos

def test_files_folders_and_videos_are_scored_as_engine_classify_scores_them(engine, tmp_path):
    faces = face_paths(6)
    folder = tmp_path / "crops"
    (folder / "b").mkdir(parents=True)
    for i, path in enumerate(faces[:4]):
        shutil.copy(path, folder / ("b" if i % 2 else "") / f"{i}.jpg")
    video = write_video(tmp_path / "clip.avi", 10, fps=10)
    records, counters = run_pipeline(Pipeline(engine, [folder, str(faces[5]), str(video)], batch_size=8,
                                     max_wait_ms=10))
    by_source = check_accounting(records, counters)
    assert counters["total"] == {"read": 15, "scored": 15, "dropped": 0, "failed": 0,
                                 "in_flight": 0}
    assert set(by_source) == {str(folder), str(faces[5]), str(video)}
    assert 1 <= counters["largest_batch"] <= 8
    assert counters["mixed_batches"] >= 1, "frames of different sources should share batches"

    files = sorted(by_source[str(folder)], key=lambda r: r.frame_index) + by_source[str(faces[5])]
    assert [Path(r.uri).name for r in files] == ["0.jpg", "2.jpg", "1.jpg", "3.jpg",
                                                 faces[5].name]  # sorted by path, recursive
    expected = engine.classify([r.uri for r in files])
    for record, result in zip(files, expected):
        assert record.label == result.label
        assert record.p_with_mask == pytest.approx(result.p_with_mask, abs=1e-4)
        assert record.source_timestamp == pytest.approx(Path(record.uri).stat().st_mtime)

    cap = cv2.VideoCapture(str(video))
    frames = [cap.read()[1] for _ in range(10)]
    cap.release()
    video_records = sorted(by_source[str(video)], key=lambda r: r.frame_index)
    for record, result in zip(video_records, engine.classify(frames)):
        assert record.p_without_mask == pytest.approx(result.p_without_mask, abs=1e-4)
    assert [r.source_timestamp for r in video_records] == pytest.approx(
        [i / 10 for i in range(10)], abs=1e-3)
    assert all(r.uri is None and r.latency_ms > 0 for r in video_records)


def write_bad_inputs(folder: Path) -> dict[str, str]:
    """The bad and odd files of issue 4, point 7 -> expected status."""
    folder.mkdir()
    face = face_frames(1, size=(96, 96))[0]
    jpeg = cv2.imencode(".jpg", face)[1].tobytes()
    png = cv2.imencode(".png", face)[1].tobytes()
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "cut.png").write_bytes(png[: len(png) * 2 // 3])
    (folder / "notes.weird").write_text("these are not the pixels you are looking for\n")
    (folder / "random.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    gray = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(folder / "gray.png"), gray)
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(face, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(folder / "deep16.png"), face.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "gray16.png"), gray.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "tiny.png"), face[:1, :1])
    huge = np.zeros((10000, 10000, 3), np.uint8)
    huge[::40] = 255
    huge[:, ::40] = (0, 128, 255)
    cv2.imwrite(str(folder / "huge.jpg"), huge)
    cv2.imwrite(str(folder / "huge.png"), huge, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    del huge
    failed = {"zero.jpg", "cut.jpg", "cut.png", "notes.weird", "random.jpg"}
    return {p.name: "failed" if p.name in failed else "scored" for p in folder.iterdir()}


def _memory_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def test_bad_inputs_fail_or_convert_one_record_each_within_bounded_memory(engine, tmp_path):
    expected = write_bad_inputs(tmp_path / "bad")
    engine.infer(np.zeros((8, 224, 224, 3), np.uint8))  # warm the backend's buffers
    can_measure = _reset_peak_rss()
    rss_before = _memory_kib("VmRSS")
    records, counters = run_pipeline(Pipeline(engine, [tmp_path / "bad"], batch_size=8, max_wait_ms=10))
    peak = _memory_kib("VmHWM")
    check_accounting(records, counters)
    got = {Path(r.uri).name: r for r in records}
    assert {name: r.status for name, r in got.items()} == expected
    reasons = {name: r.reason for name, r in got.items() if r.status == "failed"}
    assert "0 bytes" in reasons["zero.jpg"]
    assert "truncated JPEG" in reasons["cut.jpg"]
    assert "truncated PNG" in reasons["cut.png"]
    assert "not a decodable image" in reasons["notes.weird"]
    assert "not a decodable image" in reasons["random.jpg"]
    assert all(str(tmp_path / "bad") in reason for reason in reasons.values())
    # Converted inputs score like their 8-bit BGR equivalents.
    face = face_frames(1, size=(96, 96))[0]
    assert got["deep16.png"].p_with_mask == pytest.approx(
        engine.classify(face).p_with_mask, abs=2e-3)
    assert got["gray16.png"].p_with_mask == pytest.approx(got["gray.png"].p_with_mask, abs=2e-3)
    if can_measure and rss_before and peak:
        grown_mib = (peak - rss_before) / 1024
        # One 10000x10000 PNG must be decoded whole (300 MB); the JPEG is decoded at 1/4 size.
        assert grown_mib < 600, f"peak memory grew by {grown_mib:.0f} MiB"


def test_lossless_sources_never_drop_even_for_a_slow_consumer(engine, tmp_path):
    video = write_video(tmp_path / "clip.avi", 12)
    pipeline = Pipeline(engine, [str(video)], batch_size=2, max_wait_ms=0, queue_size=1,
                        output_capacity=1)
    records = []
    with pipeline:
        for record in pipeline:
            records.append(record)
            time.sleep(0.03)
            assert pipeline.counters()["sources"][str(video)]["queued"] <= 1
    counters = pipeline.counters()
    check_accounting(records, counters)
    assert [r.status for r in records] == ["scored"] * 12
    assert [r.frame_index for r in records] == list(range(12))  # one worker keeps frame order


def test_a_batch_waits_max_wait_ms_for_more_frames_unless_none_can_come(engine, tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    jpeg = cv2.imencode(".jpg", face_frames(1)[0])[1].tobytes()
    source = DropFolderSource(drop, settle_s=0.0, poll_s=0.02)
    with Pipeline(engine, [source], batch_size=32, max_wait_ms=400) as pipeline:
        (drop / "one.jpg").write_bytes(jpeg)
        record = pipeline.get(timeout=20)
        assert record is not None and record.status == "scored"
        assert 400 <= record.latency_ms < 400 + 5000
        assert not pipeline.finished  # a drop folder runs until stopped
    assert pipeline.counters()["batches"] == 1
    # A finite source that is done does not make its last batch wait.
    image = tmp_path / "face.jpg"
    image.write_bytes(jpeg)
    records, counters = run_pipeline(Pipeline(engine, [str(image)], batch_size=32, max_wait_ms=60_000))
    assert len(records) == 1 and records[0].latency_ms < 30_000
    check_accounting(records, counters)


def test_sources_can_be_added_and_removed_while_running(engine, tmp_path):
    long_video = write_video(tmp_path / "long.avi", 60)
    short_video = write_video(tmp_path / "short.avi", 5)
    pipeline = Pipeline(engine, [str(long_video)], batch_size=4, max_wait_ms=10,
                        stop_when_done=False)
    records: list = []

    def take_until(predicate, timeout=60.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, pipeline.counters()
            record = pipeline.get(timeout=0.5)
            if record is not None:
                records.append(record)

    with pipeline:
        take_until(lambda: len(records) >= 4)
        short_id = pipeline.add_source(str(short_video))
        again_id = pipeline.add_source(str(long_video))
        assert short_id == str(short_video) and again_id == f"{long_video}#2"
        assert pipeline.source_ids == [str(long_video), short_id, again_id]
        take_until(lambda: sum(r.source_id == short_id for r in records) == 5)
        removed = pipeline.remove_source(str(long_video))
        assert removed["state"] == "removed"
        with pytest.raises(KeyError, match="no active source"):
            pipeline.remove_source(str(long_video))
        assert pipeline.source_ids == [short_id, again_id]
        take_until(lambda: pipeline.counters()["sources"][str(long_video)]["in_flight"] == 0)
    records.extend(pipeline)  # what the stop left for the consumer
    counters = pipeline.counters()
    by_source = check_accounting(records, counters)
    first = counters["sources"][str(long_video)]
    assert first["state"] == "removed" and 4 <= first["read"] < 60
    dropped = [r for r in by_source[str(long_video)] if r.status == "dropped"]
    assert dropped and all(r.reason == REASON_REMOVED for r in dropped)
    assert counters["sources"][short_id]["scored"] == 5
    stopped = [r for r in by_source[again_id] if r.status == "dropped"]
    assert all(r.reason == REASON_STOPPED for r in stopped)
    with pytest.raises(RuntimeError, match="cannot add a source"):
        pipeline.add_source(str(short_video))


class _BrokenSource(Source):
    """A source whose reader raises after two frames (a bug in a user's source class)."""

    kind = "broken"

    def frames(self, stop):
        for i in range(2):
            yield Frame(i, float(i), image=np.full((50, 40, 3), 128, np.uint8))
        raise RuntimeError("sensor on fire")


class _FlakyEngine:
    """The shared engine, except that its second backend call raises."""

    def __init__(self, engine):
        self.engine = engine
        self.calls = 0

    def infer(self, batch):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("device lost")
        return self.engine.infer(batch)

    def results_from(self, *args, **kwargs):
        return self.engine.results_from(*args, **kwargs)


def test_a_failing_reader_or_batch_fails_only_its_frames(engine, tmp_path):
    video = write_video(tmp_path / "clip.avi", 6)
    records, counters = run_pipeline(Pipeline(_FlakyEngine(engine), [_BrokenSource(id="broken"),
                                                            str(video)],
                                     batch_size=2, max_wait_ms=0))
    by_source = check_accounting(records, counters)
    broken = sorted(by_source["broken"], key=lambda r: r.frame_index)
    assert len(broken) == 3 and "sensor on fire" in broken[2].reason
    assert broken[2].status == "failed" and counters["sources"]["broken"]["state"] == "failed"
    backend_failed = [r for r in records if r.reason and "device lost" in r.reason]
    assert 1 <= len(backend_failed) <= 2 and all(r.status == "failed" for r in backend_failed)
    assert counters["total"]["scored"] == 8 - len(backend_failed)


def test_explain_overlays_match_engine_explain(engine, tmp_path):
    frames = face_frames(3, size=(120, 150))
    try:
        reference = engine.explain(frames)
    except ImportError as err:
        pytest.skip(f"explain needs the compiled CAM kernel: {err}")
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i}.png"), frame)
    records, counters = run_pipeline(Pipeline(engine, [folder], explain=True, batch_size=4))
    check_accounting(records, counters)
    for record, expected in zip(sorted(records, key=lambda r: r.frame_index), reference):
        assert record.status == "scored" and record.reason is None
        assert record.overlay.shape == (150, 120, 3)
        assert np.abs(record.overlay.astype(int) - expected.overlay.astype(int)).max() <= 1


def test_stop_mid_stream_accounts_for_every_frame_and_joins_threads(engine, tmp_path):
    videos = [str(write_video(tmp_path / f"v{i}.avi", 40)) for i in range(2)]
    pipeline = Pipeline(engine, videos, batch_size=4, max_wait_ms=5)
    records = []
    with pipeline:
        for record in pipeline:
            records.append(record)
            if len(records) == 6:
                break
    assert maskrt_threads() == []
    records.extend(pipeline)
    counters = pipeline.counters()
    check_accounting(records, counters)
    assert counters["finished"] and counters["total"]["dropped"] > 0
    assert counters["total"]["read"] < 80


class _Gate(Stage):
    """Holds every frame until opened: frames stay in flight as long as the test wants."""

    name = "gate"

    def __init__(self) -> None:
        self.opened = threading.Event()

    def process(self, task):
        self.opened.wait(120)
        return task


def test_a_source_is_finished_only_once_its_last_frame_was_recorded(engine, tmp_path):
    folder = tmp_path / "crops"
    folder.mkdir()
    for i, path in enumerate(face_paths(3)):
        shutil.copy(path, folder / f"{i}.jpg")
    gate = _Gate()
    pipeline = Pipeline(engine, [str(folder)], stages=[gate], batch_size=2, max_wait_ms=5)
    records = []
    with pipeline:
        source = pipeline.sources()[str(folder)]
        deadline = time.monotonic() + 60
        while source.state != "finished":  # the reader has read every file...
            assert time.monotonic() < deadline, pipeline.counters()
            time.sleep(0.02)
        counters = pipeline.counters()["sources"][str(folder)]
        assert counters["in_flight"] == 3 and counters["state"] == "scoring"  # ...none scored
        gate.opened.set()
        for record in pipeline:
            records.append(record)
            counters = pipeline.counters()["sources"][str(folder)]
            if counters["state"] == "finished":
                assert counters["in_flight"] == 0 and counters["scored"] == 3
    counters = pipeline.counters()
    check_accounting(records, counters)
    assert counters["sources"][str(folder)]["state"] == "finished"


def test_frames_limit_stops_every_reader_and_scores_what_was_read(engine, tmp_path):
    videos = [str(write_video(tmp_path / f"v{i}.avi", 40)) for i in range(2)]
    drop = tmp_path / "drop"
    drop.mkdir()  # empty: its reader waits for files and must still stop at the limit
    pipeline = Pipeline(engine, [*videos, DropFolderSource(drop, poll_s=0.05)], batch_size=4,
                        max_wait_ms=5, max_frames=10)
    records, counters = run_pipeline(pipeline)
    check_accounting(records, counters)
    assert counters["total"]["read"] == counters["total"]["scored"] == 10
    assert counters["frame_limit_reached"] and counters["finished"]
    assert counters["sources"][f"drop:{drop}"]["state"] == "stopped"
    with pytest.raises(ValueError, match="max_frames"):
        Pipeline(engine, videos, max_frames=0)


def test_flowing_time_leaves_out_long_idle_pauses() -> None:
    clock = FlowClock()
    clock.note(0.0, busy=False)
    clock.note(1.5, busy=False)  # a slow source still delivering: flowing
    clock.note(30.0, busy=False)  # half a minute with nothing in flight: waiting, not flowing
    clock.note(40.0, busy=True)  # a frame in flight all along (a slow batch): flowing
    assert clock.flowing_s == pytest.approx(11.5)
    assert clock.current(45.0, busy=True) == pytest.approx(16.5)
    assert clock.current(45.0, busy=False) == pytest.approx(11.5)


def test_stop_reason_is_recorded_on_the_frames_it_drops(engine, tmp_path):
    video = str(write_video(tmp_path / "v.avi", 60))
    pipeline = Pipeline(engine, [video], batch_size=4, max_wait_ms=5)
    with pipeline:
        first = pipeline.get(timeout=60)
        pipeline.stop(reason="pipeline stopped (SIGTERM) before the frame was scored")
        records = [first, *pipeline]
    check_accounting(records, pipeline.counters())
    dropped = [r for r in records if r.status == "dropped"]
    assert dropped and all("SIGTERM" in r.reason for r in dropped)


# --------------------------------------------------------------------------- real network streams

def _consume_through_outage(pipeline, source, server, records, *, before=10, after=5,
                            slow_consumer_s=0.0, timeout=90.0):
    """Take records; after `before` scored frames kill the server, wait for the failure record,
    restart the server, and go on until `after` frames were scored after a reconnect."""
    deadline = time.monotonic() + timeout
    phase = "streaming"
    failure_at = None
    while True:
        assert time.monotonic() < deadline, (phase, pipeline.counters())
        record = pipeline.get(timeout=0.5)
        if record is not None:
            records.append(record)
        scored = [r for r in records if r.status == "scored"]
        if phase == "streaming":
            if slow_consumer_s and record is not None and record.status == "scored":
                time.sleep(slow_consumer_s)  # heavy work per result: scoring must not outpace it
            dropped = sum(r.status == "dropped" for r in records)
            if len(scored) >= before and (not slow_consumer_s or dropped >= 2):
                server.kill()
                phase = "killed"
        elif phase == "killed":
            failures = [r for r in records if r.status == "failed"]
            if failures:
                failure_at = failures[0].frame_index
                time.sleep(0.6)  # at least one refused reconnection attempt
                server.start()
                phase = "restarted"
        elif phase == "restarted":
            later = [r for r in scored if r.frame_index > failure_at]
            if source.reconnects >= 1 and len(later) >= after:
                return failure_at


def test_http_mjpeg_server_killed_and_restarted(engine, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="maskrt")
    frames_dir = write_frames_dir(tmp_path / "frames", 8)
    server = mjpeg_server(frames_dir, fps=25)
    source = StreamSource(f"http://127.0.0.1:{server.port}/cam.mjpg", id="cam",
                          backoff=(0.2, 1.0), timeout_s=3.0)
    pipeline = Pipeline(engine, [source], batch_size=4, max_wait_ms=20, output_capacity=2)
    records: list = []
    try:
        server.start()
        with pipeline:
            failure_at = _consume_through_outage(pipeline, source, server, records,
                                                 slow_consumer_s=0.1)
    finally:
        server.kill()
    records.extend(pipeline)
    counters = pipeline.counters()
    check_accounting(records, counters)
    cam = counters["sources"]["cam"]
    assert cam["reconnects"] >= 1 and cam["connect_failures"] >= 2
    # A slow consumer makes the live source drop frames: its oldest queued ones, those
    # superseded by newer ones between stages, or those too late to be scored.
    drops = [r for r in records if r.status == "dropped"
             and r.reason in (REASON_QUEUE_FULL, REASON_SUPERSEDED, REASON_LATE,
                                  REASON_WOULD_BE_LATE)]
    assert len(drops) >= 2, "a slow consumer must make the live source drop frames"
    failures = [r for r in records if r.status == "failed"]
    assert failures[0].frame_index == failure_at and "stream lost" in failures[0].reason
    assert any(r.status == "scored" and r.frame_index < failure_at for r in records)
    assert any(r.status == "scored" and r.frame_index > failure_at for r in records)
    assert all(r.source_timestamp > 1e9 for r in records)  # wall clock at read
    attempts = [m for m in caplog.messages if "connection attempt" in m]
    assert attempts and any("reconnected" in m for m in caplog.messages), caplog.messages


def test_gstreamer_rtsp_server_killed_and_restarted(engine, tmp_path):
    reason = rtsp_unavailable_reason()
    if reason:
        pytest.skip(reason)
    video = write_video(tmp_path / "served.avi", 60, fps=20, size=(320, 240))
    server = rtsp_server(video)
    source = StreamSource(f"rtsp://127.0.0.1:{server.port}/stream", id="rtsp",
                          backoff=(0.2, 1.0), timeout_s=3.0)
    pipeline = Pipeline(engine, [source], batch_size=8, max_wait_ms=20)
    records: list = []
    try:
        server.start()
        with pipeline:
            _consume_through_outage(pipeline, source, server, records, before=8, after=4)
    finally:
        server.kill()
    records.extend(pipeline)
    counters = pipeline.counters()
    check_accounting(records, counters)
    assert counters["sources"]["rtsp"]["reconnects"] >= 1
    assert counters["sources"]["rtsp"]["scored"] >= 12


def test_unreachable_url_fails_without_stopping_the_other_sources(engine, tmp_path):
    video = write_video(tmp_path / "clip.avi", 8)
    url = f"rtsp://127.0.0.1:{free_port()}/nobody-home"
    records, counters = run_pipeline(Pipeline(engine, [str(video), url], batch_size=8,
                                     source_options={"retries": 1, "backoff": (0.05, 0.1),
                                                     "timeout_s": 2.0}))
    by_source = check_accounting(records, counters)
    assert counters["sources"][str(video)]["scored"] == 8
    (failure,) = by_source[url]
    assert failure.status == "failed" and "cannot open" in failure.reason
    assert counters["sources"][url]["state"] == "failed"
    assert failure.reason in counters["sources"][url]["reasons"]
