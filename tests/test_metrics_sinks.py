"""Prometheus metrics (``PrometheusSink``, ``maskrt score --metrics-port``): /metrics is scraped
over real HTTP and its frame counts must equal the pipeline's accounting per source and status;
the batch and inference histograms count the backend calls the pipeline reports, overlays the
overlay files written, and reconnects a real MJPEG server process killed and restarted."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client", reason="prometheus_client is not installed "
                    "(pip install maskrt[metrics])")
from prometheus_client.parser import text_string_to_metric_families
from streaming_fixtures import (
    face_paths,
    maskrt_threads,
    shared_engine,
    write_frames_dir,
    write_video,
)
from streaming_servers import free_port, mjpeg_server

from maskrt.cli import main as cli_main
from maskrt.stream.metrics import PrometheusSink
from maskrt.stream.pipeline import Pipeline
from maskrt.stream.sinks import OverlaySink, safe_name
from maskrt.stream.sources import StreamSource


def scrape(port: int) -> dict[str, list]:
    """{metric family name: [(labels, value), ...]} of http://127.0.0.1:port/metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode("utf-8")
    families: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = [(s.labels, s.value, s.name) for s in family.samples]
    return families


def frame_counts(families: dict[str, list]) -> dict[str, dict[str, int]]:
    """{source: {status: frames}} from maskrt_frames_total."""
    counts: dict[str, dict[str, int]] = {}
    for labels, value, name in families.get("maskrt_frames", []):
        if name == "maskrt_frames_total":
            counts.setdefault(labels["source"], {})[labels["status"]] = int(value)
    return counts


def per_source(families: dict[str, list], family: str, sample: str) -> dict[str, float]:
    """{source: value} of one sample name (e.g. maskrt_reconnects_total) of a family."""
    return {l["source"]: v for l, v, n in families.get(family, []) if n == sample}


def histogram(families: dict[str, list], name: str) -> dict[str, float]:
    """{"count": ..., "sum": ..., le: cumulative count, ...} of an unlabelled histogram."""
    out: dict[str, float] = {}
    for labels, value, sample in families[name]:
        if sample == f"{name}_bucket":
            out[labels["le"]] = value
        elif sample in (f"{name}_count", f"{name}_sum"):
            out[sample.rsplit("_", 1)[1]] = value
    return out


