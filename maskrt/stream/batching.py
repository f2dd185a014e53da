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
from maskrt.stream.records import SCORED, Record, placed
from maskrt.stream.work import (REASON_LATE, REASON_WOULD_BE_LATE, RETIRED_TRACKS, FrameTask,
                               unclassified_reason)

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

    def __init__(self, engine: Any, batch_size: int, max_wait_s: float, ledger: Ledger) -> None:
        self.engine = engine
        self.ledger = ledger
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self.batches = self.regions = self.largest = self.mixed = self.reused = self.served = 0
        self.busy_s = 0.0
        self._unavailable = False  # the last batch failed with BackendUnavailable
        #: the backend's recent seconds per region (moving average; None before the first call)
        self.region_s: float | None = None
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
        """``first`` and what else comes before the batch is full or its wait is over (live
        frames past their max latency are dropped instead)."""
        tasks, count = [], 0
        deadline = first.t_prepared + self.max_wait_s
        task: Any = first
        while True:
            now = time.perf_counter()
            if task.late(now):
                self.ledger.drop(task, REASON_LATE)
            elif task.would_end_late(self.region_s, count, now):
                self.ledger.drop(task, REASON_WOULD_BE_LATE)
            else:
                tasks.append(task)
                count += len(task.to_classify)
            if count >= self.batch_size:
                return tasks, False
            task = inbox.get(timeout=max(0.0, deadline - time.perf_counter()))
            if task is None:
                return tasks, False
            if task is CLOSED:
                return tasks, True

    def _infer(self, tasks: list[FrameTask]) -> InferredBatch:
        inputs = [region.input for task in tasks for region in task.to_classify]
        regions = [region for task in tasks for region in task.regions or ()]
        with self._lock:
            self.reused += sum(not region.classify for region in regions)
            self.served += sum(region.served for region in regions)
        for task in tasks:
            for region in task.regions or ():
                region.input = None
        batch = InferredBatch(tasks)
        if not inputs:
            return batch
        outputs = []
        try:  # batch_size is a ceiling: a frame's faces may be split across calls
            for start in range(0, len(inputs), self.batch_size):
                chunk = inputs[start:start + self.batch_size]
                t0 = time.perf_counter()
                outputs.append(self._run_backend(np.stack(chunk)))
                self._count(tasks, len(chunk), time.perf_counter() - t0)
            batch.logits, batch.features = _concat(outputs)
            self._unavailable = False
        except Exception as err:  # noqa: BLE001 - a backend error fails this batch only
            self._log_failure(err, len(inputs))
            batch.error = f"backend error: {type(err).__name__}: {err}"
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
            pace = seconds / max(1, regions)
            self.region_s = pace if self.region_s is None else 0.8 * self.region_s + 0.2 * pace
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
                    "classified": self.regions + self.served, "reused": self.reused,
                    "classified_with_detection": self.served,
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
        served = self._served_results(batch.tasks)
        rows = _rows_of(batch.tasks)
        ending = self._last_frames(batch.tasks)
        faces: list[list[_Face]] = []
        all_records: list[list[Record]] = []
        for task, task_rows in zip(batch.tasks, rows):  # in order: decisions build on earlier frames
            task_faces = [_Face(region, served.get(id(region)) if row is None else results[row],
                                row) for region, row in zip(task.regions or (), task_rows)]
            events = self._resolve(task, task_faces, batch.features, id(task) in ending)
            records = [self._region_record(task, i, face) for i, face in enumerate(task_faces)]
            if not records:  # scored, and nothing in it to classify
                records = [frame_record(task, SCORED, task.note, faces=0)]
                records[0].frame = task.image if self.keep_frames else None
            records[0].events = events
            faces.append(task_faces)
            all_records.append(records)
        drawn, overlay_error = self._draw(batch, faces) if self.explain else ({}, None)
        for number, (task, records) in enumerate(zip(batch.tasks, all_records)):
            if overlay_error is not None:
                for record in records:
                    record.reason = overlay_error
            elif self.explain:
                records[0].overlay = drawn[number] if task.whole_frame else \
                    annotate_faces(drawn.get(number, task.image), records)
            task.image = None
            self.ledger.scored(task, records)

    def _served_results(self, tasks: list[FrameTask]) -> dict[int, Any]:
        """The Results of the regions classified with their detection, by region id (the
        engine's decision rule on the logits that came with them)."""
        served = [region for task in tasks for region in task.regions or () if region.served]
        if not served:
            return {}
        logits = np.stack([region.logits for region in served])
        return dict(zip(map(id, served), self.engine.results_from(logits)))

    def _last_frames(self, tasks: list[FrameTask]) -> set[int]:
        """The ids of the tasks that are their tracked source's very last frame."""
        by_source: dict[str, list[FrameTask]] = {}
        for task in tasks:
            if task.tracks is not None:
                by_source.setdefault(task.source_id, []).append(task)
        return {id(group[-1]) for group in by_source.values() if self.ledger.only_in_flight(group)}

    def _resolve(self, task: FrameTask, faces: list["_Face"], features: Any,
                 last: bool) -> list[dict[str, Any]]:
        """A tracked frame's classifications into its tracks' decisions (keeping the CAM
        features of each classified face when explaining, for the frames that reuse it); the
        track events this frame makes (``last``: its source ends, and so do its people). Each
        face learns what CAM to draw."""
        if task.tracks is None:
            for face in faces:
                face.cam = face.own_cam()
            return []
        kept = [face.kept_features(features) if self.explain else None for face in faces]
        retired = task.extra.pop(RETIRED_TRACKS, None)  # the previous video of a folder
        events = retired.finish() if retired is not None else []
        events += task.tracks.resolve(task, [face.result for face in faces], kept)
        for face, region in zip(faces, task.regions or ()):
            decision = region.track.data if region.track is not None else None
            face.decision = decision
            face.cam = face.own_cam()
            if face.cam is None and decision is not None and decision.features is not None:
                face.cam = (decision.features, decision.last.class_index)
        if last:  # after the faces took their decisions: ending frees them
            events += task.tracks.finish()
        return events

    def _draw(self, batch: InferredBatch, faces: list[list["_Face"]]) -> tuple[dict[int, Any], str | None]:
        """Overlays by task number: the CAM over a whole frame, or every region's CAM drawn into
        its frame (boxes and labels are added with the records); or why none could be drawn."""
        try:
            return self._overlays(batch, faces), None
        except Exception as err:  # noqa: BLE001 - score even when overlays cannot be drawn
            if not self._overlay_error_logged:
                self._overlay_error_logged = True
                log.error("explain: overlays cannot be drawn (%s); scoring without them", err)
            return {}, f"no overlay: {type(err).__name__}: {err}"

    def _overlays(self, batch: InferredBatch, faces: list[list["_Face"]]) -> dict[int, Any]:
        explainer = self.engine.explainer
        drawn: dict[int, Any] = {}
        whole = [(n, task_faces[0].cam) for n, (task, task_faces) in
                 enumerate(zip(batch.tasks, faces)) if task.whole_frame and task_faces]
        if whole:
            numbers = [n for n, _ in whole]
            rows = tuple(cam[0] for _, cam in whole)
            overlays, _ = explainer.draw(_rows(batch.features, rows),
                                         np.array([cam[1] for _, cam in whole], np.int64),
                                         [batch.tasks[n].image for n in numbers], heatmaps=False)
            drawn.update((n, to_host(o)) for n, o in zip(numbers, overlays))
        parts = [(n, face.region.area, face.cam) for n, (task, task_faces) in
                 enumerate(zip(batch.tasks, faces)) if not task.whole_frame
                 for face in task_faces if face.cam is not None]
        if parts:
            numbers, areas, cams = zip(*parts)
            owners = sorted(set(numbers))
            slot = {n: k for k, n in enumerate(owners)}
            frames = explainer.draw_into_frames(
                _gather(batch.features, [cam[0] for cam in cams]),
                np.array([cam[1] for cam in cams], np.int64), [slot[n] for n in numbers],
                list(areas), [batch.tasks[n].image for n in owners])
            drawn.update(zip(owners, frames))
        return drawn

    def _region_record(self, task: FrameTask, index: int, face: "_Face") -> Record:
        region = face.region
        record = frame_record(task, SCORED, task.note, region_index=index, face_score=region.score,
                              faces=len(task.regions),  # type: ignore[arg-type]
                              **placed(region.box, region.landmarks, task.reduction))
        record.classified = face.classified
        decision = face.decision
        result = face.result if face.result is not None else \
            (decision.last if decision is not None else None)
        if result is not None:
            record.label = result.label
            record.p_with_mask = result.p_with_mask
            record.p_without_mask = result.p_without_mask
        elif record.reason is None:
            record.reason = unclassified_reason(region, decision)
        if decision is not None:
            record.track_id = region.track_id
            record.track_label = decision.label
            record.p_track_without_mask = decision.p_without_mask
            record.track_frames = decision.frames
        if self.keep_frames:
            record.frame = task.image
        return record


