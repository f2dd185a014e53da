"""MQTT events (``MqttSink``, ``maskrt score --mqtt``) against a real mosquitto broker on a free
loopback port: a subscriber gets exactly the scored face records (or, with the options, only the
confident without_mask ones, at most one per source per interval, with a JPEG that OpenCV
decodes); a broker killed mid-run does not stop the run, and one restarted mid-run gets the
events made during the outage from the sink's buffer (its overflow counted)."""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed "
                    "(pip install maskrt[mqtt])")
import paho.mqtt.client as mqtt
from streaming_fixtures import REPO, face_paths, shared_engine, write_video
from streaming_servers import ServerProcess, free_port

from maskrt.cli import main as cli_main
from maskrt.stream.mqtt import (
    MqttSink,
    face_jpeg,
    parse_broker,
)
from maskrt.stream.pipeline import Pipeline
from maskrt.stream.records import JSON_FIELDS, Record
from maskrt.stream.sinks import Sink, safe_name


def mosquitto_path() -> str | None:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)),
        None)


@pytest.fixture
def broker(tmp_path):
    """A mosquitto process on a free loopback port (killed by pid at the end). It keeps its
    sessions in ``broker.db`` when told to (:func:`save_sessions`), so a persistent subscriber's
    session survives the broker being killed and restarted."""
    binary = mosquitto_path()
    if binary is None:
        pytest.skip("the mosquitto broker is not installed (apt-get install mosquitto; "
                    "scripts/install_stream_tools.sh installs it)")
    port = free_port()
    data = tmp_path / "mosquitto-data"
    data.mkdir()
    config = tmp_path / "mosquitto.conf"
    # user: mosquitto started as root would switch to user "mosquitto", which cannot write here
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                      f"persistence_location {data}/\nautosave_interval 0\n"
                      f"user {pwd.getpwuid(os.getuid()).pw_name}\n")
    server = ServerProcess([binary, "-c", str(config)], port)
    server.db = data / "mosquitto.db"
    with server:
        yield server


