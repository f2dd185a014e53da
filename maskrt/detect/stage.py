"""The face stage: a :class:`Detector` run on decoded frames, batched, turned into regions."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from maskrt.detect.base import Detections, Detector
from maskrt.detect.regions import (NO_BOX_FIT, BoxFit, check_box_fit, check_report_threshold,
                                   face_regions, split_reported)
from maskrt.detect.scale import ScaleRule, SequenceScale, with_large
from maskrt.stream.stages import Stage
from maskrt.stream.work import SKIPPED_DETECTION, FrameTask, Region


class FaceStage(Stage):
    """Sets ``task.regions`` to the faces the detector finds (none is a valid answer: the frame
    is scored with ``faces`` 0). Takes up to ``batch_size`` frames that are already waiting and
    detects them in one call (frames of one size share a detector batch).

    widen: crop = face box widened this many times (context for the classifier).
    min_face: faces smaller than this (pixels, shorter side of the clipped box) are left out.
    max_faces: at most this many faces per frame, the most confident; the records say so.
    box_fit: (width factor, height factor, x shift, y shift) from the detector's boxes to the
    reported ones, or 8 numbers: one fit for large faces, one for small (see
    :func:`~maskrt.detect.regions.fitted_box`).
    scale_rule: the detector's input scale chosen per frame (``upscale="auto"``; see
    :mod:`maskrt.detect.scale`), one :class:`SequenceScale` per video or live source; None:
    the detector's own fixed ``upscale``.
    report_threshold: faces scored below it are not reported: they go to ``task.unreported``,
    where only the tracker sees them (it keeps a known person's track with them), not to
    ``task.regions``; the classifier never sees them.
    """

    name = "faces"

    def __init__(self, detector: Detector, *, widen: float = 1.2, min_face: float = 4.0,
                 max_faces: int = 200, batch_size: int = 8,
                 box_fit: BoxFit = NO_BOX_FIT,
                 scale_rule: ScaleRule | None = None, report_threshold: float = 0.0) -> None:
        if widen < 1.0 or min_face < 1.0 or max_faces < 1 or batch_size < 1:
            raise ValueError(f"faces: expected widen >= 1, min_face >= 1, max_faces >= 1 and "
                             f"batch_size >= 1, got {widen}, {min_face}, {max_faces}, {batch_size}")
        self.detector = detector
        self.widen = widen
        self.min_face = min_face
        self.max_faces = max_faces
        self.batch_size = batch_size
        self.box_fit = check_box_fit(box_fit)
        self.scale_rule = scale_rule
        self.report_threshold = check_report_threshold(report_threshold)
        #: per video or live source (see FrameTask.sequence_key): its detector scale; one
        #: entry per source id (a folder's next video replaces its previous one)
        self._sequences: dict[str, tuple[tuple[str, str | None], SequenceScale]] = {}
        #: set by the track stage (detect_every): frames it predicts instead
        self.skip_detection: Callable[[FrameTask], bool] | None = None

    def process(self, task: FrameTask) -> FrameTask:
        return self.process_batch([task])[0]

    def process_batch(self, tasks: Sequence[FrameTask]) -> list[Any]:
        skip = self.skip_detection
        searched = [task for task in tasks if skip is None or not skip(task)]
        detections = self._detect(searched) if searched else []
        for task, faces in zip(searched, detections):
            found, task.note = self.regions(faces, task.image.shape)
            task.regions, task.unreported = split_reported(found, self.report_threshold)
        for task in tasks:
            if task.regions is None:  # left to the tracker (see TrackStage.skips_detection)
                task.extra[SKIPPED_DETECTION] = True
        return list(tasks)

    def detect(self, images: Sequence[Any]) -> list[Detections]:
        """The faces of photos (no sequence): with a scale rule, each probed and scaled."""
        if self.scale_rule is None:
            return self.detector.detect(images)
        return self.scale_rule.detect(self.detector, images)

    def _detect(self, tasks: Sequence[FrameTask]) -> list[Detections]:
        """The faces of pipeline frames: photos and sequence frames due for a probe go through
        the rule; other sequence frames are detected at their source's scale."""
        rule = self.scale_rule
        if rule is None:
            return self.detector.detect([task.image for task in tasks])
        sequences, probed, steady = self.plan(tasks)
        found: list[Detections | None] = [None] * len(tasks)
        chosen: list[float] = []
        large: list[int] = []
        images = [tasks[i].image for i in probed]
        detected = rule.detect(self.detector, images, chosen, large,
                               sequence=[sequences[i] is not None for i in probed])
        for i, faces, scale, n in zip(probed, detected, chosen, large):
            found[i] = faces
            if sequences[i] is not None:
                sequences[i].probed(scale, n)  # type: ignore[union-attr]
        if steady:
            scales = [sequences[i].scale for i in steady]  # type: ignore[union-attr]
            for i, faces in zip(steady, self.detector.detect([tasks[i].image for i in steady],
                                                             scales)):
                found[i] = faces
                sequences[i].step()  # type: ignore[union-attr]
            large_sources = [i for i in steady if sequences[i].has_large]  # type: ignore[union-attr]
            self._keep_large(large_sources, tasks, sequences, found)
        return found  # type: ignore[return-value]

    def _keep_large(self, indices: list[int], tasks: Sequence[FrameTask],
                    sequences: list[SequenceScale | None], found: list[Detections | None]) -> None:
        """Frames of sources whose last probe found large faces: a second pass at the probe's
        scale gives those faces (see :mod:`maskrt.detect.scale`)."""
        rule = self.scale_rule
        if not indices or rule is None:
            return
        probes = [rule.probe_scale(tasks[i].image.shape) for i in indices]
        for i, p, faces in zip(indices, probes,
                               self.detector.detect([tasks[i].image for i in indices], probes)):
            kept = rule.large(faces, p, sequences[i].scale)  # type: ignore[union-attr, arg-type]
            found[i] = with_large(found[i], kept)  # type: ignore[arg-type]

    def plan(self, tasks: Sequence[FrameTask]
             ) -> tuple[list[SequenceScale | None], list[int], list[int]]:
        """Each task's sequence scale (None: a photo, or no scale rule), and which tasks are
        probed (photos; a source's first frame due for a probe in the batch) and which are
        detected at their source's scale (after the probes: they take the new scale)."""
        sequences = [self._sequence(task) for task in tasks]
        probed, steady, claimed = [], [], set()
        for i, seq in enumerate(sequences):
            if seq is None:
                probed.append(i)
            elif seq.due() and id(seq) not in claimed:
                probed.append(i)
                claimed.add(id(seq))
            else:
                steady.append(i)
        return sequences, probed, steady

    def _sequence(self, task: FrameTask) -> SequenceScale | None:
        key = task.sequence_key
        if key is None or self.scale_rule is None:
            return None
        known = self._sequences.get(key[0])
        if known is None or known[0] != key:
            known = self._sequences[key[0]] = (key, SequenceScale(self.scale_rule))
        return known[1]

    def regions(self, faces: Detections, frame_shape: tuple[int, ...]) -> tuple[list[Region], str | None]:
        """One frame's detections -> its regions with this stage's settings, and a cap note:
        every candidate, reported or not (see :meth:`reported`)."""
        return face_regions(faces, frame_shape, widen=self.widen, min_face=self.min_face,
                            max_faces=self.max_faces, box_fit=self.box_fit)

    def reported(self, regions: list[Region], report_threshold: float | None = None
                 ) -> list[Region]:
        """The regions reported as faces: score >= ``report_threshold`` (default: the
        stage's). Photos only; in a tracked sequence a confirmed track's face is reported too."""
        threshold = self.report_threshold if report_threshold is None else \
            check_report_threshold(report_threshold)
        return split_reported(regions, threshold)[0]

    def close(self) -> None:
        self.detector.close()
