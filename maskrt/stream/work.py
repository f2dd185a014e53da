"""The units of work that flow through the pipeline's stages: a frame, and the regions in it.

A :class:`FrameTask` is one frame read from a source, carrying its identity (source id, frame
index, timestamp, uri) from the reader to its records. Stages decode it, may give it regions
(a detector: one per face; a stage may also leave none), and prepare one network input per
region; the infer stage batches regions across frames and sources. A frame without regions set by
any stage is scored as one region: the whole frame.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskrt.stream.sources.base import Frame, Source

#: Reasons of the frames the pipeline itself drops.
REASON_QUEUE_FULL = "live queue full: dropped the oldest frame"
REASON_STOPPED = "pipeline stopped before the frame was scored"
REASON_REMOVED = "source removed before the frame was scored"


class SourceHandle:
    """A source inside a pipeline: its reader thread's stop flag and why its frames are dropped."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.id = source.id
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.removed = False
        self.reader_done = False
        #: the reason recorded for this source's frames dropped from now on
        self.discard_reason = REASON_STOPPED


@dataclass
class Region:
    """One part of a frame to score: ``box`` = [x0, y0, x1, y1] in frame pixels (end-exclusive).

    score: the confidence of the stage that found it (a face detector), None for the whole frame.
    landmarks: float [5, 2] points in frame pixels, when a detector gives them.
    crop_box: the part of the frame that is classified and explained, when it differs from
    ``box`` (a face box widened for context); inside the frame, non-empty.
    input: its uint8[224, 224, 3] network input, set by the prepare stage.
    """

    box: tuple[int, int, int, int]
    score: float | None = None
    landmarks: np.ndarray | None = field(default=None, repr=False)
    crop_box: tuple[int, int, int, int] | None = None
    input: np.ndarray | None = field(default=None, repr=False)

    @property
    def area(self) -> tuple[int, int, int, int]:
        """What is classified: ``crop_box``, else ``box``."""
        return self.crop_box or self.box

    def crop(self, image: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.area
        return image[y0:y1, x0:x1]


@dataclass
class FrameTask:
    """One frame on its way through the stages.

    image: the decoded uint8[H, W, 3] BGR frame (set by the decode stage).
    regions: None until a stage sets them (then the whole frame is the one region); [] is a
    frame with nothing to score, recorded as scored with ``faces`` 0.
    extra: free room for user stages to pass data along.
    """

    handle: SourceHandle
    frame: Frame
    image: np.ndarray | None = field(default=None, repr=False)
    regions: list[Region] | None = None
    #: a remark for the frame's records (e.g. that faces were capped)
    note: str | None = None
    #: True when no stage set regions and the whole frame is the one region
    whole_frame: bool = False
    t_prepared: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def source_id(self) -> str:
        return self.handle.id

    def whole_frame_region(self) -> Region:
        h, w = self.image.shape[:2]  # type: ignore[union-attr]
        return Region((0, 0, w, h))
