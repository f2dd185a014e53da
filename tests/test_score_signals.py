"""``maskrt score`` stopped by SIGTERM and SIGHUP (what docker stop, systemd, Kubernetes and
``timeout`` send) while it reads a real HTTP MJPEG stream and a video file: exit 143 / 129, the
summary written, records on disk complete and agreeing with it, a playable annotated video; and
records reaching records.jsonl while the source is silent. Real processes, real servers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import pytest

from streaming_fixtures import REPO, face_paths, shared_engine, write_frames_dir, write_video
from streaming_servers import mjpeg_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def cached_graph():
    """Export the graph once (into MASKRT_CACHE_DIR), so every CLI process below only loads it."""
    return shared_engine()


def start_score(args: list[str], out: Path) -> subprocess.Popen:
    """A real ``python -m maskrt score`` process; its stdout/stderr go to files in ``out``'s
    parent (a pipe nobody reads could fill up and stall it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    logs = out.parent
    return subprocess.Popen(
        [sys.executable, "-m", "maskrt", "score", *args, "--out", str(out), "--regions", "frame",
         "--progress-interval", "0.5"],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL,
        stdout=(logs / "stdout.txt").open("w"), stderr=(logs / "stderr.txt").open("w"))


def wait_for_records(path: Path, n: int, process: subprocess.Popen, timeout: float = 180) -> int:
    """Poll records.jsonl until it has ``n`` lines (the process must still be running)."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        assert process.poll() is None, (process.returncode, stderr_of(path.parent))
        if path.exists():
            count = path.read_bytes().count(b"\n")
            if count >= n:
                return count
        time.sleep(0.1)
    raise AssertionError(f"{path}: {count} of {n} records after {timeout} s; "
                         f"{stderr_of(path.parent)}")


def stderr_of(out: Path) -> str:
    path = out.parent / "stderr.txt"
    return path.read_text()[-3000:] if path.exists() else ""


def stop_with(process: subprocess.Popen, signum: int) -> int:
    try:
        process.send_signal(signum)
        return process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def check_records_match_summary(out: Path) -> tuple[dict, list[dict]]:
    """Every line of records.jsonl is whole JSON, and the records' statuses, per source and in
    all, are the summary's counts (each frame has one record with --regions frame)."""
    data = (out / "records.jsonl").read_bytes()
    assert data == b"" or data.endswith(b"\n")
    records = [json.loads(line) for line in data.decode().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accounting_ok"] is True
    counts = summary["counts"]
    assert counts["read"] == counts["scored"] + counts["dropped"] + counts["failed"] == len(records)
    assert Counter(r["status"] for r in records) == Counter(
        {s: counts[s] for s in ("scored", "dropped", "failed") if counts[s]})
    for source_id, entry in summary["sources"].items():
        mine = Counter(r["status"] for r in records if r["source_id"] == source_id)
        assert {s: mine[s] for s in ("scored", "dropped", "failed")} == {
            s: entry[s] for s in ("scored", "dropped", "failed")}, source_id
    return summary, records


@pytest.mark.parametrize("signum, status, name", [(signal.SIGTERM, 143, "terminate"),
                                                  (signal.SIGHUP, 129, "hangup")])
def test_signal_stops_a_run_cleanly_with_summary_records_and_video(tmp_path, signum, status,
                                                                     name):
    video = write_video(tmp_path / "long.avi", 600, fps=10)
    out = tmp_path / "out"
    with mjpeg_server(write_frames_dir(tmp_path / "frames", 8), fps=20) as server:
        url = f"http://127.0.0.1:{server.port}/video.mjpg"
        process = start_score([url, str(video), "--video", "--batch-size", "4"], out)
        try:
            wait_for_records(out / "records.jsonl", 8, process)
        finally:
            rc = stop_with(process, signum)
    assert rc == status, stderr_of(out)
    assert f"stopping ({name})" in stderr_of(out)
    summary, records = check_records_match_summary(out)
    assert summary["stopped_by"] == name and summary["interrupted"] is True
    assert summary["signal"] == signal.Signals(signum).name
    assert summary["sources"][url]["read"] > 0 and summary["sources"][str(video)]["read"] > 0
    for record in records:  # frames the stop caught in flight say so
        if record["status"] == "dropped" and "stopped" in record["reason"]:
            assert signal.Signals(signum).name in record["reason"]
    scored_video = summary["sources"][str(video)]["scored"]
    assert 0 < scored_video < 600
    cap = cv2.VideoCapture(summary["outputs"]["videos"][str(video)])
    try:
        assert cap.isOpened()
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == scored_video
        ok, image = cap.read()
        assert ok and image.shape[:2] == (120, 160)
    finally:
        cap.release()


def test_records_reach_the_file_while_the_source_is_silent(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    paths = face_paths(4)
    for i, path in enumerate(paths[:3]):
        shutil.copy(path, drop / f"{i}.jpg")
    out = tmp_path / "out"
    process = start_score([f"drop:{drop}", "--settle", "0"], out)
    try:
        # No record arrives after these three: they must not wait in a buffer for the next one.
        wait_for_records(out / "records.jsonl", 3, process)
        shutil.copy(paths[3], drop / "3.tmp")
        os.replace(drop / "3.tmp", drop / "3.jpg")  # an upload completing under its final name
        assert wait_for_records(out / "records.jsonl", 4, process) == 4
    finally:
        rc = stop_with(process, signal.SIGTERM)
    assert rc == 143, stderr_of(out)
    summary, records = check_records_match_summary(out)
    assert summary["counts"]["scored"] == 4 and summary["stopped_by"] == "terminate"
    assert [Path(r["uri"]).name for r in records] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]


def test_two_quick_sigints_still_write_every_counted_record_and_the_summary(tmp_path):
    """Ctrl-C pressed twice (50 ms apart): the second one gives up waiting for the frames still
    in flight, but everything the run counted reaches records.jsonl (the frames it gave up on
    as dropped) and the summary is written, agreeing with the records."""
    video = write_video(tmp_path / "long.avi", 3000, fps=10)
    out = tmp_path / "out"
    process = start_score([str(video), "--explain", "--batch-size", "16"], out)
    try:
        wait_for_records(out / "records.jsonl", 8, process)
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        rc = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert rc == 130, stderr_of(out)
    assert (out / "summary.json").exists(), stderr_of(out)
    summary, records = check_records_match_summary(out)
    assert summary["stopped_by"] == "interrupt" and summary["signal"] == "SIGINT"
    assert 0 < summary["counts"]["read"] < 3000
    # (whether frames were still in flight when the second came depends on the machine's speed)
    given_up = [r for r in records if "second SIGINT" in (r["reason"] or "")]
    assert summary["aborted"] is True or not given_up
    indices = sorted(r["frame_index"] for r in records)
    assert indices == list(range(len(records)))  # no frame counted without its record
