"""The face stage of a served faces pipeline: a server detects, makes the regions and classifies
the reported faces of each frame in one request (``--backend triton --backend-option
pipeline=faces``; ARCHITECTURE.md, "A served faces pipeline").

The server applies maskrt's own face code with the settings fixed in its repository, so the
regions it returns are the ones :class:`~maskrt.detect.stage.FaceStage` would make; this stage
turns them into :class:`~maskrt.stream.work.Region` objects carrying their classification
(``logits``, and ``features`` when overlays are drawn), which the classifier stage then skips.
Candidates under report_threshold come back unclassified, for the tracker, as in-process. The
per-source detector scale of videos and live sources (:class:`~maskrt.detect.scale.SequenceScale`)
stays here: a frame due for a probe is sent without a scale (the server probes and says what it
chose), the others with their source's scale, as :meth:`FaceStage._detect` decides.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from maskrt.backends.base import BackendUnavailable
from maskrt.detect.base import Detections, Detector
from maskrt.detect.regions import cap_note
from maskrt.detect.stage import FaceStage
from maskrt.stream.work import SKIPPED_DETECTION, FrameTask, Region

log = logging.getLogger("maskrt.pipeline")


class ServedDetector(Detector):
    """Stands for the server's detector in a :class:`ServedFaceStage` (which never calls it)."""

    name = "served"

    def __init__(self, service: Any) -> None:
        self.service = service

    def detect(self, frames: Sequence[np.ndarray],
               scales: Sequence[float] | None = None) -> list[Detections]:
        raise TypeError("a served faces pipeline detects in the server, through "
                        "ServedFaceStage.process_batch; expected no detector call here")

    def describe(self) -> str:
        return self.service.describe()


class ServedFaceStage(FaceStage):
    """The face stage whose detector and classifier run in a server.

    service: an object with ``served_faces(frame, scale=, features=, candidates=)`` returning
    :class:`~maskrt.backends.triton_faces.ServedFaces`, and ``faces_info`` (the served
    model's preset and face options). features: ask for the reported faces' CAM features
    (the pipeline explains).
    """

    def __init__(self, service: Any, *, features: bool = False) -> None:
        from maskrt.detect import RUNTIME_KEYS, parse_face_options, preset_settings, scale_rule

        info = service.faces_info
        overrides = {key: value for key, value in
                     parse_face_options(list(info.face_options)).items()
                     if key not in RUNTIME_KEYS}
        settings = preset_settings(info.preset, **overrides)
        super().__init__(ServedDetector(service), widen=settings["widen"],
                         min_face=settings["min_face"], max_faces=settings["max_faces"],
                         box_fit=settings["box_fit"], scale_rule=scale_rule(settings),
                         report_threshold=settings["report_threshold"])
        self.service = service
        self.features = features
        self._failing = False  # the last request failed (an outage is logged once)

    def process_batch(self, tasks: Sequence[FrameTask]) -> list[Any]:
        """Each searched frame's regions (or the error its request raised: that frame fails)."""
        skip = self.skip_detection
        searched = [task for task in tasks if skip is None or not skip(task)]
        failed: dict[int, Exception] = {}
        for task, answer in zip(searched, self._ask(searched)):
            if isinstance(answer, Exception):
                failed[id(task)] = answer
                continue
            regions = served_regions(answer)
            task.regions, task.unreported = regions[:answer.reported], regions[answer.reported:]
            task.note = cap_note(self.max_faces, answer.found)
        for task in tasks:
            if task.regions is None and id(task) not in failed:
                task.extra[SKIPPED_DETECTION] = True  # left to the tracker
        return [failed.get(id(task), task) for task in tasks]

    def _ask(self, tasks: Sequence[FrameTask]) -> list[Any]:
        """Per task, the server's answer or the error, one request at a time in the batch's
        order (so a source's probes fall on the same frames however its frames batch): a photo,
        or a source's frame due for a probe, is probed by the server's rule; the others are
        detected at their source's scale."""
        answers: list[Any] = []
        for task in tasks:
            sequence = self._sequence(task)
            cut = sequence is not None and sequence.new_scene(task.image)
            scale = None if sequence is None or sequence.due() or cut else sequence.scale
            answers.append(self._request(task, scale))
            if sequence is None or isinstance(answers[-1], Exception):
                continue  # a failed probe: the source's next frame is probed instead
            if scale is None:
                sequence.probed(answers[-1].scale, restart=cut)
            else:
                sequence.step()
        return answers

    def _request(self, task: FrameTask, scale: float | None) -> Any:
        """The server's answer, or the error that fails this frame (the first of an outage
        logged in one line; each failed record says why)."""
        try:
            answer = self.service.served_faces(task.image, scale=scale, features=self.features,
                                               candidates=True)
        except (BackendUnavailable, ValueError) as err:
            if not self._failing:
                log.warning("served faces unavailable, frames fail until it is back (their "
                            "records say why): %s", err)
            self._failing = True
            return err
        self._failing = False
        return answer


def served_regions(answer: Any) -> list[Region]:
    """The regions of one answer, in its order (reported first), the reported ones carrying
    their logits (and CAM features when they came)."""
    regions = []
    for i in range(len(answer.scores)):
        box = tuple(int(v) for v in np.rint(answer.boxes[i]))
        crop = tuple(int(v) for v in np.rint(answer.crop_boxes[i]))
        region = Region(box, float(answer.scores[i]),  # type: ignore[arg-type]
                        np.asarray(answer.landmarks[i], np.float32), crop)  # type: ignore[arg-type]
        if i < answer.reported:
            region.logits = answer.logits[i]
            region.features = None if answer.features is None else answer.features[i]
        regions.append(region)
    return regions
