"""The live view in a real browser: headless Chromium (Debian's ``chromium``, installed by
``scripts/setup.sh --test``), driven over its DevTools protocol with a small WebSocket client
written here (no selenium, no playwright), loads the page of a real ``maskrt score`` run with
two sources - a loopback MJPEG camera and a video - and the test checks the tiles, that the
camera's picture changes in the page, and, after the run ended with the page still open, the
page's numbers against summary.json. Then the same page over the finished run (``maskrt
view``). Set MASKRT_WEB_SCREENSHOTS=DIR to keep the screenshots (the README's come from here).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from streaming_fixtures import REPO, cache_dir, write_frames_dir, write_video
from streaming_servers import free_port, mjpeg_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                "(scripts/install_stream_tools.sh installs it)")
TIMEOUT = 90.0


class DevTools:
    """A page of a headless Chromium over the DevTools protocol (WebSocket, RFC 6455)."""

    def __init__(self, user_dir: Path) -> None:
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--remote-debugging-port=0", "--window-size=1400,1000",
             f"--user-data-dir={user_dir}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        endpoint = None
        for line in self.process.stderr:  # type: ignore[union-attr]
            if "DevTools listening on " in line:
                endpoint = urlsplit(line.split("DevTools listening on ", 1)[1].strip())
                break
        assert endpoint is not None, "chromium did not start its DevTools endpoint"
        with urllib.request.urlopen(f"http://{endpoint.netloc}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        target = urlsplit(page["webSocketDebuggerUrl"])
        self.sock = socket.create_connection((target.hostname, target.port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
                           f"{key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.next_id = 0

    def _send(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "chromium closed the DevTools connection"
            data += chunk
        return data

    def _receive(self) -> str:
        message = b""
        while True:
            first, second = self._exactly(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exactly(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exactly(8))[0]
            message += self._exactly(n)
            if first & 0x80:
                return message.decode()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._receive())
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply
                return reply["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait(self, expression: str, what: str, timeout: float = TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
        while time.monotonic() < deadline:  # (before the page's script ran: null, not an error)
            value = self.evaluate(guarded)
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}: {expression}")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.sock.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


#: a digest of each tile's picture as the page shows it now (drawn into a canvas)
PICTURES = """(() => { const out = {};
  for (const img of document.querySelectorAll('.tile img')) {
    if (!img.naturalWidth) { out[img.alt] = null; continue; }
    const c = document.createElement('canvas'); c.width = 48; c.height = 36;
    const g = c.getContext('2d'); g.drawImage(img, 0, 0, 48, 36);
    let h = 0; for (const v of g.getImageData(0, 0, 48, 36).data) h = (h * 31 + v) >>> 0;
    out[img.alt] = h; }
  return out; })()"""
#: each tile's figures as the page shows them
TILES = """(() => Object.fromEntries([...document.querySelectorAll('.tile')].map(t => [
  t.dataset.source, Object.fromEntries([...t.querySelectorAll('[data-stat]')].map(
    d => [d.dataset.stat, d.textContent]).concat([['state', t.dataset.state]]))])))()"""
COUNTS = """Object.fromEntries([...document.querySelectorAll('#counts tr')].map(
  r => [r.dataset.key, r.cells[1].textContent]))"""


@pytest.fixture()
def browser(tmp_path: Path) -> Any:
    tools = DevTools(tmp_path / "chromium")
    yield tools
    tools.close()


def shots_dir(tmp_path: Path) -> Path:
    return Path(os.environ.get("MASKRT_WEB_SCREENSHOTS") or tmp_path / "shots")


def test_the_page_of_a_real_run_with_a_camera_and_a_video(tmp_path: Path, browser: DevTools) -> None:
    frames = write_frames_dir(tmp_path / "frames", 16, size=(480, 360))
    clip = write_video(tmp_path / "clip.avi", 80, size=(480, 360))
    out, web_port = tmp_path / "run", free_port()
    env = {**os.environ, "MASKRT_CACHE_DIR": cache_dir(), "PYTHONPATH": str(REPO)}
    with mjpeg_server(frames, fps=8) as camera:
        camera_url = f"http://127.0.0.1:{camera.port}/video.mjpg"
        process = subprocess.Popen(
            [sys.executable, "-m", "maskrt", "score", camera_url, str(clip), "--out", str(out),
             "--explain", "--web", f"127.0.0.1:{web_port}", "--web-linger", "300",
             "--duration", "25", "--progress-interval", "0"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _watch_the_run(browser, web_port, camera_url, str(clip), out, shots_dir(tmp_path))
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # ends the linger
            stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-3000:]
    assert "live view at" in stderr


def interrupt(process: subprocess.Popen, timeout: float) -> str:
    """Ctrl-C for ``process``; its stderr. One that does not end within ``timeout`` fails
    the test with every thread's traceback (SIGABRT: PYTHONFAULTHANDLER set for it), the
    evidence of where it hung."""
    process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        stderr = process.communicate(timeout=30)[1]
        pytest.fail(f"{process.args[1:4]} still running {timeout:.0f} s after Ctrl-C; its "
                    f"threads:\n{stderr[-6000:]}")


def _watch_the_run(browser: DevTools, port: int, camera: str, clip: str, out: Path,
                   shots: Path) -> None:
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + TIMEOUT
    while True:  # the server is up once the model is loaded
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the live view never answered"
            time.sleep(0.25)
    browser.call("Page.enable")
    browser.call("Page.navigate", url=url)
    browser.wait("document.querySelectorAll('.tile').length == 2 && maskrtView.states > 1",
                 "two tiles")
    first = browser.wait(f"(p => p[{json.dumps(camera)}])({PICTURES})", "the camera's picture")
    browser.wait(f"(p => p[{json.dumps(camera)}] && p[{json.dumps(camera)}] != {first})"
                 f"({PICTURES})", "the camera's picture to change")
    # the page's figures come by events once a second: on a loaded machine the first picture
    # can be on the page before a scored frame is counted there
    browser.wait(f"+{TILES}[{json.dumps(camera)}].scored > 0", "a scored camera frame on the page")
    tiles = browser.evaluate(TILES)
    assert set(tiles) == {camera, clip}
    assert int(tiles[camera]["scored"]) > 0 and tiles[camera]["state"] in ("streaming", "scoring")
    browser.wait("document.querySelectorAll('#settings tr').length > 5", "the settings")
    browser.screenshot(shots / "web_live.png")
    # the run ends (--duration) while the page is open: final figures, then "finished"
    browser.wait("maskrtView.ended && maskrtView.status == 'finished'", "the run's end", 120)
    summary = json.loads((out / "summary.json").read_text())
    tiles = browser.evaluate(TILES)
    for source_id, entry in summary["sources"].items():
        shown = {k: int(tiles[source_id][k]) for k in ("read", "scored", "dropped", "failed")}
        assert shown["read"] == shown["scored"] + shown["dropped"] + shown["failed"], shown
        # (this test found a race of the stop path: a frame dropped after summary.json was
        # written; tests/test_stop_accounting.py holds its fix)
        assert entry["read"] == entry["scored"] + entry["dropped"] + entry["failed"], entry
        assert shown == {k: entry[k] for k in shown}, (source_id, shown, entry)
    assert tiles[clip]["state"] == "finished" and int(tiles[clip]["scored"]) == 80
    counts = browser.evaluate(COUNTS)
    assert summary["accounting_ok"], summary
    for key, value in {**summary["counts"], **summary["labels"]}.items():
        assert int(counts[key]) == value, (key, counts, summary)
    shown_faces = browser.evaluate("document.querySelectorAll('#faces li').length")
    assert shown_faces == min(60, int(counts["people without mask"]))


def test_the_page_of_a_finished_run(tmp_path: Path, browser: DevTools) -> None:
    from streaming_fixtures import face_paths

    photos = tmp_path / "photos"
    photos.mkdir()
    for path in face_paths(8):
        shutil.copy(path, photos / path.name)
    out = tmp_path / "run"
    env = {**os.environ, "MASKRT_CACHE_DIR": cache_dir(), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "maskrt", "score", str(photos), "--out", str(out),
                    "--explain", "--regions", "frame", "--progress-interval", "0"],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    summary = json.loads((out / "summary.json").read_text())
    port = free_port()
    view = subprocess.Popen([sys.executable, "-m", "maskrt", "view", str(out), "--port",
                             str(port)], cwd=REPO, env={**env, "PYTHONFAULTHANDLER": "1"},
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and view.poll() is None, "no view"
                time.sleep(0.25)
        browser.call("Page.navigate", url=url)
        browser.wait("maskrtView.ended && document.querySelectorAll('.tile').length == 1",
                     "the run's tile")
        n = summary["labels"]["without_mask"]
        browser.wait(f"document.querySelectorAll('#faces li').length == {n}", "the gallery")
        browser.evaluate("document.getElementById('f-label').value = ''; "
                         "document.getElementById('f-apply').click(); true")
        browser.wait(f"document.querySelectorAll('#faces li').length == {summary['counts']['scored']}",
                     "every face with the label filter off")
        browser.wait("[...document.querySelectorAll('#faces img')].every(i => i.complete && "
                     "i.naturalWidth > 0)", "the thumbnails")
        browser.screenshot(shots_dir(tmp_path) / "web_run.png")
    finally:
        interrupt(view, 30)
    assert view.returncode in (0, 130)
