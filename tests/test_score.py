"""``maskrt score``: records.jsonl, summary.json, overlays, annotated videos, progress, bad specs,
unreachable URLs, and Ctrl-C (a real SIGINT to a real process) still writing the summary."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from maskrt.cli import main as cli_main
from maskrt.stream.records import JSON_FIELDS
from streaming_fixtures import (REPO, face_paths, has_cam_kernel, maskrt_threads,
                                read_jsonl, shared_engine, write_video)
from streaming_servers import free_port


@pytest.fixture(scope="module", autouse=True)
def cached_graph():
    """Export the graph once (into MASKRT_CACHE_DIR), so every CLI run below only loads it."""
    return shared_engine()


def test_score_writes_records_summary_overlays_and_videos(tmp_path, capsys):
    folder = tmp_path / "crops"
    folder.mkdir()
    for i, path in enumerate(face_paths(3)):
        shutil.copy(path, folder / f"{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"")
    video = write_video(tmp_path / "clip.avi", 6, fps=8)
    explain = has_cam_kernel()
    out = tmp_path / "out"
    argv = ["score", str(folder), str(video), "--out", str(out), "--batch-size", "4",
            "--max-wait-ms", "5", "--video", "--progress-interval", "0.2", "--regions", "frame"]
    rc = cli_main(argv + (["--explain"] if explain else []))
    assert rc == 0
    captured = capsys.readouterr()
    assert "fr/s" in captured.err and "scored" in captured.err  # progress lines
    assert "accounting ok" in captured.out

    records = read_jsonl(out / "records.jsonl")
    assert len(records) == 10
    for record in records:
        assert list(record)[: len(JSON_FIELDS)] == list(JSON_FIELDS)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accounting_ok"] is True and summary["interrupted"] is False
    assert summary["counts"] == {"read": 10, "scored": 9, "dropped": 0, "failed": 1}
    assert summary["sources"][str(folder)]["failed"] == 1
    assert summary["sources"][str(video)]["scored"] == 6
    assert summary["sources"][str(video)]["kind"] == "video"
    assert sum(summary["labels"].values()) == 9
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert summary["throughput_fps"] > 0 and summary["backend"].startswith("onnxruntime")
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["uri"].endswith("broken.jpg") and "0 bytes" in failed[0]["reason"]
    # The annotated video has one frame per scored video frame, at the video's size.
    video_out = Path(summary["outputs"]["videos"][str(video)])
    cap = cv2.VideoCapture(str(video_out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 120)
    cap.release()
    if explain:
        overlays = [r["overlay"] for r in records if r["status"] == "scored"]
        assert len(overlays) == 9 and all(Path(p).is_file() for p in overlays)
        assert cv2.imread(overlays[-1]).shape[:2] in {(120, 160), cv2.imread(
            str(folder / "0.jpg")).shape[:2], cv2.imread(str(folder / "1.jpg")).shape[:2],
            cv2.imread(str(folder / "2.jpg")).shape[:2]}
    assert maskrt_threads() == []


def test_unreachable_url_is_a_failure_in_the_summary_not_a_crash(tmp_path):
    image = tmp_path / "face.jpg"
    shutil.copy(face_paths(1)[0], image)
    url = f"http://127.0.0.1:{free_port()}/video.mjpg"
    out = tmp_path / "out"
    rc = cli_main(["score", url, str(image), "--out", str(out), "--retries", "0",
                   "--progress-interval", "0", "--regions", "frame"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accounting_ok"] is True
    assert summary["sources"][url]["failed"] == 1 and summary["sources"][url]["state"] == "failed"
    assert any("cannot open" in reason for reason in summary["sources"][url]["reasons"])
    assert summary["sources"][str(image)]["scored"] == 1


def test_bad_spec_exits_2_saying_what_was_expected(tmp_path, capsys):
    rc = cli_main(["score", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "camera index" in err and "drop:DIR" in err


def test_ctrl_c_stops_cleanly_and_still_writes_the_summary(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    for i, path in enumerate(face_paths(2)):
        shutil.copy(path, drop / f"{i}.jpg")
    video = write_video(tmp_path / "long.avi", 300)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "maskrt", "score", f"drop:{drop}", str(video), "--out", str(out),
         "--batch-size", "4", "--settle", "0", "--progress-interval", "0.5", "--regions", "frame"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        records_path = out / "records.jsonl"
        while time.monotonic() < deadline and process.poll() is None:
            if records_path.exists() and len(records_path.read_text().splitlines()) >= 4:
                break  # records reach the file within a second: scoring is under way
            time.sleep(0.2)
        time.sleep(1.0)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr[-3000:]
    assert "stopping (interrupt)" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["accounting_ok"] is True
    records = read_jsonl(out / "records.jsonl")
    assert len(records) == summary["counts"]["read"] > 0
    counts = summary["counts"]
    assert counts["read"] == counts["scored"] + counts["dropped"] + counts["failed"]
    video_records = [r for r in records if r["source_id"] == str(video)]
    assert 0 < len(video_records) < 300
    assert sorted(r["frame_index"] for r in video_records) == list(range(len(video_records)))
    assert {r["uri"] for r in records if r["source_id"] == f"drop:{drop}"} == {
        str(drop / "0.jpg"), str(drop / "1.jpg")}
    assert "accounting ok" in stdout