def save_sessions(broker) -> None:
    """SIGUSR1: mosquitto writes its sessions (subscriptions, queued messages) to disk now."""
    broker.db.unlink(missing_ok=True)
    os.kill(broker.process.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not broker.db.exists():
        assert time.monotonic() < deadline, "mosquitto did not write its persistence file"
        time.sleep(0.02)


class Subscriber:
    """A paho client subscribed to PREFIX/# at QoS 1, keeping (topic, payload) pairs.
    persistent: a session the broker keeps while the client is away (clean_session False), so
    messages published while it reconnects after a broker restart are queued for it."""

    def __init__(self, port: int, prefix: str, persistent: bool = False) -> None:
        self.messages: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="maskrt-test-subscriber" if persistent else "",
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{prefix}/#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "the test subscriber could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, json.loads(message.payload)))

    def wait_for(self, n: int, timeout: float = 10.0) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.messages) < n:
            time.sleep(0.05)
        time.sleep(0.3)  # a few more would be a bug: give them the chance to arrive
        with self._lock:
            return list(self.messages)

    def frames(self, n: int, timeout: float = 15.0) -> list[int]:
        """The frame indices received, in order, once n distinct ones came (or the timeout);
        QoS 1 is at least once, so a broker restart may deliver one twice: duplicates are
        left out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self._distinct()) < n:
            time.sleep(0.05)
        time.sleep(0.3)  # a few more would be a bug: give them the chance to arrive
        return self._distinct()

    def _distinct(self) -> list[int]:
        with self._lock:
            indices = [m["frame_index"] for _, m in self.messages]
        return list(dict.fromkeys(indices))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_parse_broker():
    assert parse_broker("127.0.0.1:1884") == ("127.0.0.1", 1884)
    assert parse_broker("broker.local") == ("broker.local", 1883)
    assert parse_broker("[::1]:8883") == ("::1", 8883)
    for bad in ("", ":1883", "host:port", "host:70000"):
        with pytest.raises(ValueError):
            parse_broker(bad)


def test_subscriber_receives_exactly_the_scored_face_records(tmp_path, broker):
    shared_engine()
    folder = tmp_path / "crops"
    folder.mkdir()
    for i, path in enumerate(face_paths(3)):
        shutil.copy(path, folder / f"{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"")
    video = write_video(tmp_path / "clip.avi", 5, fps=8)
    subscriber = Subscriber(broker.port, "site1")
    out = tmp_path / "out"
    try:
        rc = cli_main(["score", str(folder), str(video), "--out", str(out), "--regions", "frame",
                       "--batch-size", "4", "--progress-interval", "0",
                       "--mqtt", f"127.0.0.1:{broker.port}", "--mqtt-topic", "site1"])
        messages = subscriber.wait_for(9)
    finally:
        subscriber.close()
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accounting_ok"] is True
    outputs = summary["outputs"]
    assert outputs["mqtt"] == f"mqtt://127.0.0.1:{broker.port}/site1"
    assert (outputs["mqtt_published"], outputs["mqtt_dropped"], outputs["mqtt_unacked"]) == (9, 0, 0)

    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    scored = [{k: r[k] for k in JSON_FIELDS} for r in records if r["status"] == "scored"]
    faces = [(t, m) for t, m in messages if t.endswith("/faces")]
    events = [(t, m) for t, m in messages if t.endswith("/events")]
    assert len(messages) == 9 and len(faces) == 8 and len(events) == 1
    key = lambda m: (m["source_id"], m["frame_index"], m["region_index"])
    assert sorted((m for _, m in faces), key=key) == sorted(scored, key=key)
    for topic, message in faces:
        assert list(message) == list(JSON_FIELDS)
        assert topic == f"site1/{safe_name(message['source_id'])}/faces"
        assert message["label"] in ("with_mask", "without_mask") and message["box"]
    topic, event = events[0]
    assert topic == f"site1/{safe_name(str(folder))}/events"
    assert event["status"] == "failed" and event["uri"].endswith("broken.jpg")


def test_broker_killed_mid_run_does_not_stop_scoring(tmp_path, broker):
    shared_engine()  # the graph is cached for the subprocess
    video = write_video(tmp_path / "long.avi", 300)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "maskrt", "score", str(video), "--out", str(out),
         "--regions", "frame", "--batch-size", "4", "--progress-interval", "0",
         "--mqtt", f"127.0.0.1:{broker.port}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        records_path = out / "records.jsonl"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            if records_path.exists() and len(records_path.read_text().splitlines()) >= 4:
                break  # scoring (and publishing) is under way
            time.sleep(0.1)
        assert process.poll() is None, process.communicate()
        broker.kill()
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accounting_ok"] is True
    assert summary["counts"] == {"read": 300, "scored": 300, "dropped": 0, "failed": 0}
    outputs = summary["outputs"]
    lost = outputs["mqtt_dropped"] + outputs["mqtt_unacked"]
    assert outputs["mqtt_published"] >= 1 and lost >= 1, outputs
    # every face record is accounted for exactly once: acknowledged, dropped or unacknowledged
    assert outputs["mqtt_published"] + lost == 300, outputs
    assert outputs["mqtt_disconnects"] >= 1
    # what came after the kill waited in the buffer; the broker never came back for it
    assert outputs["mqtt_buffered"] >= 1 and outputs["mqtt_dropped"] >= outputs["mqtt_buffered"]
    assert "disconnected" in stderr and "mqtt " in stdout


def face_record(i: int, source: str = "rtsp://cam:554/x", **fields) -> Record:
    return Record(source, i, None, "scored", **{
        "label": "with_mask", "p_with_mask": 0.9, "p_without_mask": 0.1, "region_index": 0,
        "box": [0, 0, 10, 10], "faces": 1, **fields})


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def test_sink_buffers_while_the_broker_is_down(broker):
    """Down: write() never blocks, messages wait in the buffer; back: they are sent by
    themselves once the client has reconnected, before the next one."""
    subscriber = Subscriber(broker.port, "maskrt", persistent=True)
    sink = MqttSink("127.0.0.1", broker.port)
    try:
        sink.open(None)
        sink.write(face_record(0))
        assert subscriber.wait_for(1)[0][0] == "maskrt/rtsp_cam_554_x/faces"
        save_sessions(broker)  # the subscriber's session outlives the kill
        broker.kill()
        wait_until(lambda: not sink.connected, 10, "the sink saw the broker go")
        t0 = time.monotonic()
        for i in range(1, 6):
            sink.write(face_record(i))
        assert time.monotonic() - t0 < 1.0  # the sink never waits for a broker
        broker.start()
        # the client's back-off is at most 8 s; no write is needed for the buffer to go out
        assert subscriber.frames(6, timeout=20) == [0, 1, 2, 3, 4, 5]
        assert sink.connected
        sink.write(face_record(6))
        assert subscriber.frames(7) == list(range(7))
    finally:
        part = sink.close()
        subscriber.close()
    assert (part["mqtt_published"], part["mqtt_dropped"], part["mqtt_unacked"]) == (7, 0, 0)
    assert (part["mqtt_buffered"], part["mqtt_disconnects"]) == (5, 1)


class Outage(Sink):
    """Placed before the MQTT sink: before record ``kill_at`` is published it kills the broker
    (once the subscriber has the records before it), and before record ``restart_at`` it
    restarts it and waits until the sink has reconnected. Records in between are made while
    the broker is down."""

    def __init__(self, broker, sink: MqttSink, subscriber: Subscriber, kill_at: int,
                 restart_at: int) -> None:
        self.broker, self.sink, self.subscriber = broker, sink, subscriber
        self.kill_at, self.restart_at = kill_at, restart_at

    def write(self, record: Record, frame=None) -> None:
        if record.frame_index == self.kill_at:
            assert self.subscriber.frames(self.kill_at) == list(range(self.kill_at))
            save_sessions(self.broker)
            self.broker.kill()
            wait_until(lambda: not self.sink.connected, 10, "the sink saw the broker go")
        elif record.frame_index == self.restart_at:
            self.broker.start()
            wait_until(lambda: self.sink.connected, 20, "the sink reconnected")


@pytest.mark.parametrize("max_buffered", [1000, 2])
def test_broker_restarted_mid_run_gets_the_outages_events(tmp_path, broker, max_buffered):
    """A pipeline run over 12 frames; the broker is killed before frame 3 and restarted before
    frame 8: frames 3-7 wait in the buffer and arrive after the restart. With room for 2, the
    oldest 3 are dropped and counted, and the last 2 arrive."""
    video = write_video(tmp_path / "clip.avi", 12)
    subscriber = Subscriber(broker.port, "maskrt", persistent=True)
    sink = MqttSink("127.0.0.1", broker.port, max_buffered=max_buffered)
    outage = Outage(broker, sink, subscriber, kill_at=3, restart_at=8)
    pipeline = Pipeline(shared_engine(), [str(video)], batch_size=4, max_wait_ms=5,
                        regions="frame", sinks=[outage, sink])
    try:
        summary = pipeline.run()
        dropped = 5 - min(5, max_buffered)
        expected = [i for i in range(12) if not 3 <= i < 3 + dropped]
        assert sorted(subscriber.frames(len(expected))) == expected
    finally:
        subscriber.close()
    assert summary["counts"]["scored"] == 12
    outputs = summary["outputs"]
    assert outputs["mqtt_buffered"] == 5  # frames 3-7
    assert (outputs["mqtt_published"], outputs["mqtt_dropped"], outputs["mqtt_unacked"]) == \
        (12 - dropped, dropped, 0)
    assert outputs["mqtt_disconnects"] == 1


def scored_records(out) -> list[dict]:
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    return [r for r in records if r["status"] == "scored"]


def test_only_without_mask_above_the_threshold_arrive(tmp_path, broker):
    folder = tmp_path / "crops"
    folder.mkdir()
    for i, path in enumerate(face_paths(8)):  # with_mask and without_mask, alternating
        shutil.copy(path, folder / f"{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"")
    subscriber = Subscriber(broker.port, "maskrt")
    out = tmp_path / "out"
    try:
        rc = cli_main(["score", str(folder), "--out", str(out), "--regions", "frame",
                       "--progress-interval", "0", "--mqtt", f"127.0.0.1:{broker.port}",
                       "--mqtt-only-without-mask", "0.9"])
        scored = scored_records(out)
        wanted = [r for r in scored if r["label"] == "without_mask" and r["p_without_mask"] >= 0.9]
        messages = subscriber.wait_for(len(wanted) + 1)
    finally:
        subscriber.close()
    assert rc == 0 and 0 < len(wanted) < len(scored)
    faces = [m for t, m in messages if t.endswith("/faces")]
    assert sorted(m["frame_index"] for m in faces) == sorted(r["frame_index"] for r in wanted)
    assert all(m["label"] == "without_mask" and m["p_without_mask"] >= 0.9 for m in faces)
    events = [m for t, m in messages if t.endswith("/events")]  # events are not filtered
    assert len(events) == 1 and events[0]["status"] == "failed"
    outputs = json.loads((out / "summary.json").read_text())["outputs"]
    assert outputs["mqtt_filtered"] == len(scored) - len(wanted)
    assert outputs["mqtt_published"] == len(wanted) + 1


def test_min_interval_sends_one_message_per_source_and_interval(tmp_path, broker):
    """Two folders (3 and 2 faces) with an interval longer than the run: the first face of
    each source arrives, the other 3 are counted as suppressed."""
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder, paths in zip(folders, (face_paths(3), face_paths(2))):
        folder.mkdir()
        for i, path in enumerate(paths):
            shutil.copy(path, folder / f"{i}.jpg")
    subscriber = Subscriber(broker.port, "maskrt")
    out = tmp_path / "out"
    try:
        rc = cli_main(["score", *map(str, folders), "--out", str(out), "--regions", "frame",
                       "--progress-interval", "0", "--mqtt", f"127.0.0.1:{broker.port}",
                       "--mqtt-min-interval", "3600"])
        messages = subscriber.wait_for(2)
    finally:
        subscriber.close()
    assert rc == 0
    assert sorted((m["source_id"], m["frame_index"]) for _, m in messages) == \
        [(str(folders[0]), 0), (str(folders[1]), 0)]
    outputs = json.loads((out / "summary.json").read_text())["outputs"]
    assert (outputs["mqtt_published"], outputs["mqtt_suppressed"]) == (2, 3)


def test_min_interval_on_the_sinks_clock(broker):
    """With a clock the test moves: per source and topic, a message at least every second."""
    now = [0.0]
    subscriber = Subscriber(broker.port, "maskrt")
    sink = MqttSink("127.0.0.1", broker.port, min_interval_s=1.0, clock=lambda: now[0])
    schedule = [(0.0, face_record(0, "a")), (0.4, face_record(1, "a")),
                (0.4, face_record(0, "b")), (0.5, face_record(1, "b")),
                (0.5, Record("a", 100, None, "failed", reason="unreadable")),  # events: own limit
                (0.9, face_record(2, "a")), (1.0, face_record(3, "a")),
                (1.5, face_record(4, "a")), (2.1, face_record(5, "a")),
                (2.2, face_record(6, "a")), (3.5, face_record(7, "a"))]
    try:
        sink.open(None)
        for t, record in schedule:
            now[0] = t
            sink.write(record)
        messages = subscriber.wait_for(6)
    finally:
        part = sink.close()
        subscriber.close()
    got = sorted((m["source_id"], m["frame_index"]) for _, m in messages)
    assert got == [("a", 0), ("a", 3), ("a", 5), ("a", 7), ("a", 100), ("b", 0)]
    assert (part["mqtt_published"], part["mqtt_suppressed"]) == (6, 5)


@pytest.mark.parametrize("explain", [False, True])
def test_jpeg_of_the_face_decodes_with_opencv(tmp_path, broker, explain):
    """--mqtt-jpeg: the face at most 96 px a side; the frame's pixels, or with --explain the
    overlay's (what the overlay sink wrote)."""
    folder = tmp_path / "crops"
    folder.mkdir()
    for i, path in enumerate(face_paths(3)):
        shutil.copy(path, folder / f"{i}.jpg")
    subscriber = Subscriber(broker.port, "maskrt")
    out = tmp_path / "out"
    try:
        rc = cli_main(["score", str(folder), "--out", str(out), "--regions", "frame",
                       "--progress-interval", "0", "--mqtt", f"127.0.0.1:{broker.port}",
                       "--mqtt-jpeg", *(["--explain"] if explain else [])])
        messages = subscriber.wait_for(3)
    finally:
        subscriber.close()
    assert rc == 0 and len(messages) == 3
    overlays = {r["frame_index"]: r.get("overlay") for r in scored_records(out)}
    for _, message in messages:
        assert list(message) == [*JSON_FIELDS, "jpeg"]
        face = cv2.imdecode(np.frombuffer(base64.b64decode(message["jpeg"]), np.uint8),
                            cv2.IMREAD_COLOR)
        assert face is not None and face.ndim == 3 and max(face.shape[:2]) <= 96
        frame = cv2.imread(message["uri"], cv2.IMREAD_COLOR)
        source = cv2.imread(overlays[message["frame_index"]]) if explain else frame
        size = (face.shape[1], face.shape[0])
        assert abs(size[0] / size[1] - frame.shape[1] / frame.shape[0]) < 0.05  # aspect kept
        expected = cv2.resize(source, size, interpolation=cv2.INTER_AREA)
        assert np.abs(face.astype(int) - expected).mean() < 8
        if explain:  # the CAM's colours, not the plain frame
            plain = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            assert np.abs(face.astype(int) - plain).mean() > 10


