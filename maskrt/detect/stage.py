"""The face stage: a :class:`Detector` run on decoded frames, batched, turned into regions."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from maskrt.detect.base import Detections, Detector
from maskrt.detect.regions import NO_BOX_FIT, check_box_fit, face_regions
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
    reported ones (see :func:`~maskrt.detect.regions.face_regions`).
    """

    name = "faces"

    def __init__(self, detector: Detector, *, widen: float = 1.2, min_face: float = 4.0,
                 max_faces: int = 200, batch_size: int = 8,
                 box_fit: tuple[float, float, float, float] = NO_BOX_FIT) -> None:
        if widen < 1.0 or min_face < 1.0 or max_faces < 1 or batch_size < 1:
            raise ValueError(f"faces: expected widen >= 1, min_face >= 1, max_faces >= 1 and "
                             f"batch_size >= 1, got {widen}, {min_face}, {max_faces}, {batch_size}")
        self.detector = detector
        self.widen = widen
        self.min_face = min_face
        self.max_faces = max_faces
        self.batch_size = batch_size
        self.box_fit = check_box_fit(box_fit)
        #: set by the track stage (detect_every): frames it predicts instead
        self.skip_detection: Callable[[FrameTask], bool] | None = None

    def process(self, task: FrameTask) -> FrameTask:
        return self.process_batch([task])[0]

    def process_batch(self, tasks: Sequence[FrameTask]) -> list[Any]:
        skip = self.skip_detection
        searched = [task for task in tasks if skip is None or not skip(task)]
        detections = self.detector.detect([task.image for task in searched]) if searched else []
        for task, faces in zip(searched, detections):
            task.regions, task.note = self.regions(faces, task.image.shape)
        for task in tasks:
            if task.regions is None:  # left to the tracker (see TrackStage.skips_detection)
                task.extra[SKIPPED_DETECTION] = True
        return list(tasks)

    def regions(self, faces: Detections, frame_shape: tuple[int, ...]) -> tuple[list[Region], str | None]:
        """One frame's detections -> its regions with this stage's settings, and a cap note."""
        return face_regions(faces, frame_shape, widen=self.widen, min_face=self.min_face,
                            max_faces=self.max_faces, box_fit=self.box_fit)

    def close(self) -> None:
        self.detector.close()
