"""Tracking settings: the tracker's association rule, the per-person decision and temporal reuse,
with their defaults and the ``--track-option KEY=VALUE`` parser (README, "Video")."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

#: what ``--track`` / ``Pipeline(track=)`` accept: "auto" tracks videos and live sources
TRACK_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class TrackSettings:
    """Every tunable of tracking (see ARCHITECTURE.md, "Tracks").

    Association (ByteTrack-style, IoU against constant-velocity Kalman predictions):
    high_score: detections at or above this are matched first to every live track; lower ones
    (down to low_score) only to tracks seen in the previous frame, in a second pass.
    match_iou, low_match_iou, tentative_match_iou: the least IoU that matches in the first
    pass, the second pass, and for tentative (not yet confirmed) tracks.
    buffer: a last pass matches what is left on boxes widened by buffer times their size on
    every side (C-BIoU), at tentative_match_iou, confirmed tracks to high-score detections only:
    a small face that moved more than its own size since the last frame (a person walking past
    a camera at 10 fps) keeps its track (0 turns it off).
    min_hits: frames a tentative track must be matched in (one of them with a score >=
    high_score) before it is confirmed and given a ``track_id``.
    steady_hits, steady_score: a tentative track that never reached high_score is confirmed
    too once matched in steady_hits frames in a row with a mean score >= steady_score (0 turns
    it off). A track confirmed over a lost track's predicted box (IoU >= match_iou) revives
    that track (its id and decision) instead of becoming a second person.
    max_lost: frames a confirmed track survives without a detection (occlusion, a missed face).
    camera_motion: 1 moves the tracks with the camera (pan, zoom, shake) estimated between
    frames by sparse optical flow before matching (:mod:`maskrt.track.motion`); 0 does not.
    scene_cut: 1 ends every track at a scene cut (with camera_motion: the motion cannot be told
    and the picture changed), so no track carries one person's decision on to another; 0 does
    not.
    detect_every: look for faces in one frame of every detect_every of a tracked source; in the
    others the confirmed tracks' predicted boxes are the faces, each taking its track's decision.
    live_detect_every: the same for live sources (cameras, streams), which must keep up: 2 by
    default (on the val clips it costs 0.008 of track decision accuracy and gives 1.5x the
    frames/s; a 2-core machine kept up with 2 cameras instead of 1; docs/studies/video.md).
    motion_gate, gate_max_every: a frame of a tracked source in which less than motion_gate
    (a share) of a small grey thumbnail moved since the source's last detected frame is left to
    the tracker too, its faces predicted and decisions reused, as long as that detected frame
    is fewer than gate_max_every frames back: a fixed camera's still scene costs the detector
    nothing; a moving camera changes most of the thumbnail and is detected as before
    (:mod:`maskrt.track.gate`; 0 turns it off).
    live_lag_ms, live_max_every: a live frame already older than live_lag_ms when the face
    stage takes it (the machine is behind) is left to the tracker too, as long as its source's
    last detected frame is fewer than live_max_every frames back: under load a camera is
    detected less often instead of losing frames (0 turns it off).
    live_classify_max: such a lagging live frame also sends at most this many faces to the
    classifier: faces of tracks never classified first, then the largest; the others take
    their track's decision, or wait for a later frame when it has none (a scene cut's new
    faces are classified over a few frames instead of in one call that holds every camera
    back). 0: no cap; files and `--reuse off` never.
    live_classify_fresh: the same cap for a live frame that is not lagging (0: no cap): the
    first frame of a camera's scene cut is fresh, and its new faces in one call (16-50 on the
    val clips, 1-2 s of a 2-core CPU) made every frame behind it late.

    Decision per person: ``p_track_without_mask`` = sigmoid of the weighted mean of the
    classified faces' log-odds (each clipped to +-logit_clip), weight = face_score *
    min(1, shorter box side / size_ref); ``track_label`` = without_mask when it is >= 0.5.

    Reuse: a tracked face is classified when its track has fewer than min_classified
    classifications, every reclassify_every frames, when its box side grew by the factor grow
    over the largest classified one, or while the decision is uncertain (p within uncertain of
    0.5, from the classifications asked for settle_frames or more frames before: the track
    stage waits for those, so the same video gives the same records however fast the machine;
    each such request waits uncertain_backoff times longer than the last);
    otherwise it takes its track's decision (and CAM). With reuse, a face of a tentative
    track that never reached high_score (most of them are not faces: jackets, shoes) is
    recorded without a label and not classified, unless classify_low is 1.
    """

    # chosen on clips of scenes train and val (benchmarks/tune_tracks.py, docs/studies/video.md; 0.8
    # with steady_hits 3 at 0.65 since lost tracks are revived by steady ones, 2026-12-04);
    # min_classified, reclassify_every and the live_ ones for cameras per machine (README)
    high_score: float = 0.8
    low_score: float = 0.1
    match_iou: float = 0.2
    low_match_iou: float = 0.5
    tentative_match_iou: float = 0.3
    # 0.3 of 0 / 0.3 / 0.6 / 1.0: the best IDF1 summed over clips of scenes train and val with
    # the moving camera, the fixed one, and people walking past the fixed one, none of them worse
    # (benchmarks/tune_tracks.py; docs/studies/video.md)
    buffer: float = 0.3
    min_hits: int = 2
    steady_hits: int = 3
    steady_score: float = 0.65
    max_lost: int = 30
    logit_clip: float = 6.0
    size_ref: float = 64.0
    # 40 (20 before 2026-12-05): the same decisions on every clip set (moving, fixed, walkers;
    # scenes train and val) for 19-41% fewer classifications; a mask put on or taken off is
    # seen within 4 s at 10 fps
    reclassify_every: int = 40
    grow: float = 1.25
    uncertain: float = 0.25
    settle_frames: int = 2
    # 1: an uncertain track is asked again every settle_frames frames; 2 saves another 10-20%
    # of the classifications but lost one person on each fixed-camera set (docs/studies/video.md)
    uncertain_backoff: float = 1.0
    min_classified: int = 1
    classify_low: int = 0
    camera_motion: int = 1
    scene_cut: int = 1
    detect_every: int = 1
    live_detect_every: int = 2
    # motion_gate set (it leaves 68-70% of the fixed-camera val clips' frames to the tracker
    # at 0.5-2%, 1-3% of the moving ones'); gate_max_every chosen among 5/10/20 on fixed-camera
    # clips of scenes train and val (benchmarks/fixed_camera_clips.py; docs/studies/video.md)
    motion_gate: float = 0.005
    gate_max_every: int = 10
    live_lag_ms: float = 150.0
    live_max_every: int = 6
    live_classify_max: int = 2
    live_classify_fresh: int = 4

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.low_score <= self.high_score <= 1.0:
            problems.append(f"0 <= low_score <= high_score <= 1 (got {self.low_score}, "
                            f"{self.high_score})")
        for name in ("match_iou", "low_match_iou", "tentative_match_iou", "uncertain",
                     "steady_score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} in [0, 1] (got {getattr(self, name)})")
        if self.buffer < 0.0:
            problems.append(f"buffer >= 0 (got {self.buffer})")
        if not 0.0 <= self.motion_gate < 1.0:
            problems.append(f"motion_gate in [0, 1) (got {self.motion_gate})")
        for name in ("classify_low", "camera_motion", "scene_cut"):
            if getattr(self, name) not in (0, 1):
                problems.append(f"{name} 0 or 1 (got {getattr(self, name)})")
        for name in ("min_hits", "reclassify_every", "min_classified", "detect_every",
                     "live_detect_every", "live_max_every", "settle_frames", "gate_max_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} >= 1 (got {getattr(self, name)})")
        for name in ("max_lost", "live_lag_ms", "steady_hits", "live_classify_max",
                     "live_classify_fresh"):
            if getattr(self, name) < 0:
                problems.append(f"{name} >= 0 (got {getattr(self, name)})")
        if self.uncertain_backoff < 1.0:
            problems.append(f"uncertain_backoff >= 1 (got {self.uncertain_backoff})")
        if self.logit_clip <= 0 or self.size_ref <= 0 or self.grow < 1.0:
            problems.append(f"logit_clip > 0, size_ref > 0, grow >= 1 (got {self.logit_clip}, "
                            f"{self.size_ref}, {self.grow})")
        if problems:
            raise ValueError("track options: expected " + "; ".join(problems))

    def with_options(self, options: dict[str, Any] | None) -> "TrackSettings":
        """These settings with ``options`` (keys as the fields; ValueError naming the keys)."""
        if not options:
            return self
        known = {f.name for f in fields(self)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"track options: unknown {unknown}; expected some of {sorted(known)}")
        return replace(self, **options)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_track_options(pairs: list[str]) -> dict[str, Any]:
    """``["max_lost=20", "grow=1.5"]`` -> typed options (ValueError naming the keys)."""
    defaults = TrackSettings().to_dict()
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in defaults:
            raise ValueError(f"--track-option: expected KEY=VALUE with KEY one of "
                             f"{sorted(defaults)}, got {pair!r}")
        kind = type(defaults[key])
        try:
            options[key] = kind(text.strip())
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise ValueError(f"--track-option {key}: expected {expected}, got "
                             f"{text.strip()!r}") from None
    TrackSettings().with_options(options)  # range checks now, with the flag's name
    return options


def check_track_mode(mode: Any) -> str:
    """``track`` as one of TRACK_MODES (True/False are "on"/"off")."""
    if mode is True or mode is False:
        return "on" if mode else "off"
    if mode not in TRACK_MODES:
        raise ValueError(f"track: expected one of {list(TRACK_MODES)} (or True/False), "
                         f"got {mode!r}")
    return str(mode)