class _Face:
    """One region of a frame on its way to a record: its classifier row and Result (None when
    it reuses its track's decision), its track's decision, and the CAM to draw (features row
    of the batch or kept features, class)."""

    __slots__ = ("region", "row", "result", "decision", "cam")

    def __init__(self, region: Any, result: Any, row: int | None = None) -> None:
        self.region = region
        self.result = result
        self.row = row
        self.decision: Any = None
        self.cam: tuple[Any, int] | None = None

    @property
    def classified(self) -> bool:
        """Classified for this frame: by the classifier stage, or with its detection."""
        return self.row is not None or (self.region.served and self.result is not None)

    def own_cam(self) -> tuple[Any, int] | None:
        """The CAM of its own classification: (its batch row or its served features, class);
        None when it has none (reused, or served without features)."""
        if self.row is not None:
            return (self.row, self.result.class_index)
        if self.classified and self.region.features is not None:
            return (self.region.features, self.result.class_index)
        return None

    def kept_features(self, features: Any) -> Any:
        """A copy of its own CAM features, kept by its track for frames that reuse it."""
        if self.row is not None:
            return _feature_row(features, self.row)
        return np.array(self.region.features) if self.classified and \
            self.region.features is not None else None


def _rows_of(tasks: list[FrameTask]) -> list[list[int | None]]:
    """Per task, per region: its row in the batch's outputs (None: not classified)."""
    rows: list[list[int | None]] = []
    row = 0
    for task in tasks:
        task_rows: list[int | None] = []
        for region in task.regions or ():
            task_rows.append(row if region.needs_classifier else None)
            row += region.needs_classifier
        rows.append(task_rows)
    return rows


