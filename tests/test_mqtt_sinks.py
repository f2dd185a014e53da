"""MQTT events (``MqttSink``, ``maskrt score --mqtt``) against a real mosquitto broker on a free
loopback port: a subscriber gets exactly the scored face records, and a broker killed mid-run
does not stop the run (its lost messages are counted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed "
                    "(pip install maskrt[mqtt])")
import paho.mqtt.client as mqtt
from streaming_fixtures import REPO, face_paths, shared_engine, write_video
from streaming_servers import ServerProcess, free_port

from maskrt.cli import main as cli_main
from maskrt.stream.mqtt import (
    MqttSink,
    parse_broker,
)
from maskrt.stream.records import JSON_FIELDS, Record
from maskrt.stream.sinks import safe_name


def mosquitto_path() -> str | None:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)),
        None)


@pytest.fixture
def broker(tmp_path):
    """A mosquitto process on a free loopback port (killed by pid at the end)."""
    binary = mosquitto_path()
    if binary is None:
        pytest.skip("the mosquitto broker is not installed (apt-get install mosquitto; "
                    "scripts/install_stream_tools.sh installs it)")
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    server = ServerProcess([binary, "-c", str(config)], port)
    with server:
        yield server


class Subscriber:
    """A paho client subscribed to PREFIX/# at QoS 1, keeping (topic, payload) pairs."""

    def __init__(self, port: int, prefix: str) -> None:
        self.messages: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
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
    assert "disconnected" in stderr and "mqtt " in stdout


def face_record(i: int) -> Record:
    return Record("rtsp://cam:554/x", i, None, "scored", label="with_mask", p_with_mask=0.9,
                  p_without_mask=0.1, region_index=0, box=[0, 0, 10, 10], faces=1)


def test_sink_reconnects_when_the_broker_comes_back(broker):
    """Down: counted as dropped, write() never blocks; back: publishing resumes by itself."""
    subscriber = Subscriber(broker.port, "maskrt")
    sink = MqttSink("127.0.0.1", broker.port)
    try:
        sink.open(None)
        sink.write(face_record(0))
        assert subscriber.wait_for(1)[0][0] == "maskrt/rtsp_cam_554_x/faces"
        subscriber.close()
        broker.kill()
        deadline = time.monotonic() + 10
        while sink.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        t0 = time.monotonic()
        for i in range(1, 6):
            sink.write(face_record(i))
        assert time.monotonic() - t0 < 1.0  # the sink never waits for a broker
        broker.start()
        deadline = time.monotonic() + 20  # the client's back-off is at most 8 s
        while not sink.connected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sink.connected
        subscriber = Subscriber(broker.port, "maskrt")
        sink.write(face_record(6))
        assert [m["frame_index"] for _, m in subscriber.wait_for(1)] == [6]
    finally:
        part = sink.close()
        subscriber.close()
    assert (part["mqtt_published"], part["mqtt_dropped"], part["mqtt_unacked"]) == (2, 5, 0)
    assert part["mqtt_disconnects"] == 1


def test_missing_paho_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)  # import fails as if absent
    with pytest.raises(ImportError, match=r"pip install maskrt\[mqtt\]"):
        MqttSink("127.0.0.1")


def test_bad_mqtt_options_fail_before_scoring(tmp_path, capsys):
    image = tmp_path / "face.jpg"
    shutil.copy(face_paths(1)[0], image)
    for option in (["--mqtt", "host:notaport"], ["--mqtt", "127.0.0.1", "--mqtt-topic", "a/#"]):
        out = tmp_path / f"out{len(option)}"
        assert cli_main(["score", str(image), "--out", str(out), "--regions", "frame", *option]) == 2
        assert "--mqtt" in capsys.readouterr().err
        assert not (out / "records.jsonl").exists()