def test_face_jpeg_is_cut_from_the_overlay_else_the_frame(broker):
    """Faces in a frame: the overlay (the whole frame, drawn) comes with the frame's first
    record only; the sink cuts later faces out of it too, and falls back on the frame."""
    frame = np.full((120, 200, 3), 60, np.uint8)
    overlay = frame.copy()
    frame[10:70, 20:80] = (0, 0, 255)
    frame[30:90, 120:180] = (0, 255, 0)
    overlay[10:70, 20:80] = (255, 0, 0)
    overlay[30:90, 120:180] = (255, 255, 0)
    face = {"faces": 2, "face_score": 0.9}
    first = face_record(0, "cam", box=[20, 10, 80, 70], overlay=overlay, **face)
    second = face_record(0, "cam", region_index=1, box=[120, 30, 180, 90], **face)
    other = face_record(1, "cam", box=[20, 10, 80, 70], **face)  # the next frame: no overlay
    subscriber = Subscriber(broker.port, "maskrt")
    sink = MqttSink("127.0.0.1", broker.port, jpeg=True)
    assert sink.needs_frames  # the pipeline keeps frames for it
    try:
        sink.open(None)
        for record in (first, second, other):
            sink.write(record, frame)
        messages = subscriber.wait_for(3)
    finally:
        sink.close()
        subscriber.close()
    colours = {}
    for _, m in messages:
        image = cv2.imdecode(np.frombuffer(base64.b64decode(m["jpeg"]), np.uint8), 1)
        assert image.shape == (60, 60, 3)
        colours[(m["frame_index"], m["region_index"])] = image[10:50, 10:50].mean(axis=(0, 1))
    for key, bgr in {(0, 0): (255, 0, 0), (0, 1): (255, 255, 0), (1, 0): (0, 0, 255)}.items():
        assert np.abs(colours[key] - bgr).max() < 8, (key, colours[key])
    whole = face_record(0, "cam", box=[0, 0, 200, 120])  # a whole frame: 96 px wide
    image = cv2.imdecode(np.frombuffer(base64.b64decode(face_jpeg(whole, frame, None)),
                                       np.uint8), 1)
    assert image.shape == (58, 96, 3)