def make_inputs(tmp_path: Path, video_frames: int = 8) -> tuple[Path, Path]:
    """A folder of 2 face crops and an empty (failing) jpg, and a small MJPG video."""
    folder = tmp_path / "crops"
    folder.mkdir()
    for i, path in enumerate(face_paths(2)):
        shutil.copy(path, folder / f"{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"")
    return folder, write_video(tmp_path / "clip.avi", video_frames, fps=8)


def test_scraped_counts_equal_the_pipelines_accounting(tmp_path):
    folder, video = make_inputs(tmp_path)
    sink = PrometheusSink(0, addr="127.0.0.1")  # port 0: a free one, read back from the sink
    overlays = OverlaySink(tmp_path / "overlays")
    pipeline = Pipeline(shared_engine(), [str(folder), str(video)], batch_size=4,
                        max_wait_ms=5, regions="frame", explain=True, sinks=[overlays, sink])
    assert scrape(sink.port).get("maskrt_frames", []) == []  # nothing before the pipeline opens
    records = []
    with pipeline:
        for record in pipeline:
            records.append(record)
            if len(records) == 1:  # during the run: served, and never more than was read
                during = frame_counts(scrape(sink.port))
                assert sum(sum(c.values()) for c in during.values()) <= 11
            if len(records) == 11:  # every frame recorded; the sink is not closed yet
                families = scrape(sink.port)
                summary = pipeline.summary()
                counters = pipeline.counters()
    assert len(records) == 11
    counts = frame_counts(families)
    for source_id, entry in summary["sources"].items():
        assert counts[source_id] == {s: entry[s] for s in ("scored", "dropped", "failed")}
    assert counts[str(folder)] == {"scored": 2, "dropped": 0, "failed": 1}
    assert counts[str(video)] == {"scored": 8, "dropped": 0, "failed": 0}

    faces = {(l["source"], l["label"]): v for l, v, n in families["maskrt_faces"]
             if n == "maskrt_faces_total"}
    assert sum(faces.values()) == 10 == sum(summary["labels"].values())
    latency = {n: v for l, v, n in families["maskrt_latency_seconds"] if not l.get("le")}
    assert latency["maskrt_latency_seconds_count"] == 10  # one per scored frame
    assert latency["maskrt_latency_seconds_sum"] > 0
    assert {l["source"] for l, v, n in families["maskrt_source_fps"]} == {str(folder), str(video)}
    up = {l["source"]: v for l, v, n in families["maskrt_source_up"]}
    assert up == {str(folder): 0.0, str(video): 0.0}  # both finished
    check_batches_and_sources(families, summary, counters, sources=(str(folder), str(video)))
    # overlays: one per scored frame, each one a file the overlay sink wrote
    drawn = per_source(families, "maskrt_overlays", "maskrt_overlays_total")
    for source_id in (str(folder), str(video)):
        files = list((tmp_path / "overlays" / safe_name(source_id)).glob("*.jpg"))
        assert drawn[source_id] == len(files) == summary["sources"][source_id]["scored"]
    assert sum(drawn.values()) == sum(r.overlay is not None for r in records) == overlays.count
    # close() stopped the server
    with pytest.raises(urllib.error.URLError):
        scrape(sink.port)
    assert pipeline.summary()["outputs"]["metrics"] == f"http://127.0.0.1:{sink.port}/metrics"
    assert maskrt_threads() == []


def check_batches_and_sources(families: dict[str, list], summary: dict, counters: dict,
                              sources: tuple[str, ...]) -> None:
    """The batch-size and inference histograms hold one observation per backend call the
    pipeline reports; reconnects and queue depths have a series per source."""
    batch = histogram(families, "maskrt_batch_size")
    assert batch["count"] == summary["batches"] == counters["batches"] >= 3  # 10 regions, <= 4
    assert batch["sum"] == pytest.approx(counters["mean_batch_size"] * counters["batches"])
    assert batch["sum"] == sum(summary["labels"].values())  # every scored region, once
    assert batch["4.0"] == batch["+Inf"] == batch["count"]  # never more than batch_size
    assert batch["1.0"] <= batch["2.0"] <= batch["4.0"]
    inference = histogram(families, "maskrt_inference_seconds")
    assert inference["count"] == summary["batches"]
    assert inference["sum"] == pytest.approx(counters["backend_busy_s"], rel=1e-6)
    assert inference["sum"] > 0
    assert per_source(families, "maskrt_reconnects", "maskrt_reconnects_total") == \
        {s: 0.0 for s in sources}  # files and videos never reconnect
    assert per_source(families, "maskrt_queue_depth", "maskrt_queue_depth") == \
        {s: 0.0 for s in sources}  # every frame recorded: nothing queued


def test_reconnects_of_a_real_stream_server_killed_and_restarted(tmp_path):
    """An HTTP MJPEG server process killed and restarted: maskrt_reconnects_total counts the
    reconnection, as the pipeline's counters do; the queue depth stays within the live queue."""
    server = mjpeg_server(write_frames_dir(tmp_path / "frames", 4), fps=25)
    source = StreamSource(f"http://127.0.0.1:{server.port}/cam.mjpg", id="cam",
                          backoff=(0.2, 1.0), timeout_s=3.0)
    sink = PrometheusSink(0, addr="127.0.0.1")
    pipeline = Pipeline(shared_engine(), [source], batch_size=4, max_wait_ms=20,
                        regions="frame", sinks=[sink])
    depths, phase, deadline = [], "streaming", time.monotonic() + 60
    try:
        server.start()
        with pipeline:
            while phase != "reconnected":
                assert time.monotonic() < deadline, (phase, pipeline.counters())
                record = pipeline.get(timeout=0.5)
                families = scrape(sink.port)
                depths.append(per_source(families, "maskrt_queue_depth", "maskrt_queue_depth"))
                if phase == "streaming" and record is not None and record.frame_index >= 3:
                    server.kill()
                    phase = "killed"
                elif phase == "killed" and record is not None and record.status == "failed":
                    time.sleep(0.5)  # a refused reconnection attempt or two
                    server.start()
                    phase = "restarted"
                elif phase == "restarted" and source.reconnects >= 1:
                    families, counters = scrape(sink.port), pipeline.counters()
                    phase = "reconnected"
            pipeline.stop()
    finally:
        server.kill()
    reconnects = per_source(families, "maskrt_reconnects", "maskrt_reconnects_total")
    assert reconnects == {"cam": counters["sources"]["cam"]["reconnects"]}
    assert reconnects["cam"] >= 1
    assert all(set(d) == {"cam"} and 0 <= d["cam"] <= 4 for d in depths)  # the live queue: 4
    assert maskrt_threads() == []


def test_score_metrics_port_serves_during_the_run(tmp_path):
    """``maskrt score --metrics-port``: scraped while it runs (a thread scrapes in a loop);
    every scrape is consistent with the final summary, and the server is gone afterwards."""
    folder, video = make_inputs(tmp_path, video_frames=40)
    port = free_port()
    scrapes: list[dict[str, dict[str, int]]] = []
    done = threading.Event()

    def scraper() -> None:
        while not done.is_set():
            try:
                scrapes.append(frame_counts(scrape(port)))
            except (urllib.error.URLError, ConnectionError):
                pass  # not up yet, or already closed
            time.sleep(0.02)

    thread = threading.Thread(target=scraper, daemon=True)
    thread.start()
    out = tmp_path / "out"
    try:
        rc = cli_main(["score", str(folder), str(video), "--out", str(out), "--regions", "frame",
                       "--batch-size", "4", "--progress-interval", "0",
                       "--metrics-port", str(port), "--metrics-addr", "127.0.0.1"])
    finally:
        done.set()
        thread.join(timeout=10)
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accounting_ok"] is True
    assert summary["outputs"]["metrics"] == f"http://127.0.0.1:{port}/metrics"
    assert scrapes, "the metrics endpoint never answered during the run"
    final = {s: {k: e[k] for k in ("scored", "dropped", "failed")}
             for s, e in summary["sources"].items()}
    for seen in scrapes:  # never more than the final counts (counters only grow)
        for source_id, counts in seen.items():
            assert all(counts[k] <= final[source_id][k] for k in counts)
    with pytest.raises(urllib.error.URLError):
        scrape(port)


def test_metrics_port_in_use_fails_before_scoring(tmp_path, capsys):
    folder, _ = make_inputs(tmp_path)
    busy = PrometheusSink(0, addr="127.0.0.1")
    try:
        rc = cli_main(["score", str(folder), "--out", str(tmp_path / "out"), "--regions", "frame",
                       "--metrics-port", str(busy.port), "--metrics-addr", "127.0.0.1"])
    finally:
        busy.close()
    assert rc == 2
    assert "maskrt score:" in capsys.readouterr().err
    assert not (tmp_path / "out" / "records.jsonl").exists()


def test_missing_prometheus_client_names_the_extra(tmp_path, capsys, monkeypatch):
    image = tmp_path / "face.jpg"
    shutil.copy(face_paths(1)[0], image)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails as if absent
    with pytest.raises(ImportError, match=r"pip install maskrt\[metrics\]"):
        PrometheusSink(0)
    rc = cli_main(["score", str(image), "--out", str(tmp_path / "out"), "--regions", "frame",
                   "--metrics-port", str(free_port())])
    assert rc == 2 and "pip install maskrt[metrics]" in capsys.readouterr().err
