"""Prometheus metrics of a running pipeline: :class:`PrometheusSink` serves ``/metrics`` over HTTP.

Frame and face counts are read from the pipeline's ledger when Prometheus scrapes (a custom
collector), not counted again from records: the ledger is the one place frames are counted
(ARCHITECTURE.md, "Streaming: accounting and regions"), so the metrics cannot disagree with the
summary. Only the latency histogram is fed from records, because the ledger keeps raw latencies
rather than buckets.

Metrics (every series of a source carries ``source``, the source id)::

    maskrt_frames_total{source,status}   counter  frames by final status (scored/dropped/failed)
    maskrt_faces_total{source,label}     counter  scored regions by label
    maskrt_latency_seconds               histogram  read -> record, scored frames
    maskrt_source_up{source}             gauge    1 while the source delivers or may still deliver
    maskrt_source_fps{source}            gauge    frames/s scored over the last few seconds
    maskrt_batch_size                    gauge    mean regions per backend call
    maskrt_frames_in_flight              gauge    read but not yet recorded

``prometheus_client`` is imported only when the sink is made (``pip install maskrt[metrics]``).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import numpy as np

from maskrt.labels import CLASSES
from maskrt.stream.records import SCORED, STATUSES, Record
from maskrt.stream.sinks import Sink

log = logging.getLogger("maskrt.metrics")

#: source states in which a source delivers frames (or its last ones are being scored); the
#: others (idle, connecting, reconnecting, finished, failed, stopped, removed) count as down
_UP_STATES = frozenset({"reading", "streaming", "watching", "scoring"})

#: latency buckets in seconds: the pipeline's latency is tens of ms on a GPU, up to seconds on
#: a busy CPU, so the default buckets (which stop at 10 s) are kept but refined below 100 ms
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5,
                   5.0, 10.0)


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
        for source_id, entry in counters["sources"].items():
            for status in STATUSES:
                frames.add_metric([source_id, status], entry[status])
            for label in CLASSES:
                faces.add_metric([source_id, label], entry["labels"].get(label, 0))
            up.add_metric([source_id], 1.0 if entry["state"] in _UP_STATES else 0.0)
            fps.add_metric([source_id], float(entry["fps"]))
        yield from (frames, faces, up, fps)
        yield GaugeMetricFamily("maskrt_batch_size", "Mean regions per backend call",
                                value=float(counters.get("mean_batch_size") or 0.0))
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

    def write(self, record: Record, frame: np.ndarray | None = None) -> None:
        # One observation per scored frame (its first region), as the summary's latency counts.
        if record.status == SCORED and record.frame_level:
            self._latency.observe(record.latency_ms / 1000.0)

    def close(self) -> dict[str, Any]:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None
        return {"metrics": self.url}
