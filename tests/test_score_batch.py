"""``maskrt score`` as a batch job: it always finishes (a dead camera among files gives up by the
default reconnect policy; ``--reconnect``, ``--frames``), reports throughput over the time frames
flowed, and bad sources fail alone: a missing path among good ones, every path missing, a missing
camera index, a video inside a folder. Real processes and real (refused) connections."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from maskrt.cli import main as cli_main
from streaming_fixtures import (REPO, face_paths, shared_engine, write_frames_dir, write_video)
from streaming_servers import free_port, mjpeg_server


@pytest.fixture(scope="module", autouse=True)
def cached_graph():
    """Export the graph once (into MASKRT_CACHE_DIR), so every CLI run below only loads it."""
    return shared_engine()


def run_score(args: list[str], out: Path, timeout: float = 300) -> tuple[int, str, dict]:
    """A real ``python -m maskrt score`` process that must end by itself (a hang fails the test
    after ``timeout`` instead of stalling the suite); returns its status, stderr and summary."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "maskrt", "score", *args, "--out", str(out), "--regions",
             "frame", "--progress-interval", "0"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"maskrt score did not finish by itself: {err.stderr}") from err
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return done.returncode, done.stderr, summary


def records_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def test_files_with_a_dead_camera_finish_by_default_and_report_flowing_throughput(tmp_path):
    video = write_video(tmp_path / "clip.avi", 12, fps=10)
    url = f"rtsp://127.0.0.1:{free_port()}/stream"  # nothing listens: refused, every time
    out = tmp_path / "out"
    rc, err, summary = run_score([str(video), url], out)
    assert rc == 0, err[-3000:]
    assert summary["accounting_ok"] is True and summary["stopped_by"] is None
    assert summary["settings"]["reconnect"] == "3"
    dead = summary["sources"][url]
    assert dead["state"] == "failed" and dead["failed"] == 1 and dead["connect_failures"] == 4
    assert dead["waiting_s"] > 0
    assert summary["sources"][str(video)]["scored"] == 12
    # Throughput is over the time frames flowed, not diluted by the wait on the dead camera.
    assert 0 < summary["flowing_s"] <= summary["elapsed_s"]
    assert summary["throughput_fps"] == pytest.approx(12 / summary["flowing_s"], rel=0.01)
    assert summary["throughput_fps"] >= summary["wall_throughput_fps"]
    assert summary["idle_s"] == pytest.approx(summary["elapsed_s"] - summary["flowing_s"],
                                              abs=0.01)


@pytest.mark.parametrize("policy, attempts", [("2", 3), ("for:3", None)])
def test_reconnect_policy_bounds_a_run_of_dead_cameras(tmp_path, policy, attempts):
    url = f"http://127.0.0.1:{free_port()}/video.mjpg"
    out = tmp_path / "out"
    rc, err, summary = run_score([url, "--reconnect", policy], out)
    assert rc == 0, err[-3000:]
    dead = summary["sources"][url]
    assert dead["state"] == "failed" and dead["failed"] == 1 and summary["accounting_ok"]
    assert summary["settings"]["reconnect"] == policy
    if attempts is not None:
        assert dead["connect_failures"] == attempts
    else:
        assert dead["connect_failures"] >= 2  # retried, then gave up when the outage ran out
    assert "giving up" in err


