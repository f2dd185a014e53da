"""The detector's input scale chosen per frame (``upscale="auto"``, the default preset).

Why: YuNet-n finds faces best when they are roughly 24-160 px in its input (below, recall
falls fast; far above, it loses a little and costs the square of the scale). A fixed factor
suits one collection only: 2x is right for the 25 px faces of 400 px photos, but enlarges the
large faces of 900 px photos past what the detector finds best, and detects a 720p camera frame
at 2560x1440 whatever its faces.

The rule (:class:`ScaleRule`): a cheap probe pass at no more than the frame's size (its longer
side at most ``probe_side``) finds the faces that are already large enough; the frame is then
detected at

    scale = clamp(face_target / small, min_scale, max_scale)

where ``small`` is the ``quantile`` of the sides (frame pixels) of the probe's confident faces
(score >= ``probe_score``), so that the frame's small faces reach ``face_target`` px in the
detector's input. A probe without a confident face (only small faces, or none) gives
``max_scale``. When the chosen scale is within 25% of the probe's, the probe's faces are the
answer and the frame costs one pass. The detector's ``max_side`` caps every pass.

Large faces beside small ones: the scale that brings a frame's small faces to ``face_target``
can enlarge its large faces past what YuNet-n finds or frames well (a 290 px face of a camera
frame detected at 1.44x is 420 px; found at IoU 0.45 against 0.84 at the probe's 0.5x). With
``large_side`` > 0, the probe's confident faces that the chosen scale would make larger than
``large_side`` px are taken from a pass at the probe's scale instead (the chosen pass's
detections overlapping them are dropped): photos reuse the probe, and a video or live source
whose last probe found such faces runs that second, cheap pass on its frames until a probe finds
none.

Videos and live sources (:class:`SequenceScale`, one per source): the scale changes slowly
(geometric mean with the last, weight ``smoothing``) and the probe runs on the first frame and
every ``probe_every`` frames after; other frames cost one pass at the source's scale. A frame
that looks like another shot (its grey histogram correlates under ``probe_cut`` with the
source's previous detected frame: a cut, a feed switched to another camera) is probed at once
and takes the probe's scale unsmoothed: before, a cut to a shot of close-ups kept the previous
shot's enlargement for up to ``probe_every`` frames, and YuNet-n missed the enlarged faces. Their
scale is not chosen below ``sequence_min_scale``: a camera frame with a close-up face beside
people further back is otherwise reduced for the close-up (the far faces, 10-20 px, are not
confident in the probe, so they do not count), and the tracker never sees the people further
back, who come nearer later. Photos keep ``min_scale``: on enlarged photos (scenes val at 2x
and 3x) a floor of 1.0 loses mAP@0.5 (0.880 -> 0.874, 0.869 -> 0.857) and triples the
detector's time at 3x.
The values are chosen by cross-validation over scenes train+val (``benchmarks/tune_faces.py
--scale``; README, "Faces in scenes").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from maskrt.detect.base import Detections, Detector, box_iou
from maskrt.detect.ensemble import EnsembleDetector, fuse_detections

#: a chosen scale this close (ratio) to the probe's reuses the probe's faces
_SAME_SCALE = 1.25


@dataclass(frozen=True)
class ScaleRule:
    """See the module docstring; every field is a ``--face-option`` (``scale_`` prefixed where
    the name alone would be unclear)."""

    face_target: float = 40.0
    quantile: float = 0.2
    min_scale: float = 0.5
    # 3.0 since the fine-tuned detector (5-fold CV over scenes val, face_target kept at 40 for
    # video speed: mAP@0.5 0.895 against 0.880 at 2.5; README "Faces in scenes")
    max_scale: float = 3.0
    # Videos and live sources: see the module docstring (camera clips of scenes train and val,
    # docs/studies/video.md)
    sequence_min_scale: float = 1.0
    probe_side: int = 640
    probe_score: float = 0.5
    probe_every: int = 30
    # Videos and live sources: a frame whose grey histogram correlates under this with the
    # source's previous detected frame is probed at once and takes the probe's scale unsmoothed
    # (a cut to another shot; 0: off). 0.5 of 0.5/0.7/0.8/0.9 on camera clips of scenes train
    # and val (track decision accuracy and without_mask track recall; docs/studies/scenes.md)
    probe_cut: float = 0.5
    smoothing: float = 0.5
    # 160 px chosen on camera clips of scenes train (IDF1 0.800 -> 0.803, MOTA 0.657 -> 0.664;
    # 240: 0.801, 0.660); docs/studies/scenes.md
    large_side: float = 160.0

    def __post_init__(self) -> None:
        if not (self.face_target > 0 and 0.0 <= self.quantile <= 1.0
                and 0 < self.min_scale <= self.max_scale and self.sequence_min_scale > 0
                and self.probe_side >= 32
                and 0.0 <= self.probe_score <= 1.0 and self.probe_every >= 1
                and 0.0 <= self.probe_cut <= 1.0
                and 0.0 <= self.smoothing < 1.0 and self.large_side >= 0.0):
            raise ValueError(f"scale rule: expected face_target > 0, quantile in [0, 1], "
                             f"0 < min_scale <= max_scale, sequence_min_scale > 0, "
                             f"probe_side >= 32, probe_score in [0, 1], probe_every >= 1, "
                             f"probe_cut in [0, 1], smoothing in [0, 1), large_side >= 0, "
                             f"got {self}")

    def probe_scale(self, shape: tuple[int, ...]) -> float:
        """The probe pass's factor: the frame as it is, or reduced to ``probe_side``."""
        return min(1.0, self.probe_side / max(shape[0], shape[1], 1))

    def choose(self, probe: Detections, sequence: bool = False) -> float:
        """The scale for a frame whose probe pass found ``probe`` (frame pixels); a video's or
        live source's frame (``sequence``) is not detected below ``sequence_min_scale``."""
        confident = probe.boxes[probe.scores >= self.probe_score]
        if not len(confident):
            return self.max_scale
        sides = np.sqrt(np.prod(np.maximum(confident[:, 2:] - confident[:, :2], 1.0), axis=1))
        small = float(np.quantile(sides, self.quantile))
        least = self.sequence_floor if sequence else self.min_scale
        return float(np.clip(self.face_target / small, least, self.max_scale))

    @property
    def sequence_floor(self) -> float:
        """The least scale of a video's or live source's frames."""
        return min(max(self.min_scale, self.sequence_min_scale), self.max_scale)

    def large(self, probe: Detections, probe_scale: float, scale: float) -> Detections:
        """The faces of a pass at ``probe_scale`` that ``scale`` would enlarge past
        ``large_side`` px (none when ``large_side`` is 0, or the scale is the probe's)."""
        if self.large_side <= 0 or not len(probe) or scale <= probe_scale:
            return probe.take(np.zeros(0, np.intp))
        sides = np.sqrt(np.prod(np.maximum(probe.boxes[:, 2:] - probe.boxes[:, :2], 1.0), axis=1))
        return probe.take(np.flatnonzero((probe.scores >= self.probe_score)
                                         & (sides * scale > self.large_side)))

    def detect(self, detector: Detector, frames: Sequence[np.ndarray],
               chosen: list[float] | None = None, large_found: list[int] | None = None,
               sequence: Sequence[bool] | None = None) -> list[Detections]:
        """Every frame probed, then detected again where its chosen scale differs from the
        probe's (its large faces kept from the probe); ``chosen`` and ``large_found`` (when
        given) receive each frame's chosen scale and how many large faces it kept; ``sequence``
        says which frames are a video's or live source's (photos when not given).

        An :class:`~maskrt.detect.ensemble.EnsembleDetector` goes through the rule member by
        member (each probes and picks its own scale; ``chosen`` and ``large_found`` are the
        first member's) and their answers are fused: fusing the probes instead lowers the
        scores of faces one member alone finds, and the rule then counts fewer confident faces
        (scenes val, an ensemble of two: mAP@0.5 0.892 fused per pass, 0.908 fused after)."""
        if isinstance(detector, EnsembleDetector):
            answers = [self.detect(member, frames, chosen if i == 0 else None,
                                   large_found if i == 0 else None, sequence)
                       for i, member in enumerate(detector.members)]
            return [fuse_detections(parts, detector.iou) for parts in zip(*answers)]
        probes = [self.probe_scale(frame.shape) for frame in frames]
        found = detector.detect(frames, probes)
        sequence = sequence or [False] * len(frames)
        scales = [self.choose(faces, seq) for faces, seq in zip(found, sequence)]
        again = [i for i, (s, p) in enumerate(zip(scales, probes)) if not same_scale(s, p)]
        large = [0] * len(frames)
        if again:
            for i, faces in zip(again, detector.detect([frames[i] for i in again],
                                                       [scales[i] for i in again])):
                kept = self.large(found[i], probes[i], scales[i])
                found[i], large[i] = with_large(faces, kept), len(kept)
        if chosen is not None:
            chosen.extend(scales)
        if large_found is not None:
            large_found.extend(large)
        return found


