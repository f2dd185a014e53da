"""Prometheus metrics of a running pipeline: :class:`PrometheusSink` serves ``/metrics`` over HTTP.

Frame and face counts are read from the pipeline's ledger when Prometheus scrapes (a custom
collector), not counted again from records: the ledger is the one place frames are counted
(ARCHITECTURE.md, "Streaming: accounting and regions"), so the metrics cannot disagree with the
summary. Only the latency histogram is fed from records, because the ledger keeps raw latencies
rather than buckets.

Metrics (every series of a source carries ``source``, the source id)::

    maskrt_frames_total{source,status}   counter  frames by final status (scored/dropped/failed)
    maskrt_faces_total{source,label}     counter  scored regions by label
    maskrt_reconnects_total{source}      counter  successful reconnections of a live source
    maskrt_overlays_total{source}        counter  overlays drawn (``explain``): one per image
    maskrt_predicted_frames_total{source,by}  counter  scored frames whose faces the tracker
                                         predicted, the detector not run: by "motion_gate" (a
                                         still frame) or "cadence" (detect_every, live cadences)
    maskrt_latency_seconds               histogram  read -> record, scored frames
    maskrt_inference_seconds             histogram  one backend call (a batch)
    maskrt_batch_size                    histogram  regions per backend call
    maskrt_source_up{source}             gauge    1 while the source delivers or may still deliver
    maskrt_source_fps{source}            gauge    frames/s scored over the last few seconds
    maskrt_queue_depth{source}           gauge    frames waiting in the source's bounded queue
    maskrt_frames_in_flight              gauge    read but not yet recorded
    maskrt_tracks_total{source,label}    counter  people (confirmed tracks) that ended, by decision
    maskrt_active_tracks{source}         gauge    confirmed tracks alive now

Reconnects and queue depths come from the pipeline's counters at each scrape too; the batch and
inference histograms are fed by :meth:`~maskrt.stream.pipeline.Pipeline.observe_batches` (one
observation per backend call, so their ``_count`` is the summary's ``batches``), overlays and
latencies from the records the sink is given.

``prometheus_client`` is imported only when the sink is made (``pip install maskrt[metrics]``).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import numpy as np

from maskrt.labels import CLASSES
from maskrt.stream.records import SCORED, STATUSES, Record
from maskrt.stream.sinks import Sink
from maskrt.stream.work import REASON_PREDICTED, REASON_STILL

log = logging.getLogger("maskrt.metrics")

#: source states in which a source delivers frames (or its last ones are being scored); the
#: others (idle, connecting, reconnecting, finished, failed, stopped, removed) count as down
_UP_STATES = frozenset({"reading", "streaming", "watching", "scoring"})

#: maskrt_predicted_frames' ``by`` label of each reason a scored frame's faces were predicted
_PREDICTED_BY = {REASON_STILL: "motion_gate", REASON_PREDICTED: "cadence"}
#: latency buckets in seconds: the pipeline's latency is tens of ms on a GPU, up to seconds on
#: a busy CPU, so the default buckets (which stop at 10 s) are kept but refined below 100 ms
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5,
                   5.0, 10.0)
#: backend call buckets in seconds: a batch takes ~1 ms on a GPU, up to seconds on a CPU
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
                     1.0, 2.5, 5.0, 10.0)
#: regions per backend call: powers of two up to the graph's batch axis (1..4096)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def _import_prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as err:
        raise ImportError("the Prometheus metrics need prometheus_client: "
                          "pip install maskrt[metrics]") from err
    return prometheus_client


class _PipelineCollector:
    """Reads ``pipeline.counters()`` at each scrape; yields nothing before the pipeline opens."""

    def __init__(self) -> None:
        self.pipeline: Any = None

    def describe(self) -> list[Any]:
        # Without describe(), registering would call collect() once, before any pipeline exists.
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self.pipeline is None:
            return
        counters = self.pipeline.counters()
        frames = CounterMetricFamily("maskrt_frames", "Frames by final status, per source "
                                     "(the pipeline's accounting)", labels=["source", "status"])
        faces = CounterMetricFamily("maskrt_faces", "Scored regions (faces, or whole frames) by "
                                    "label, per source", labels=["source", "label"])
        up = GaugeMetricFamily("maskrt_source_up", "1 while the source delivers frames "
                               "(reading, streaming, watching, scoring)",
                               labels=["source"])
        fps = GaugeMetricFamily("maskrt_source_fps", "Frames/s scored over the last seconds",
                                labels=["source"])
        reconnects = CounterMetricFamily("maskrt_reconnects", "Successful reconnections of a "
                                         "live source after a loss", labels=["source"])
        depth = GaugeMetricFamily("maskrt_queue_depth", "Frames waiting in the source's bounded "
                                  "queue", labels=["source"])
        for source_id, entry in counters["sources"].items():
            for status in STATUSES:
                frames.add_metric([source_id, status], entry[status])
            for label in CLASSES:
                faces.add_metric([source_id, label], entry["labels"].get(label, 0))
            up.add_metric([source_id], 1.0 if entry["state"] in _UP_STATES else 0.0)
            fps.add_metric([source_id], float(entry["fps"]))
            reconnects.add_metric([source_id], entry.get("reconnects") or 0)
            depth.add_metric([source_id], float(entry.get("queued") or 0))
        yield from (frames, faces, up, fps, reconnects, depth)
        active = GaugeMetricFamily("maskrt_active_tracks", "Confirmed tracks (people) alive now",
                                   labels=["source"])
        for source_id, count in counters.get("active_tracks", {}).items():
            active.add_metric([source_id], float(count))
        yield active
        yield GaugeMetricFamily("maskrt_frames_in_flight", "Frames read but not yet recorded",
                                value=float(counters["total"]["in_flight"]))


class PrometheusSink(Sink):
    """Serves the pipeline's metrics at ``http://ADDR:PORT/metrics`` from its own registry (never
    prometheus_client's global one, so two pipelines in a process do not collide).

    The HTTP server starts when the sink is made, so a port in use fails before any frame is
    read (OSError), and stops on :meth:`close`. ``port=0`` picks a free port (see ``port``).
    """

    def __init__(self, port: int, addr: str = "0.0.0.0") -> None:
        prometheus_client = _import_prometheus()
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self._collector = _PipelineCollector()
        self.registry.register(self._collector)
        self._latency = prometheus_client.Histogram(
            "maskrt_latency_seconds", "Read -> record latency of scored frames",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self._inference = prometheus_client.Histogram(
            "maskrt_inference_seconds", "Seconds of one backend call (a batch of regions)",
            buckets=INFERENCE_BUCKETS, registry=self.registry)
        self._batch_size = prometheus_client.Histogram(
            "maskrt_batch_size", "Regions per backend call", buckets=BATCH_BUCKETS,
            registry=self.registry)
        self._tracks = prometheus_client.Counter(
            "maskrt_tracks", "People (confirmed tracks) that ended, by their decision",
            ["source", "label"], registry=self.registry)
        self._overlays = prometheus_client.Counter(
            "maskrt_overlays", "Overlays drawn (explain): one per overlay image", ["source"],
            registry=self.registry)
        self._predicted = prometheus_client.Counter(
            "maskrt_predicted_frames", "Scored frames whose faces the tracker predicted (the "
            "detector not run), by why", ["source", "by"], registry=self.registry)
        self._server, self._thread = prometheus_client.start_http_server(
            port, addr=addr, registry=self.registry)
        self.addr = addr
        self.port = int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.addr in ("0.0.0.0", "") else self.addr
        return f"http://{host}:{self.port}/metrics"

    def open(self, pipeline: Any) -> None:
        self._collector.pipeline = pipeline
        if hasattr(pipeline, "observe_batches"):
            pipeline.observe_batches(self._observe_batch)
        for source_id in getattr(pipeline, "source_ids", ()):  # a 0 series from the start
            self._overlays.labels(source_id)
            for by in _PREDICTED_BY.values():
                self._predicted.labels(source_id, by)

    def _observe_batch(self, regions: int, seconds: float) -> None:
        self._batch_size.observe(regions)
        self._inference.observe(seconds)

    def write(self, record: Record, frame: np.ndarray | None = None) -> None:
        # One observation per scored frame (its first region), as the summary's latency counts.
        if record.status == SCORED and record.frame_level:
            self._latency.observe(record.latency_ms / 1000.0)
            by = _PREDICTED_BY.get(record.reason)  # type: ignore[arg-type]
            if by is not None:
                self._predicted.labels(record.source_id, by).inc()
        if record.overlay is not None:
            self._overlays.labels(record.source_id).inc()

    def events(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if event["event"] == "track_ended":
                self._tracks.labels(event["source_id"], str(event["track_label"])).inc()

    def close(self) -> dict[str, Any]:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None
        return {"metrics": self.url}
