"""Real stream servers for the streaming tests, run as separate processes on loopback.

* ``python streaming_servers.py mjpeg --port P --frames DIR [--fps F]``: an HTTP MJPEG server
  (``multipart/x-mixed-replace``, what IP cameras serve) that loops over the JPEG files in DIR,
  written with the standard library only.
* ``/usr/bin/python3 streaming_servers.py rtsp --port P --video FILE.avi``: a GStreamer RTSP
  server (Debian's python3 with ``gi``; see shared/notes/streams-on-loopback.md) serving an MJPG
  AVI as RTP/JPEG at ``rtsp://127.0.0.1:P/stream``.

The helpers below start them with subprocess on a free port, wait until the port answers, and stop
them by their own pid. Nothing here fakes a camera: the pipeline reads these through OpenCV's
FFmpeg backend exactly as it reads a real one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SYSTEM_PYTHON = "/usr/bin/python3"
BOUNDARY = "maskrtframe"


# --------------------------------------------------------------------------- helpers for tests

def free_port() -> int:
    # Not maskrt.serving.local_server.free_port: this file also runs as a script on Debian's
    # python3 (the RTSP server), where maskrt is not installed.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 15.0) -> None:
    """Until 127.0.0.1:port accepts connections; raises if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"stream server exited with {process.returncode} before serving "
                               f"port {port}: {out[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"stream server did not answer on port {port} within {timeout} s")


class ServerProcess:
    """One server process; ``start()`` (again after ``kill()``) on the same port, ``kill()`` by pid."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.argv = argv
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        wait_for_port(self.port, self.process)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crashed camera or server would go; waits for the pid to be reaped."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def mjpeg_server(frames_dir: Path, port: int | None = None, fps: float = 20.0) -> ServerProcess:
    port = port or free_port()
    argv = [sys.executable, str(HERE), "mjpeg", "--port", str(port), "--frames", str(frames_dir),
            "--fps", str(fps)]
    return ServerProcess(argv, port)


def rtsp_unavailable_reason() -> str | None:
    """Why the GStreamer RTSP server cannot run here, or None when it can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found (the RTSP server runs on Debian's python3 with gi)"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', "
             "'1.0'); from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "missing = [e for e in ('avidemux', 'jpegdec', 'jpegenc', 'rtpjpegpay', "
             "'videoconvert', 'filesrc') if Gst.ElementFactory.find(e) is None]; "
             "print(','.join(missing))")
    try:
        out = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"cannot probe GStreamer: {err}"
    if out.returncode != 0:
        return ("GStreamer RTSP server not importable from /usr/bin/python3 (apt-get install "
                "gir1.2-gst-rtsp-server-1.0 python3-gi python3-gst-1.0 gstreamer1.0-plugins-base "
                f"gstreamer1.0-plugins-good): {out.stderr.strip().splitlines()[-1:]}")
    if out.stdout.strip():
        return f"GStreamer elements missing: {out.stdout.strip()} (gstreamer1.0-plugins-good)"
    return None


def rtsp_server(video: Path, port: int | None = None) -> ServerProcess:
    port = port or free_port()
    return ServerProcess([SYSTEM_PYTHON, str(HERE), "rtsp", "--port", str(port), "--video",
                          str(video)], port)


def ffmpeg_path() -> str | None:
    return shutil.which("ffmpeg")


# --------------------------------------------------------------------------- the servers

def serve_mjpeg(port: int, frames_dir: Path, fps: float) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    frames = [p.read_bytes() for p in sorted(frames_dir.glob("*.jpg"))]
    if not frames:
        raise SystemExit(f"no .jpg frames in {frames_dir}")
    period = 1.0 / fps

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            start = time.monotonic()
            n = 0
            try:
                while True:
                    jpeg = frames[n % len(frames)]
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                     f"Content-Length: {len(jpeg)}\r\n\r\n".encode())
                    self.wfile.write(jpeg)
                    self.wfile.write(b"\r\n")
                    self.wfile.flush()
                    n += 1
                    delay = start + n * period - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            except (BrokenPipeError, ConnectionResetError):
                return

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def serve_rtsp(port: int, video: Path) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    # Re-encoding OpenCV's MJPG frames is what decodes cleanly on the reading side (see the notes).
    factory.set_launch(f"( filesrc location={video} ! avidemux ! jpegdec ! videoconvert ! "
                       "video/x-raw,format=I420 ! jpegenc quality=90 ! rtpjpegpay name=pay0 pt=26 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory("/stream", factory)
    server.attach(None)
    GLib.MainLoop().run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    mjpeg = sub.add_parser("mjpeg")
    mjpeg.add_argument("--port", type=int, required=True)
    mjpeg.add_argument("--frames", type=Path, required=True)
    mjpeg.add_argument("--fps", type=float, default=20.0)
    rtsp = sub.add_parser("rtsp")
    rtsp.add_argument("--port", type=int, required=True)
    rtsp.add_argument("--video", type=Path, required=True)
    args = parser.parse_args()
    if args.kind == "mjpeg":
        serve_mjpeg(args.port, args.frames, args.fps)
    else:
        serve_rtsp(args.port, args.video)


if __name__ == "__main__":
    main()