def _feature_row(features: Any, row: int) -> Any:
    """One face's features [512, 7, 7] as its own copy (the batch's buffer is not kept)."""
    return features[row].clone() if is_tensor(features) else np.array(features[row])


def _gather(features: Any, items: list[Any]) -> Any:
    """Features for the listed faces: an int is a row of ``features``, anything else a face's
    kept features; the batch's rows alone are taken without a copy."""
    if all(isinstance(item, int) for item in items):
        return _rows(features, tuple(items))
    parts = [features[item] if isinstance(item, int) else item for item in items]
    if is_tensor(parts[0]):
        import torch

        return torch.stack(parts)
    return np.stack(parts)


def _concat(outputs: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    """(logits, features) of several backend calls as one batch (host or device)."""
    if len(outputs) == 1:
        return outputs[0]
    logits, features = zip(*outputs)
    if is_tensor(logits[0]):
        import torch

        return torch.cat(logits), torch.cat(features)
    return np.concatenate(logits), np.concatenate(features)


def _rows(features: Any, rows: tuple[int, ...]) -> Any:
    """The features of ``rows`` (all of them without a copy), host or device."""
    if len(rows) == len(features) and list(rows) == list(range(len(features))):
        return features
    if is_tensor(features):
        import torch

        return features.index_select(0, torch.as_tensor(rows, device=features.device))
    return features[list(rows)]
