"""Records: one per frame a source yields, whatever happened to it (DESIGN.md, "Streaming: the
accounting contract").

``read == scored + dropped + failed`` per source and overall, once nothing is in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCORED = "scored"
DROPPED = "dropped"
FAILED = "failed"
STATUSES = (SCORED, DROPPED, FAILED)

#: The fields written to records.jsonl, in this order.
JSON_FIELDS = ("source_id", "frame_index", "source_timestamp", "status", "reason", "label",
               "p_with_mask", "p_without_mask", "latency_ms", "uri")


@dataclass
class Record:
    """What became of one frame.

    source_timestamp: seconds; the position in the video for video files, the file's mtime (Unix
    time) for files, the wall clock at read (Unix time) for cameras and streams.
    status: ``scored``, ``dropped`` (a live source's full queue, or the frame was still queued when
    its source was removed or the pipeline stopped) or ``failed`` (``reason`` says why).
    latency_ms: from the moment the frame was read to the moment this record was made.
    uri: the file a frame came from (files, folders, drop folders), else None.
    overlay: uint8[H, W, 3] BGR CAM overlay at the frame's size, when the pipeline explains.
    frame: the decoded frame, when the pipeline was asked to keep frames (annotated videos).
    """

    source_id: str
    frame_index: int
    source_timestamp: float | None
    status: str
    reason: str | None = None
    label: str | None = None
    p_with_mask: float | None = None
    p_without_mask: float | None = None
    latency_ms: float = 0.0
    uri: str | None = None
    overlay: np.ndarray | None = field(default=None, repr=False)
    frame: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON fields (no arrays), floats rounded for the log."""
        out: dict[str, Any] = {}
        for name in JSON_FIELDS:
            value = getattr(self, name)
            if isinstance(value, float):
                value = round(value, 6) if name.startswith("p_") or name == "source_timestamp" \
                    else round(value, 3)
            out[name] = value
        return out


def empty_counts() -> dict[str, int]:
    return {"read": 0, SCORED: 0, DROPPED: 0, FAILED: 0}


def accounting_holds(counts: dict[str, int]) -> bool:
    """``read == scored + dropped + failed``."""
    return counts["read"] == counts[SCORED] + counts[DROPPED] + counts[FAILED]
