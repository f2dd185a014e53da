"""The face stage: a :class:`Detector` run on decoded frames, batched, turned into regions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from maskrt.detect.base import Detections, Detector
from maskrt.detect.regions import (NO_BOX_FIT, BoxFit, check_box_fit, check_report_threshold,
                                   face_regions, split_reported)
from maskrt.detect.scale import ScaleRule, SequenceScale, with_large
from maskrt.detect.sharpen import Sharpener
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
    sharpen: frames measured as blurred are sharpened first (:mod:`maskrt.detect.sharpen`); the
    frame is replaced, so crops and overlays are of the sharpened frame. None: never.
    """

    name = "faces"

    def __init__(self, detector: Detector, *, widen: float = 1.2, min_face: float = 4.0,
                 max_faces: int = 200, batch_size: int = 8,
                 box_fit: BoxFit = NO_BOX_FIT,
                 scale_rule: ScaleRule | None = None, report_threshold: float = 0.0,
                 sharpen: Sharpener | None = None) -> None:
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
        self.sharpen = sharpen if sharpen is not None and sharpen.amount > 0 else None
        #: per video or live source (see FrameTask.sequence_key): its detector scale; one
        #: entry per source id (a folder's next video replaces its previous one)
        self._sequences: dict[str, tuple[tuple[str, str | None], SequenceScale]] = {}
        #: set by the track stage (detect_every): frames it predicts instead
        self.skip_detection: Callable[[FrameTask], bool] | None = None

    def process(self, task: FrameTask) -> FrameTask:
        return self.process_batch([task])[0]

    def process_batch(self, tasks: Sequence[FrameTask]) -> list[Any]:
        for task in tasks:  # frames left to the tracker too: their crops are classified
            task.image = self.sharpened(task.image)
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

    def sharpened(self, image: Any) -> Any:
        """``image`` as this stage finds faces in it (sharpened when blurred; see ``sharpen``):
        callers of :meth:`detect` crop and draw on it."""
        return self.sharpen(image) if self.sharpen is not None else image

    def detect(self, images: Sequence[Any]) -> list[Detections]:
        """The faces of photos (no sequence), which the caller passed through
        :meth:`sharpened`: with a scale rule, each probed and scaled."""
        if self.scale_rule is None:
            return self.detector.detect(images)
        return self.scale_rule.detect(self.detector, images)

    def _detect(self, tasks: Sequence[FrameTask]) -> list[Detections]:
        """The faces of pipeline frames: photos and sequence frames due for a probe go through
        the rule; other sequence frames are detected at their source's scale as it was when
        their turn came (see :meth:`plan`)."""
        if self.scale_rule is None:
            return self.detector.detect([task.image for task in tasks])
        found: list[Detections | None] = [None] * len(tasks)
        sequences = [self._sequence(task) for task in tasks]
        for batch_round in self.plan(sequences, [task.image for task in tasks]):
            self._detect_round(self.scale_rule, tasks, sequences, batch_round, found)
        return found  # type: ignore[return-value]

    def _detect_round(self, rule: ScaleRule, tasks: Sequence[FrameTask],
                      sequences: list[SequenceScale | None], batch_round: "Round",
                      found: list[Detections | None]) -> None:
        """One round of :meth:`plan`: the frames before their source's probe at the scale
        before it, the probes, then the frames after it at the new scale (one detector call
        for both: each frame has its own scale)."""
        steady = batch_round.before + batch_round.after
        scales = {i: self._step(sequences[i]) for i in batch_round.before}
        images = [tasks[i].image for i in batch_round.probed]
        chosen: list[float] = []
        large: list[int] = []
        detected = rule.detect(self.detector, images, chosen, large,
                               sequence=[sequences[i] is not None for i in batch_round.probed])
        for i, faces, scale, n in zip(batch_round.probed, detected, chosen, large):
            found[i] = faces
            if sequences[i] is not None:
                sequences[i].probed(scale, n,  # type: ignore[union-attr]
                                    restart=i in batch_round.new_scenes)
        scales.update({i: self._step(sequences[i]) for i in batch_round.after})
        if not steady:
            return
        for i, faces in zip(steady, self.detector.detect([tasks[i].image for i in steady],
                                                         [scales[i][0] for i in steady])):
            found[i] = faces
        self._keep_large([i for i in steady if scales[i][1]], tasks,
                         [scales[i][0] for i in steady if scales[i][1]], found)

    @staticmethod
    def _step(sequence: SequenceScale | None) -> tuple[float, bool]:
        """A frame detected at its source's scale now: that scale and whether the source's last
        probe found large faces (the source counts the frame)."""
        assert sequence is not None and sequence.scale is not None  # plan() probed it first
        taken = (sequence.scale, sequence.has_large)
        sequence.step()
        return taken

    def _keep_large(self, indices: list[int], tasks: Sequence[FrameTask], scales: list[float],
                    found: list[Detections | None]) -> None:
        """Frames (``indices``, detected at ``scales``) of sources whose last probe found large
        faces: a second pass at the probe's scale gives those faces (see
        :mod:`maskrt.detect.scale`)."""
        rule = self.scale_rule
        if not indices or rule is None:
            return
        probes = [rule.probe_scale(tasks[i].image.shape) for i in indices]
        for i, p, scale, faces in zip(indices, probes, scales,
                                      self.detector.detect([tasks[i].image for i in indices],
                                                           probes)):
            found[i] = with_large(found[i], rule.large(faces, p, scale))  # type: ignore[arg-type]

    def plan(self, sequences: Sequence[SequenceScale | None],
             images: Sequence[Any]) -> list["Round"]:
        """The batch's frames (their sources' scales: None for a photo; their images) in
        rounds, so that each frame is probed or detected exactly as if the frames had come one
        at a time: a frame is probed when its source is due counting the frames before it in
        this batch, or when it begins a new scene (SequenceScale.new_scene); a
        source's frames before its probe take the scale before it, those after the new one;
        a source due twice in one batch starts a new round. (Before, every frame of a source
        after the batch's first was counted after the probes: where a probe fell depended on
        how the frames happened to batch, so two runs of the same videos gave different
        records.)"""
        every = self.scale_rule.probe_every if self.scale_rule is not None else 1
        rounds = [Round()]
        #: per source: frames since its last probe, counting this batch's (None: never probed)
        since: dict[int, int | None] = {}
        for i, sequence in enumerate(sequences):
            if sequence is None:
                rounds[-1].probed.append(i)
                continue
            key = id(sequence)
            count = since[key] if key in since else sequence.since_probe
            cut = sequence.new_scene(images[i])
            if count is not None and count < every and not cut:
                current = rounds[-1]
                (current.after if key in current.probed_sources else current.before).append(i)
                since[key] = count + 1
                continue
            if key in rounds[-1].probed_sources:
                rounds.append(Round())
            rounds[-1].probed.append(i)
            rounds[-1].probed_sources.add(key)
            if cut:
                rounds[-1].new_scenes.add(i)
            since[key] = 0
        return rounds

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


@dataclass
class Round:
    """Frames of one face-stage batch (indices) detected together: ``before`` at their
    source's scale before this round's probes, ``probed`` (photos, and sources due for a probe:
    at most one a source), ``after`` at the scale their source's probe chose."""

    before: list[int] = field(default_factory=list)
    probed: list[int] = field(default_factory=list)
    after: list[int] = field(default_factory=list)
    #: id() of the SequenceScale of each source probed in this round
    probed_sources: set[int] = field(default_factory=set)
    #: the probed frames that begin a new scene (their probe's scale is taken unsmoothed)
    new_scenes: set[int] = field(default_factory=set)
