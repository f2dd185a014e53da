"""The batch stages: infer (regions of many frames and sources in one backend call) and explain
(decisions, overlays and records).

The infer stage sends a batch when it holds ``batch_size`` regions, or ``max_wait_s`` after the
first of them was prepared (DeepStream's batched-push-timeout, Triton's max queue delay), or at
once when no more can come. When the backend runs on a torch device, the batch is moved there and
the outputs stay there: the explain stage draws overlays from the device features with the CUDA
kernel and only overlays (uint8) and logits come back to the host.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from maskrt.backends.base import BackendUnavailable
from maskrt.devices import is_tensor, to_host
from maskrt.stream.accounting import Ledger, frame_record
from maskrt.stream.queue import CLOSED, BoundedQueue
from maskrt.stream.annotate import annotate_faces
from maskrt.stream.records import SCORED, Record
from maskrt.stream.work import FrameTask

log = logging.getLogger("maskrt.pipeline")


@dataclass
class InferredBatch:
    """Tasks and the backend's outputs for their regions, in order (or the error)."""

    tasks: list[FrameTask]
    logits: Any = None
    features: Any = None
    error: str | None = None


class InferStage:
    """Batches prepared regions across frames and sources and runs the backend on them."""

    name = "infer"

    def __init__(self, engine: Any, batch_size: int, max_wait_s: float) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self.batches = self.regions = self.largest = self.mixed = 0
        self.busy_s = 0.0
        self._unavailable = False  # the last batch failed with BackendUnavailable
        #: called as observer(regions, seconds) after each backend call, from this stage's thread
        self.observers: list[Callable[[int, float], None]] = []

    def run(self, inbox: BoundedQueue[FrameTask], outbox: BoundedQueue[InferredBatch]) -> None:
        try:
            closed = False
            while not closed:
                first = inbox.get()
                if first is CLOSED:
                    return
                tasks, closed = self._collect(first, inbox)
                outbox.put(self._infer(tasks))
        finally:
            outbox.close()

    def _collect(self, first: FrameTask, inbox: BoundedQueue[FrameTask]) -> tuple[list[FrameTask], bool]:
        """``first`` and what else comes before the batch is full or its wait is over."""
        tasks, count = [first], len(first.regions or ())
        deadline = first.t_prepared + self.max_wait_s
        while count < self.batch_size:
            task = inbox.get(timeout=max(0.0, deadline - time.perf_counter()))
            if task is None:
                break
            if task is CLOSED:
                return tasks, True
            tasks.append(task)
            count += len(task.regions or ())
        return tasks, False

    def _infer(self, tasks: list[FrameTask]) -> InferredBatch:
        inputs = [region.input for task in tasks for region in task.regions or ()]
        for task in tasks:
            for region in task.regions or ():
                region.input = None
        batch = InferredBatch(tasks)
        if inputs:
            start = time.perf_counter()
            try:
                batch.logits, batch.features = self._run_backend(np.stack(inputs))
                self._unavailable = False
            except Exception as err:  # noqa: BLE001 - a backend error fails this batch only
                self._log_failure(err, len(inputs))
                batch.error = f"backend error: {type(err).__name__}: {err}"
            self._count(tasks, len(inputs), time.perf_counter() - start)
        return batch

    def _log_failure(self, err: Exception, regions: int) -> None:
        """A bug's traceback; for a backend that is unavailable (a server down: every batch fails
        until it is back, each record says why) one line at the first failed batch."""
        if not isinstance(err, BackendUnavailable):
            log.exception("backend failed on a batch of %d", regions)
        elif not self._unavailable:
            log.warning("backend unavailable, a batch of %d failed (and so will the next ones "
                        "until it is back; their records say why): %s", regions, err)
        self._unavailable = isinstance(err, BackendUnavailable)

    def _run_backend(self, images: np.ndarray) -> tuple[Any, Any]:
        device = getattr(self.engine, "input_device", None)
        if device is None:
            return self.engine.infer(images)
        import torch

        tensor = torch.from_numpy(images)
        if device.type == "cuda":
            tensor = tensor.pin_memory().to(device, non_blocking=True)
        logits, features = self.engine.infer(tensor)
        # GPU backends may return buffers they reuse on the next call (CUDA graphs, TensorRT
        # bindings), while the explain stage reads these in parallel: keep a copy on the device.
        return logits.clone(), features.clone()

    def _count(self, tasks: list[FrameTask], regions: int, seconds: float) -> None:
        with self._lock:
            self.batches += 1
            self.regions += regions
            self.largest = max(self.largest, regions)
            self.mixed += len({task.source_id for task in tasks}) > 1
            self.busy_s += seconds
        for observer in self.observers:
            try:
                observer(regions, seconds)
            except Exception:  # noqa: BLE001 - a metrics hook must not stop inference
                log.exception("batch observer %r failed", observer)

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {"batches": self.batches,
                    "mean_batch_size": self.regions / self.batches if self.batches else 0.0,
                    "largest_batch": self.largest, "mixed_batches": self.mixed,
                    "backend_busy_s": self.busy_s}


