"""Following faces across frames: one tracker per source, a decision per person, temporal reuse.

* ``settings.py``: :class:`TrackSettings` (association, decision and reuse parameters) and the
  ``--track-option`` parser.
* ``kalman.py``: a constant-velocity Kalman filter over face boxes, vectorised over tracks.
* ``bytetrack.py``: :class:`ByteTracker`, ByteTrack-style two-pass association (high-, then
  low-score detections) on IoU with the Kalman predictions; the assignment by ``lap``.
* ``decision.py``: :class:`TrackDecision`, a person's smoothed decision and the reuse rule.
* ``source.py``: :class:`SourceTracks`, one source's tracker, decisions and track events.
* ``stage.py``: :class:`TrackStage`, the pipeline stage (one SourceTracks per source).
"""

from maskrt.track.settings import TRACK_MODES, TrackSettings, parse_track_options
from maskrt.track.stage import TrackStage

__all__ = ["TRACK_MODES", "TrackSettings", "TrackStage", "parse_track_options"]
