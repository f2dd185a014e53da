"""Sources on their own (no model): spec parsing, folder order, real videos, drop folders, and a
live source that cannot connect."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

from maskrt.image import ImageError, decode_image, image_size, limit_side, truncation_reason
from maskrt.stream.sources import (CameraSource, DropFolderSource, FolderSource, ImageFileSource,
                                   ReconnectPolicy, StreamSource, VideoFileSource, open_source,
                                   open_sources, redact_url)
from streaming_fixtures import face_frames, face_paths, write_video
from streaming_servers import free_port


def collect(source, stop=None, limit=10_000):
    stop = stop or threading.Event()
    frames = []
    for frame in source.frames(stop):
        frames.append(frame)
        if len(frames) >= limit:
            break
    return frames


# --------------------------------------------------------------------------- specs

def test_open_source_parses_every_kind_of_spec(tmp_path: Path) -> None:
    image = tmp_path / "face.jpg"
    cv2.imwrite(str(image), face_frames(1)[0])
    video = write_video(tmp_path / "clip.avi", 3)
    assert isinstance(open_source(str(image)), ImageFileSource)
    assert isinstance(open_source(image), ImageFileSource)
    assert isinstance(open_source(str(tmp_path)), FolderSource)
    assert isinstance(open_source(str(video)), VideoFileSource)
    camera = open_source("2")
    assert isinstance(camera, CameraSource) and camera.index == 2 and camera.id == "camera:2"
    assert camera.live
    assert isinstance(open_source(0), CameraSource)
    stream = open_source("rtsp://admin:secret@10.0.0.7:554/h264", retries=3, timeout_s=1.5)
    assert isinstance(stream, StreamSource) and stream.live
    assert stream.retries == 3 and stream.timeout_s == 1.5
    assert "secret" not in stream.id and stream.id == "rtsp://admin:***@10.0.0.7:554/h264"
    assert stream.url.endswith("secret@10.0.0.7:554/h264")
    assert isinstance(open_source("http://127.0.0.1:8080/video.mjpg"), StreamSource)
    drop = open_source(f"drop:{tmp_path}", settle_s=0.3, retries=5)  # retries: not a drop option
    assert isinstance(drop, DropFolderSource) and drop.settle_s == 0.3 and not drop.live
    assert drop.id == f"drop:{tmp_path}"
    assert isinstance(open_source(f"file://{image}"), ImageFileSource)
    same = FolderSource(tmp_path, id="mine")
    assert open_source(same) is same and same.id == "mine"


@pytest.mark.parametrize("spec, words", [
    ("/no/such/file.jpg", ["does not exist", "camera index", "drop:DIR"]),
    ("", ["empty"]),
    ("ftp://example.com/x.jpg", ["schemes", "'ftp'"]),
    ("drop:", ["drop:DIR"]),
    ("drop:/no/such/folder", ["existing folder"]),
    (3.5, ["expected", "float"]),
    (None, ["expected", "NoneType"]),
])
def test_bad_specs_raise_value_errors_saying_what_was_expected(spec, words) -> None:
    with pytest.raises(ValueError) as info:
        open_source(spec)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_bad_source_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="retries"):
        StreamSource("rtsp://x/y", retries=-1)
    with pytest.raises(ValueError, match="backoff"):
        StreamSource("rtsp://x/y", backoff=(2.0, 1.0))
    with pytest.raises(ValueError, match="camera index"):
        CameraSource(-1)


def test_redact_url_keeps_urls_without_passwords() -> None:
    assert redact_url("rtsp://cam/stream") == "rtsp://cam/stream"
    assert redact_url("http://u:p@h:81/x?y=1") == "http://u:***@h:81/x?y=1"


# --------------------------------------------------------------------------- files

def test_folder_is_recursive_in_a_stable_order_and_skips_hidden_files(tmp_path: Path) -> None:
    for rel in ["b.jpg", "a.jpg", "sub/z.jpg", "sub/deeper/c.png", ".hidden.jpg",
                ".cache/x.jpg", "notes.weird"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    frames = collect(FolderSource(tmp_path))
    names = [Path(f.uri).relative_to(tmp_path).as_posix() for f in frames]
    assert names == ["a.jpg", "b.jpg", "notes.weird", "sub/deeper/c.png", "sub/z.jpg"]
    assert [f.index for f in frames] == list(range(5))
    assert all(f.data == b"x" and f.timestamp == pytest.approx(Path(f.uri).stat().st_mtime)
               for f in frames)
    only_images = collect(FolderSource(tmp_path, extensions={".JPG", ".png"}))
    assert len(only_images) == 4


def test_videos_in_a_folder_yield_their_frames(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.jpg"), face_frames(1)[0])
    video = write_video(tmp_path / "b.avi", 4, fps=10)
    (tmp_path / "c.mp4").write_bytes(b"not a video" * 10)
    cv2.imwrite(str(tmp_path / "d.jpg"), face_frames(1)[0])
    source = FolderSource(tmp_path)
    frames = collect(source)
    assert [f.index for f in frames] == list(range(7))
    assert frames[0].data is not None and frames[6].data is not None
    assert all(f.image is not None and f.image.shape == (120, 160, 3) and f.uri == str(video)
               for f in frames[1:5])
    assert [f.timestamp for f in frames[1:5]] == pytest.approx([0.0, 0.1, 0.2, 0.3], abs=1e-3)
    assert frames[5].error and "c.mp4" in frames[5].error and frames[5].uri.endswith("c.mp4")
    assert source.state == "finished"


def test_unreadable_image_file_gives_a_failed_frame(tmp_path: Path) -> None:
    frames = collect(ImageFileSource(tmp_path / "gone.jpg"))
    assert len(frames) == 1 and frames[0].error and "cannot read" in frames[0].error


def test_video_written_by_opencv_yields_every_frame_with_its_position(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 12, fps=10)
    source = VideoFileSource(video)
    frames = collect(source)
    assert [f.index for f in frames] == list(range(12))
    assert all(f.error is None and f.image.shape == (120, 160, 3) for f in frames)
    stamps = [f.timestamp for f in frames]
    assert stamps == pytest.approx([i * 0.1 for i in range(12)], abs=1e-3)
    assert source.fps == pytest.approx(10.0) and source.state == "finished"


def test_truncated_video_ends_with_a_failed_frame_saying_where(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 20)
    data = video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    frames = collect(VideoFileSource(cut))
    good = [f for f in frames if f.error is None]
    assert 0 < len(good) < 20
    assert frames[-1].error and "truncated" in frames[-1].error and "of 20 frames" in frames[-1].error
    assert frames[-1].index == len(good)
    not_video = tmp_path / "fake.mp4"
    not_video.write_bytes(b"this is not a video at all" * 10)
    frames = collect(VideoFileSource(not_video))
    assert len(frames) == 1 and frames[0].error


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg (Debian package) not installed")
def test_video_written_by_ffmpeg_is_read(tmp_path: Path) -> None:
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, frame in enumerate(face_frames(6)):
        cv2.imwrite(str(frames_dir / f"{i:03d}.png"), frame)
    video = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-framerate", "5", "-i",
                    str(frames_dir / "%03d.png"), "-c:v", "mpeg4", "-q:v", "3",
                    "-pix_fmt", "yuv420p", str(video)], check=True, timeout=60)
    source = open_source(str(video))
    frames = collect(source)
    assert isinstance(source, VideoFileSource)
    assert len(frames) == 6 and all(f.error is None for f in frames), [f.error for f in frames]
    assert frames[-1].timestamp == pytest.approx(1.0, abs=1e-3)


# --------------------------------------------------------------------------- drop folders

@contextmanager
def watching(source: DropFolderSource) -> Iterator[list]:
    """Runs a drop folder's frames() on a thread; yields the list its frames land in, as they
    come; stops the source and checks its thread ended on leaving."""
    stop = threading.Event()
    got: list = []
    thread = threading.Thread(target=lambda: got.extend(source.frames(stop)))
    thread.start()
    try:
        yield got
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def wait_for(got: list, count: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def test_drop_folder_yields_each_new_complete_file_once(tmp_path: Path) -> None:
    jpeg = cv2.imencode(".jpg", face_frames(1)[0])[1].tobytes()
    (tmp_path / "old.jpg").write_bytes(jpeg)
    source = DropFolderSource(tmp_path, settle_s=0.3, poll_s=0.05, incomplete_grace_s=5.0)
    with watching(source) as got:
        # An upload in progress: half a JPEG now, the rest a little later (past settle_s).
        slow = tmp_path / "slow.jpg"
        slow.write_bytes(jpeg[: len(jpeg) // 2])
        # An upload under a temporary name, renamed when done.
        (tmp_path / "cam.jpg.part").write_bytes(jpeg)
        time.sleep(0.6)
        with slow.open("ab") as f:
            f.write(jpeg[len(jpeg) // 2:])
        (tmp_path / "cam.jpg.part").rename(tmp_path / "cam.jpg")
        (tmp_path / ".hidden.jpg").write_bytes(jpeg)
        wait_for(got, 3)
        time.sleep(0.5)  # nothing more may come
        names = sorted(Path(f.uri).name for f in got)
        assert names == ["cam.jpg", "old.jpg", "slow.jpg"], names
        assert all(f.data == jpeg for f in got)  # complete files only
        # A file replaced under the same name is a new file.
        (tmp_path / "old.jpg").unlink()
        (tmp_path / "old.jpg").write_bytes(jpeg + b"\0")
        wait_for(got, 4)
        assert len(got) == 4 and Path(got[3].uri).name == "old.jpg"
        assert [f.index for f in got] == [0, 1, 2, 3]


def test_drop_folder_waits_for_an_upload_that_has_not_written_yet(tmp_path: Path) -> None:
    # An uploader creates the file, then writes: with settle_s=0 the empty file (or a first few
    # signature bytes) is seen before its data, and must not be passed on as a broken image.
    jpeg = cv2.imencode(".jpg", face_frames(1)[0])[1].tobytes()
    source = DropFolderSource(tmp_path, settle_s=0.0, poll_s=0.02, incomplete_grace_s=5.0)
    with watching(source) as got:
        (tmp_path / "empty_first.jpg").write_bytes(b"")
        (tmp_path / "two_bytes_first.jpg").write_bytes(jpeg[:2])
        time.sleep(0.3)  # many polls see them unfinished
        assert got == []
        (tmp_path / "empty_first.jpg").write_bytes(jpeg)
        with (tmp_path / "two_bytes_first.jpg").open("ab") as f:
            f.write(jpeg[2:])
        wait_for(got, 2)
        time.sleep(0.2)  # nothing more may come
    assert sorted(Path(f.uri).name for f in got) == ["empty_first.jpg", "two_bytes_first.jpg"]
    assert all(f.data == jpeg for f in got)


def test_drop_folder_passes_on_a_file_still_empty_after_the_grace(tmp_path: Path) -> None:
    (tmp_path / "never_written.jpg").write_bytes(b"")
    source = DropFolderSource(tmp_path, settle_s=0.0, poll_s=0.02, incomplete_grace_s=0.3)
    with watching(source) as got:
        wait_for(got, 1)
    assert len(got) == 1 and got[0].data == b""  # then fails in decode: "got 0 bytes"


def test_drop_folder_can_ignore_existing_files(tmp_path: Path) -> None:
    (tmp_path / "before.jpg").write_bytes(b"x")
    source = DropFolderSource(tmp_path, settle_s=0.0, poll_s=0.05, existing=False)
    with watching(source) as got:
        time.sleep(0.2)
        (tmp_path / "after.jpg").write_bytes(b"y")
        wait_for(got, 1, timeout_s=5)
    assert [Path(f.uri).name for f in got] == ["after.jpg"]


# --------------------------------------------------------------------------- live sources

def test_unreachable_stream_gives_one_failed_frame_then_gives_up(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: connection refused
    source = StreamSource(f"http://127.0.0.1:{port}/video.mjpg", retries=2, backoff=(0.05, 0.1),
                          timeout_s=2)
    start = time.monotonic()
    frames = collect(source)
    assert time.monotonic() - start < 10
    assert len(frames) == 1 and frames[0].index == 0
    assert "cannot open" in frames[0].error and str(port) in frames[0].error
    assert source.state == "failed" and source.connect_failures == 3 and source.reconnects == 0


@pytest.mark.parametrize("text, policy", [
    ("forever", ReconnectPolicy()), (None, ReconnectPolicy()), ("2", ReconnectPolicy(attempts=2)),
    (0, ReconnectPolicy(attempts=0)), ("for:3.5", ReconnectPolicy(seconds=3.5))])
def test_reconnect_policies_parse(text, policy) -> None:
    assert ReconnectPolicy.parse(text) == policy
    assert ReconnectPolicy.parse(policy.describe()) == policy


@pytest.mark.parametrize("text", ["sometimes", "-1", "for:", "for:-2", "2.5"])
def test_bad_reconnect_policies_say_what_was_expected(text) -> None:
    with pytest.raises(ValueError, match="forever, N"):
        ReconnectPolicy.parse(text)


def test_reconnect_policy_gives_up_after_attempts_or_outage_time() -> None:
    assert not ReconnectPolicy().gives_up(10_000, 1e9)
    two = ReconnectPolicy(attempts=2)
    assert [two.gives_up(n, 0.0) for n in (1, 2, 3)] == [False, False, True]
    three_s = ReconnectPolicy(seconds=3)
    assert [three_s.gives_up(1, t) for t in (0.0, 2.9, 3.0)] == [False, False, True]


def test_outage_limit_in_seconds_ends_a_dead_stream(tmp_path: Path) -> None:
    port = free_port()
    source = StreamSource(f"http://127.0.0.1:{port}/video.mjpg", reconnect="for:0.5",
                          backoff=(0.05, 0.1), timeout_s=2)
    frames = collect(source)
    assert len(frames) == 1 and "cannot open" in frames[0].error
    assert source.state == "failed" and source.connect_failures >= 2
    assert source.waiting_s() > 0 and source.retries is None


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.path.exists("/dev/video9"),
                    reason="needs Linux without a /dev/video9")
def test_missing_camera_is_not_found() -> None:
    source = CameraSource(9, retries=0)
    frames = collect(source)
    assert [f.error for f in frames] == ["camera 9: not found"]
    assert source.state == "failed" and source.last_error == "camera 9: not found"


def test_invalid_specs_become_failed_sources_beside_good_ones(tmp_path: Path) -> None:
    image = tmp_path / "face.jpg"
    cv2.imwrite(str(image), face_frames(1)[0])
    sources, problems = open_sources([str(image), str(tmp_path / "gone.jpg"), "ftp://x/y"])
    assert isinstance(sources[0], ImageFileSource) and len(problems) == 2
    assert [type(s).__name__ for s in sources[1:]] == ["InvalidSource", "InvalidSource"]
    frames = collect(sources[1])
    assert len(frames) == 1 and "does not exist" in frames[0].error
    assert sources[1].id == str(tmp_path / "gone.jpg") and sources[1].state == "failed"
    assert not sources[1].live and sources[1].finite and not sources[0].live
    assert not StreamSource("rtsp://x/y").finite and not DropFolderSource(tmp_path).finite


# --------------------------------------------------------------------------- encoded images

def test_truncation_and_header_sizes(tmp_path: Path) -> None:
    frame = face_frames(1)[0]
    jpeg = cv2.imencode(".jpg", frame)[1].tobytes()
    png = cv2.imencode(".png", frame)[1].tobytes()
    assert truncation_reason(jpeg) is None and truncation_reason(png) is None
    assert truncation_reason(jpeg + b"\0\0\0") is None  # padding after the end marker
    assert "JPEG" in truncation_reason(jpeg[:-100])
    assert "PNG" in truncation_reason(png[:-30])
    assert truncation_reason(b"plain text") is None
    assert image_size(jpeg) == (160, 120) and image_size(png) == (160, 120)
    assert image_size(b"GIF89a...") is None


def test_decode_image_rejects_bad_data_and_bounds_huge_images() -> None:
    frame = face_frames(1)[0]
    jpeg = cv2.imencode(".jpg", frame)[1].tobytes()
    with pytest.raises(ImageError, match="0 bytes"):
        decode_image(b"", what="empty.jpg")
    with pytest.raises(ImageError, match="truncated JPEG"):
        decode_image(jpeg[: len(jpeg) // 2], what="cut.jpg")
    with pytest.raises(ImageError, match="not a decodable image"):
        decode_image(b"hello, world\n" * 20, what="notes.txt")
    big = cv2.resize(frame, (5000, 3000), interpolation=cv2.INTER_NEAREST)
    decoded = decode_image(cv2.imencode(".jpg", big)[1].tobytes(), max_side=2048)
    assert decoded.shape == (750, 1250, 3)  # decoded at 1/4 size straight from the JPEG
    assert limit_side(np.zeros((100, 400, 3), np.uint8), 224).shape == (56, 224, 3)
    gray16 = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)
    assert decode_image(cv2.imencode(".png", gray16)[1].tobytes()).shape == (48, 64, 3)


def test_face_paths_are_shared_images() -> None:
    assert all(p.is_file() for p in face_paths(4))
