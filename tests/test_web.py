"""The live view's server (maskrt.web) over real HTTP: the JSON endpoints against the pipeline's
counters, frames and MJPEG streams that change, Server-Sent Events to the end of a run, a
viewer that disconnects mid-stream, the page's files shipped and self-contained, the
``--web`` flags of ``maskrt score``. Tests wait on conditions (generous timeouts), never on
the machine's speed."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
from streaming_fixtures import shared_engine, write_video

from maskrt.cli import main as cli_main
from maskrt.stream.pipeline import Pipeline
from maskrt.stream.records import Record
from maskrt.web.server import load_static
from maskrt.web.sink import WebSink, parse_address

TIMEOUT = 60.0


def wait_for(condition: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")


def get(url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def get_json(sink: WebSink, path: str) -> Any:
    status, _, body = get(sink.url.rstrip("/") + path)
    assert status == 200, (path, status, body[:200])
    return json.loads(body)


class Throttled:
    """Runs a pipeline's consumer in a thread, ``delay`` s per record, so the run lasts while
    the test looks at it; ``go`` lets it finish at full speed."""

    def __init__(self, pipeline: Pipeline, delay: float = 0.02) -> None:
        self.pipeline, self.delay, self.records = pipeline, delay, 0
        self.go = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.pipeline:
            for _ in self.pipeline:
                self.records += 1
                if not self.go.is_set():
                    time.sleep(self.delay)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("web") / "clip.avi", 60, size=(320, 240))


def open_mjpeg(url: str) -> tuple[socket.socket, Any]:
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=20)
    sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    stream = sock.makefile("rb")
    assert b"200" in stream.readline()
    while stream.readline() not in (b"\r\n", b""):
        pass
    return sock, stream


def read_part(stream: Any) -> tuple[int, bytes]:
    """One part of an MJPEG stream: (X-Frame-Seq, JPEG bytes)."""
    headers: dict[str, str] = {}
    line = stream.readline()
    while line in (b"\r\n", b"\n"):
        line = stream.readline()
    assert line.startswith(b"--maskrtframe"), line
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    jpeg = stream.read(int(headers["content-length"]))
    assert jpeg[:2] == b"\xff\xd8"
    return int(headers["x-frame-seq"]), jpeg


def test_addresses_default_to_this_machine_only() -> None:
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address(":0") == ("127.0.0.1", 0)
    assert parse_address("0.0.0.0:81") == ("0.0.0.0", 81)
    assert parse_address("[::1]:8080") == ("::1", 8080)
    assert parse_address("localhost:9") == ("localhost", 9)
    for bad in ("", "x", "host:", "1:2:3", "70000", "a b:1"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_the_page_is_shipped_and_loads_nothing_from_elsewhere() -> None:
    static = load_static()
    assert {"index.html", "app.js", "style.css"} <= set(static)
    for name, (body, _) in static.items():
        text = body.decode("utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), name
        assert "innerHTML" not in text, name  # texts go in through textContent
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"web/static/*.js"' in pyproject and '"web/static/*.html"' in pyproject


def test_endpoints_follow_a_running_pipeline(clip: Path) -> None:
    sink = WebSink("127.0.0.1:0", fps=20, tick_s=0.2)
    pipeline = Pipeline(shared_engine(), [str(clip)], sinks=[sink], explain=True)
    run = Throttled(pipeline)
    source = str(clip)
    quoted = urllib.parse.quote(source)
    status, headers, page = get(sink.url)
    assert status == 200 and b"maskrt" in page and headers["Content-Type"].startswith("text/html")
    assert get(sink.url + "static/app.js")[0] == 200
    assert get(sink.url + "static/nothing.js")[0] == 404
    assert get(sink.url + "api/nothing")[0] == 404
    assert get(sink.url + "api/faces?after=x")[0] == 400
    tiles = wait_for(lambda: [t for t in get_json(sink, "/api/sources")["sources"]
                              if t["scored"] >= 3 and t["seq"] >= 2], what="scored frames")
    assert tiles[0]["id"] == source and tiles[0]["kind"] == "video"
    assert tiles[0]["latency_ms"]["p50"] is not None
    status, headers, jpeg = get(f"{sink.url}frame.jpg?source={quoted}")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
    first = int(headers["X-Frame-Seq"])
    wait_for(lambda: int(get(f"{sink.url}frame.jpg?source={quoted}")[1]["X-Frame-Seq"]) > first,
             what="a newer picture")
    assert get(f"{sink.url}frame.jpg?source=nope")[0] == 404
    summary = get_json(sink, "/api/summary")
    assert summary["mode"] == "live" and summary["finished"] is False
    assert summary["settings"]["explain"] is True and "counts" in summary["summary"]
    run.go.set()
    run.thread.join(TIMEOUT)
    assert not run.thread.is_alive()
    counters = pipeline.counters()["sources"][source]
    assert counters["read"] == 60 and run.records >= 60
    # the run ended with no page open: the server is gone
    with pytest.raises(OSError):
        get(sink.url, timeout=2)


def test_faces_without_mask_have_thumbnails_and_filters() -> None:
    from streaming_fixtures import face_paths

    photos = [str(p) for p in face_paths(8)]
    sink = WebSink(("127.0.0.1", 0), linger_s=30)
    pipeline = Pipeline(shared_engine(), photos, sinks=[sink], regions="frame", explain=True)
    pipeline.run()
    try:
        faces = get_json(sink, "/api/faces")
        expected = pipeline.counters()["total"]
        labels = get_json(sink, "/api/summary")["summary"]["labels"]
        assert faces["total"] == labels["without_mask"] == len(faces["faces"]) > 0, expected
        entry = faces["faces"][0]
        assert entry["label"] == "without_mask" and entry["uri"] in photos
        for url in (entry["face_url"], entry["cam_url"]):
            status, headers, body = get(sink.url.rstrip("/") + url)
            assert status == 200 and body[:2] == b"\xff\xd8"
        assert get(sink.url + "face/999999.jpg")[0] == 404
        assert get_json(sink, f"/api/faces?after={entry['id']}")["faces"] == faces["faces"][1:]
        assert get_json(sink, "/api/faces?source=nope")["faces"] == []
        assert len(get_json(sink, "/api/tracks?limit=1")["faces"]) == 1
        assert get_json(sink, "/api/summary")["finished"] is True
    finally:
        sink.stop()


def test_mjpeg_viewer_that_disconnects_mid_stream_and_events_to_the_end(clip: Path) -> None:
    sink = WebSink("127.0.0.1:0", fps=20, tick_s=0.2)
    pipeline = Pipeline(shared_engine(), [str(clip)], sinks=[sink])
    run = Throttled(pipeline, delay=0.05)
    url = f"{sink.url}stream.mjpg?source={urllib.parse.quote(str(clip))}"
    sock, stream = open_mjpeg(url)
    seqs = [read_part(stream)[0] for _ in range(3)]
    assert seqs == sorted(set(seqs)), seqs  # each part a newer picture
    stream.close()  # the browser goes away mid-stream (the file holds the socket open)
    sock.close()
    wait_for(lambda: sink.server.viewers()["streams"] == 0, what="the stream's thread to end")
    wait_for(lambda: sink.server.viewers()["disconnects"] >= 1, what="the disconnect counted")
    sock2, stream2 = open_mjpeg(url)  # the server goes on serving
    assert read_part(stream2)[0] >= seqs[-1]
    events = urllib.request.urlopen(sink.url + "api/events", timeout=30)
    kinds: list[str] = []
    state: dict[str, Any] = {}
    run.go.set()
    for raw in events:  # the run ends while the page is open: a last state, then "end"
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kinds.append(line[7:])
        elif line.startswith("data: ") and kinds[-1] == "state":
            state = json.loads(line[6:])
        if kinds and kinds[-1] == "end":
            break
    assert kinds[0] == "state" and kinds[-1] == "end"
    run.thread.join(TIMEOUT)
    final = state["sources"][0]
    counters = pipeline.counters()["sources"][str(clip)]
    assert state["summary"]["finished"] is True
    assert {k: final[k] for k in ("read", "scored", "dropped", "failed")} == \
        {k: counters[k] for k in ("read", "scored", "dropped", "failed")}
    assert final["state"] == "finished"
    wait_for(lambda: sink.server.closing.is_set(), what="the server to stop")
    stream2.read()  # the stream ends with the server
    stream2.close()
    sock2.close()
    wait_for(lambda: not [t for t in threading.enumerate()
                          if t.name == "maskrt-web" and t.is_alive()], what="no server thread")


def test_a_failing_record_never_reaches_the_pipeline() -> None:
    sink = WebSink("127.0.0.1:0")
    try:
        bad = Record("cam", 0, None, "scored", faces=2, region_index=0, box=[0, 0, 9, 9],
                     label="without_mask", track_label=None)
        bad.overlay = "not an image"  # type: ignore[assignment]
        sink.write(bad, None)  # logged once, never raised
        sink.write(bad, None)
        assert sink._errors >= 1
    finally:
        sink.stop()


def test_score_web_flags_fail_in_one_line(tmp_path: Path, clip: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert cli_main(["score", str(clip), "--out", str(out), "--web-linger", "5"]) == 2
    assert "--web-linger need --web" in capsys.readouterr().err
    assert cli_main(["score", str(clip), "--out", str(out), "--web", "nope:x"]) == 2
    assert "--web: expected [HOST:]PORT" in capsys.readouterr().err
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        assert cli_main(["score", str(clip), "--out", str(out), "--web", str(port)]) == 2
        err = capsys.readouterr().err
        assert f"--web {port}: cannot serve: address already in use" in err
        assert not (out / "records.jsonl").exists()  # failed before any output was opened
    finally:
        taken.close()


def test_score_with_web_records_the_view_in_the_summary(tmp_path: Path, clip: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert cli_main(["score", str(clip), "--out", str(out), "--web", "0", "--frames", "20"]) == 0
    err = capsys.readouterr().err
    url = re.search(r"live view at (http://127\.0\.0\.1:\d+/)", err).group(1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outputs"]["web"] == url and summary["counts"]["read"] == 20