def with_large(found: Detections, large: Detections, overlap: float = 0.3) -> Detections:
    """``found`` without its detections overlapping (IoU >= ``overlap``) a face of ``large``,
    with those of ``large`` added; best first."""
    if not len(large):
        return found
    beyond_cap = found.found - len(found)
    if len(found):
        found = found.take(np.flatnonzero(box_iou(found.boxes, large.boxes).max(axis=1)
                                          < overlap))
    merged = Detections(np.concatenate([found.boxes, large.boxes]),
                        np.concatenate([found.scores, large.scores]),
                        np.concatenate([found.landmarks, large.landmarks]),
                        len(found) + len(large) + beyond_cap)
    return merged.take(np.argsort(-merged.scores, kind="stable"))


def same_scale(a: float, b: float) -> bool:
    """Whether two scales are close enough for one pass to stand for the other."""
    return abs(math.log(a / b)) < math.log(_SAME_SCALE)


class SequenceScale:
    """The detector's scale for one video or live source: probed on its first frame and every
    ``rule.probe_every`` frames, smoothed in between (handed the source's frames in order)."""

    def __init__(self, rule: ScaleRule) -> None:
        self.rule = rule
        self.scale: float | None = None
        #: whether the last probe found faces the source's scale enlarges past large_side
        self.has_large = False
        self._since_probe = 0
        #: the source's previous detected frame's grey histogram (new_scene)
        self._histogram: np.ndarray | None = None

    def due(self) -> bool:
        """Whether the next frame is probed."""
        return self.scale is None or self._since_probe >= self.rule.probe_every

    @property
    def since_probe(self) -> int | None:
        """Frames detected at the source's scale since its last probe (None: never probed)."""
        return None if self.scale is None else self._since_probe

    def new_scene(self, image: np.ndarray) -> bool:
        """Whether ``image``, the source's next frame to detect, looks like another shot than
        the previous one handed here (see ``probe_cut``): probe it now, and hand the probe's
        scale to :meth:`probed` with ``restart``. Call once per detected frame, in order."""
        if self.rule.probe_cut <= 0.0:  # off
            return False
        histogram = grey_histogram(image)
        previous, self._histogram = self._histogram, histogram
        # not "or self.scale is None": a batch's frames are planned before its first probe has
        # set the scale, and a cut among them must count as it would one frame at a time
        if previous is None:
            return False
        import cv2

        return bool(cv2.compareHist(previous, histogram, cv2.HISTCMP_CORREL)
                    < self.rule.probe_cut)

    def probed(self, chosen: float, large: int = 0, restart: bool = False) -> None:
        """A probe chose ``chosen`` and found ``large`` faces too large at it: the source's
        scale moves towards it, or takes it on a new scene (``restart``); never below the
        rule's sequence floor (a served probe is chosen by the server's photo rule)."""
        chosen = max(chosen, self.rule.sequence_floor)
        if self.scale is None or restart:
            self.scale = chosen
        else:
            w = self.rule.smoothing
            self.scale = math.exp(w * math.log(self.scale) + (1.0 - w) * math.log(chosen))
        self.has_large = large > 0
        self._since_probe = 0

    def step(self) -> None:
        """A frame was detected at the source's scale."""
        self._since_probe += 1


def grey_histogram(image: np.ndarray, step: int = 8, bins: int = 32) -> np.ndarray:
    """The grey histogram of every ``step``-th pixel of ``image`` (BGR or grey): enough to tell
    one shot from another (and about 0.1 ms for a 720p frame)."""
    import cv2

    thumb = np.ascontiguousarray(image[::step, ::step])
    if thumb.ndim == 3:
        thumb = cv2.cvtColor(thumb, cv2.COLOR_BGR2GRAY)
    return cv2.calcHist([thumb], [0], None, [bins], [0, 256])