class ExplainStage:
    """Turns backend outputs into records: the decision per region (``engine.results_from``, so
    the pipeline and ``Engine.classify`` decide identically) and, when explaining, its overlay."""

    name = "explain"

    def __init__(self, engine: Any, ledger: Ledger, *, explain: bool, keep_frames: bool) -> None:
        self.engine = engine
        self.ledger = ledger
        self.explain = explain
        self.keep_frames = keep_frames
        self._overlay_error_logged = False

    def run(self, inbox: BoundedQueue[InferredBatch]) -> None:
        while True:
            batch = inbox.get()
            if batch is CLOSED:
                return
            try:
                self._record(batch)
            except Exception as err:  # noqa: BLE001 - account for the batch whatever happens
                log.exception("postprocessing failed on a batch of %d frames", len(batch.tasks))
                batch.error = f"postprocessing error: {type(err).__name__}: {err}"
                self._record(batch)

    def _record(self, batch: InferredBatch) -> None:
        if batch.error is not None:
            for task in batch.tasks:
                self.ledger.fail(task, batch.error)
            return
        results = self.engine.results_from(batch.logits) if batch.logits is not None else []
        drawn, overlay_error = self._draw(batch, results) if self.explain else ({}, None)
        offset = 0
        for number, task in enumerate(batch.tasks):
            regions = task.regions or []
            records = [self._region_record(task, i, results[offset + i], overlay_error)
                       for i in range(len(regions))]
            offset += len(regions)
            if not records:  # scored, and nothing in it to classify
                records = [frame_record(task, SCORED, task.note, faces=0)]
                records[0].frame = task.image if self.keep_frames else None
            if self.explain and overlay_error is None:
                records[0].overlay = drawn[number] if task.whole_frame else \
                    annotate_faces(drawn.get(number, task.image), records)
            task.image = None
            self.ledger.scored(task, records)

    def _draw(self, batch: InferredBatch, results: list[Any]) -> tuple[dict[int, Any], str | None]:
        """Overlays by task number: the CAM over a whole frame, or every region's CAM drawn into
        its frame (boxes and labels are added with the records); or why none could be drawn."""
        try:
            return self._overlays(batch, results), None
        except Exception as err:  # noqa: BLE001 - score even when overlays cannot be drawn
            if not self._overlay_error_logged:
                self._overlay_error_logged = True
                log.error("explain: overlays cannot be drawn (%s); scoring without them", err)
            return {}, f"no overlay: {type(err).__name__}: {err}"

    def _overlays(self, batch: InferredBatch, results: list[Any]) -> dict[int, Any]:
        explainer = self.engine.explainer
        classes = np.array([r.class_index for r in results], dtype=np.int64)
        whole: list[tuple[int, int]] = []  # (task number, row) of whole-frame regions
        parts: list[tuple[int, int]] = []  # (task number, row) of the other regions
        areas: list[tuple[int, int, int, int]] = []  # where each of ``parts`` is drawn
        row = 0
        for number, task in enumerate(batch.tasks):
            for region in task.regions or ():
                if task.whole_frame:
                    whole.append((number, row))
                else:
                    parts.append((number, row))
                    areas.append(region.area)
                row += 1
        drawn: dict[int, Any] = {}
        if whole:
            numbers, rows = zip(*whole)
            overlays, _ = explainer.draw(_rows(batch.features, rows), classes[list(rows)],
                                         [batch.tasks[n].image for n in numbers], heatmaps=False)
            drawn.update((n, to_host(o)) for n, o in zip(numbers, overlays))
        if parts:
            numbers, rows = zip(*parts)
            owners = sorted(set(numbers))
            slot = {n: k for k, n in enumerate(owners)}
            frames = explainer.draw_into_frames(
                _rows(batch.features, rows), classes[list(rows)], [slot[n] for n in numbers],
                areas, [batch.tasks[n].image for n in owners])
            drawn.update(zip(owners, frames))
        return drawn

    def _region_record(self, task: FrameTask, index: int, result: Any,
                       overlay_error: str | None) -> Record:
        region = task.regions[index]  # type: ignore[index]
        landmarks = None if region.landmarks is None else \
            [[round(float(x), 1), round(float(y), 1)] for x, y in region.landmarks]
        record = frame_record(task, SCORED, overlay_error or task.note, region_index=index,
                              box=[int(v) for v in region.box], face_score=region.score,
                              faces=len(task.regions), landmarks=landmarks)  # type: ignore[arg-type]
        record.label = result.label
        record.p_with_mask = result.p_with_mask
        record.p_without_mask = result.p_without_mask
        overlay = result.overlay
        record.overlay = overlay.cpu().numpy() if is_tensor(overlay) else overlay
        if self.keep_frames:
            record.frame = task.image
        return record


def _rows(features: Any, rows: tuple[int, ...]) -> Any:
    """The features of ``rows`` (all of them without a copy), host or device."""
    if len(rows) == len(features) and list(rows) == list(range(len(features))):
        return features
    if is_tensor(features):
        import torch

        return features.index_select(0, torch.as_tensor(rows, device=features.device))
    return features[list(rows)]