def test_missing_paho_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)  # import fails as if absent
    with pytest.raises(ImportError, match=r"pip install maskrt\[mqtt\]"):
        MqttSink("127.0.0.1")


def test_bad_mqtt_options_fail_before_scoring(tmp_path, capsys):
    image = tmp_path / "face.jpg"
    shutil.copy(face_paths(1)[0], image)
    for n, option in enumerate((["--mqtt", "host:notaport"],
                                ["--mqtt", "127.0.0.1", "--mqtt-topic", "a/#"],
                                ["--mqtt", "127.0.0.1", "--mqtt-only-without-mask", "1.5"],
                                ["--mqtt-jpeg"], ["--mqtt-min-interval", "5"])):
        out = tmp_path / f"out{n}"
        assert cli_main(["score", str(image), "--out", str(out), "--regions", "frame", *option]) == 2
        assert "--mqtt" in capsys.readouterr().err
        assert not (out / "records.jsonl").exists()


def test_a_broker_that_never_comes_up_is_reported_and_scoring_goes_on(tmp_path, caplog):
    """Nothing listens on the port: the run says so (the broker's address, the buffering), scores
    every frame, and every event ends as dropped (buffered, never sent)."""
    port = free_port()  # nothing listens here
    video = write_video(tmp_path / "clip.avi", 6)
    sink = MqttSink("127.0.0.1", port, connect_timeout_s=0.5, flush_timeout_s=0.5)
    with caplog.at_level("WARNING", logger="maskrt"):
        with Pipeline(shared_engine(), [str(video)], regions="frame", sinks=[sink]) as pipeline:
            records = list(pipeline)
    counters = pipeline.counters()["total"]
    assert counters["read"] == counters["scored"] == 6 and len(records) == 6
    assert any(f"127.0.0.1:{port}" in r.getMessage() and "not connected" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert sink.published == 0 and sink.dropped == 6