def test_bad_reconnect_policy_exits_2(tmp_path, capsys):
    rc = cli_main(["score", "0", "--reconnect", "sometimes", "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "forever, N" in capsys.readouterr().err


def test_frames_limit_stops_a_live_stream(tmp_path):
    out = tmp_path / "out"
    with mjpeg_server(write_frames_dir(tmp_path / "frames", 4), fps=20) as server:
        url = f"http://127.0.0.1:{server.port}/video.mjpg"
        rc, err, summary = run_score([url, "--frames", "5"], out)
    assert rc == 0, err[-3000:]
    assert summary["stopped_by"] == "frames" and summary["accounting_ok"] is True
    assert summary["counts"]["read"] == 5 == len(records_of(out))
    assert summary["counts"]["scored"] + summary["counts"]["dropped"] == 5


def test_a_missing_path_fails_alone_and_the_others_are_scored(tmp_path, capsys):
    image = tmp_path / "face.jpg"
    shutil.copy(face_paths(1)[0], image)
    missing = tmp_path / "gone.avi"
    out = tmp_path / "out"
    rc = cli_main(["score", str(image), str(missing), "--out", str(out), "--regions", "frame",
                   "--progress-interval", "0"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accounting_ok"] is True
    assert summary["sources"][str(image)]["scored"] == 1
    assert summary["sources"][str(missing)]["failed"] == 1
    assert summary["sources"][str(missing)]["state"] == "failed"
    failed = [r for r in records_of(out) if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["source_id"] == str(missing)
    assert "does not exist" in failed[0]["reason"]
    assert "does not exist" in capsys.readouterr().err  # said once, as a warning


def test_every_path_missing_exits_2_with_one_line(tmp_path, capsys):
    rc = cli_main(["score", str(tmp_path / "a.jpg"), str(tmp_path / "b"), "--out",
                   str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "a.jpg" in err and "does not exist" in err
    assert not (tmp_path / "out" / "records.jsonl").exists()


@pytest.mark.skipif(os.path.exists("/dev/video9"), reason="this machine has a camera 9")
def test_missing_camera_index_says_not_found(tmp_path):
    out = tmp_path / "out"
    rc = cli_main(["score", "9", "--reconnect", "0", "--out", str(out), "--regions", "frame",
                   "--progress-interval", "0"])
    assert rc == 0
    [record] = records_of(out)
    assert record["status"] == "failed" and record["reason"] == "camera 9: not found"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sources"]["camera:9"]["last_error"] == "camera 9: not found"


def test_videos_in_a_folder_are_scored_as_videos(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, path in enumerate(face_paths(2)):
        shutil.copy(path, folder / f"a{i}.jpg")
    video = write_video(folder / "b_clip.avi", 5, fps=10)
    out = tmp_path / "out"
    rc = cli_main(["score", str(folder), "--out", str(out), "--regions", "frame",
                   "--progress-interval", "0"])
    assert rc == 0
    records = records_of(out)
    assert [r["status"] for r in records] == ["scored"] * 7
    from_video = [r for r in records if r["uri"] == str(video)]
    assert [r["frame_index"] for r in from_video] == [2, 3, 4, 5, 6]
    assert [r["source_timestamp"] for r in from_video] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4],
                                                                        abs=1e-3)
    assert all(r["box"] == [0, 0, 160, 120] for r in from_video)


def test_progress_prints_the_final_line_once_with_finished_sources(tmp_path):
    import io

    from maskrt.cli.score_report import Progress
    from maskrt.stream.pipeline import Pipeline

    video = write_video(tmp_path / "clip.avi", 6)
    pipeline = Pipeline(shared_engine(), [str(video)], regions="frame")
    pipeline.run()
    stream = io.StringIO()
    progress = Progress(pipeline, stream, interval=1e-9)
    progress.maybe_print()  # the run is over: the final line is finish()'s
    progress.finish()
    progress.finish()
    [line] = stream.getvalue().splitlines()
    assert "6 read, 6 scored" in line and f"{video.name}: " in line and "finished" in line


def test_a_run_whose_cameras_were_lost_says_so_in_its_last_line(tmp_path, capsys):
    """Files and a dead camera under the default reconnect policy (3 attempts), and two dead
    cameras under --reconnect 1: the run ends by itself, and its last line says the cameras
    were lost instead of ending like a finished batch job."""
    video = write_video(tmp_path / "clip.avi", 4, fps=10)
    url = f"rtsp://127.0.0.1:{free_port()}/stream"  # nothing listens: refused, every time
    assert cli_main(["score", str(video), url, "--out", str(tmp_path / "a"), "--regions",
                     "frame", "--progress-interval", "0"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(f"LOST: the only camera/stream, {url}, gave up reconnecting "
                           f"(--reconnect 3); last error: "), last
    urls = [f"http://127.0.0.1:{free_port()}/video.mjpg", f"rtsp://127.0.0.1:{free_port()}/s"]
    assert cli_main(["score", *urls, "--reconnect", "1", "--out", str(tmp_path / "b"),
                     "--regions", "frame", "--progress-interval", "0"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(f"LOST: all 2 cameras/streams gave up reconnecting (--reconnect 1): "
                           f"{urls[0]}, {urls[1]}; last error: "), last


def test_lost_cameras_line_names_the_lost_among_the_live_only():
    from maskrt.cli.score_report import lost_cameras

    def source(kind: str, state: str) -> dict:
        return {"kind": kind, "state": state, "last_error": "cannot open" if state == "failed"
                else None}

    summary = {"settings": {"reconnect": "for:30"}, "sources": {
        "a.jpg": source("image", "failed"), "rtsp://up/1": source("stream", "finished"),
        "0": source("camera", "failed")}}
    assert lost_cameras(summary) == ("LOST: 1 of 2 cameras/streams gave up reconnecting "
                                     "(--reconnect for:30): 0; last error: cannot open")
    summary["sources"]["0"]["state"] = "stopped"
    assert lost_cameras(summary) is None  # a failed file is not a lost camera
