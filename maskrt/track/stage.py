"""The track stage: after the faces are found, one tracker per source says who is who and which
faces go to the classifier; the explain stage later turns classifications into decisions."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from maskrt.stream.stages import Stage
from maskrt.stream.work import RETIRED_TRACKS, SKIPPED_DETECTION, FrameTask
from maskrt.track.gate import MotionGate
from maskrt.track.settings import TrackSettings, check_track_mode
from maskrt.track.source import SourceTracks


#: the key of ``FrameTask.extra`` that marks a frame the motion gate left to the tracker
_STILL = "motion_still"


class TrackStage(Stage):
    """Sets ``region.track``, ``region.track_id`` and ``region.classify`` on the frames it
    tracks, and ``task.tracks`` (the source's :class:`SourceTracks`). The tracker also sees the
    face stage's unreported candidates (below ``report_threshold``); those on a confirmed track
    are reported, the others are let go here (see :meth:`SourceTracks.assign`).

    mode: "auto" tracks videos (also those inside folders) and live sources, not photos; "on"
    tracks every source (a folder of photos becomes a sequence); "off" none. Frames without
    regions (``regions="frame"``) are never tracked. One thread: each source's frames in order.
    """

    name = "track"

    def __init__(self, mode: Any = "auto", reuse: bool = True,
                 settings: TrackSettings | None = None) -> None:
        self.mode = check_track_mode(mode)
        self.reuse = reuse
        self.settings = settings or TrackSettings()
        self._lock = threading.Lock()
        self._sources: dict[tuple[str, str | None], SourceTracks] = {}
        #: per sequence, the frames that arrived since the last one left to the detector, and
        #: its motion gate (touched by the face stage's thread only)
        self._since_detected: dict[tuple[str, str | None], int] = {}
        self._gates: dict[tuple[str, str | None], MotionGate] = {}

    def process(self, task: FrameTask) -> FrameTask:
        predict = task.extra.pop(SKIPPED_DETECTION, False)
        if (task.regions is None and not predict) or not self.tracks(task):
            task.unreported = []  # an untracked frame: nothing needs its unreported candidates
            return task
        key = self._key(task)
        with self._lock:
            tracks = self._sources.get(key)
            if tracks is None:
                tracks = self._sources[key] = SourceTracks(key[0], key[1], self.settings,
                                                           self.reuse)
                self._retire_previous(task, key)
        if predict:
            tracks.coast(task, still=task.extra.pop(_STILL, False))
        else:
            tracks.assign(task, self._classify_max(task))
        task.tracks = tracks
        return task

    def _retire_previous(self, task: FrameTask, key: tuple[str, str | None]) -> None:
        """A folder source moved on to its next video: the previous video's tracks end once
        this frame is recorded (the explain stage finishes them, in frame order)."""
        for other in [k for k in self._sources if k[0] == key[0] and k != key]:
            task.extra[RETIRED_TRACKS] = self._sources.pop(other)

    def skips_detection(self, task: FrameTask) -> bool:
        """Whether the face stage may leave ``task``'s frame to the tracker's predictions: a
        tracked source's frame that ``detect_every`` (``live_detect_every`` for a live source;
        a live frame older than ``live_lag_ms`` up to ``live_max_every``) or the motion gate
        (``motion_gate``, up to ``gate_max_every``) leaves out. Called by the face stage's
        thread, each source's frames in order."""
        every = self._detect_interval(task)
        gated = self._gated
        if (every <= 1 and not gated) or not self.tracks(task):
            return False
        key = self._key(task)
        with self._lock:
            since = self._since_detected.get(key)
            if since is None:
                self._forget_previous(key)
        # Counted in the frames that arrive, not by index modulo every: a live source drops
        # frames, and the ones left could all fall between the detected indices.
        if since is not None and since + 1 < every:
            with self._lock:
                self._since_detected[key] = since + 1
            return True
        if since is not None and self._still(key, task, since):
            with self._lock:
                self._since_detected[key] = since + 1
            task.extra[_STILL] = True  # for the records' reason (SourceTracks.coast)
            return True
        with self._lock:
            self._since_detected[key] = 0
        if gated and task.image is not None:
            self._gates[key].detected(task.image)
        return False

    def _still(self, key: tuple[str, str | None], task: FrameTask, since: int) -> bool:
        """The motion gate's answer for ``task``'s frame, ``since`` frames after its source's
        last detected one (never past gate_max_every)."""
        if not self._gated or since + 1 >= self.settings.gate_max_every or task.image is None:
            return False
        return self._gates[key].still(task.image)

    @property
    def _gated(self) -> bool:
        """Whether the motion gate is on: ``motion_gate`` > 0 and reuse on (``--reuse off``
        detects, and classifies, every frame of a file)."""
        return self.reuse and self.settings.motion_gate > 0.0

    def _forget_previous(self, key: tuple[str, str | None]) -> None:
        """A sequence's first frame: its source's earlier sequence (a folder's previous video)
        is done; its detection count and motion gate go (a folder of many videos would
        otherwise keep a thumbnail each). Under the lock."""
        for other in [k for k in self._since_detected if k[0] == key[0] and k != key]:
            del self._since_detected[other]
            self._gates.pop(other, None)
        if self._gated:
            self._gates[key] = MotionGate(self.settings.motion_gate)

    def _detect_interval(self, task: FrameTask) -> int:
        """Detect one frame in this many of ``task``'s source: more for a live frame that
        waited longer than live_lag_ms (the machine is behind: detect less, drop less)."""
        settings = self.settings
        if not getattr(task.handle.source, "live", False):
            return settings.detect_every
        if self._lagging(task):
            return max(settings.live_detect_every, settings.live_max_every)
        return settings.live_detect_every

    def _classify_max(self, task: FrameTask) -> int | None:
        """The most faces of ``task``'s frame the classifier gets: for a live frame,
        live_classify_max when it waited longer than live_lag_ms, else live_classify_fresh;
        no cap (None) for files or where the option is 0."""
        if not getattr(task.handle.source, "live", False):
            return None
        settings = self.settings
        cap = settings.live_classify_max if self._lagging(task) else settings.live_classify_fresh
        return cap if cap > 0 else None

    def _lagging(self, task: FrameTask) -> bool:
        """Whether ``task``'s frame was read longer than live_lag_ms ago (0: never)."""
        lag_s = self.settings.live_lag_ms / 1000.0
        return lag_s > 0 and time.perf_counter() - task.frame.t_read > lag_s

    @property
    def predicts_late_live_frames(self) -> bool:
        """Whether a live frame the machine is behind on costs little here: the tracker
        predicts its faces instead of the detector finding them (``live_lag_ms`` and
        ``live_max_every``), and its classifications are capped (reuse on). The pipeline then
        keeps such a frame in front of the detector until it has aged instead of dropping it
        for its camera's next one."""
        settings = self.settings
        return (self.mode != "off" and self.reuse and settings.live_lag_ms > 0
                and settings.live_max_every > 1)

    def before_detector(self, stages: list[Stage]) -> Callable[[FrameTask, FrameTask], bool]:
        """When a live frame waiting in front of the detector (of ``stages``) gives way to its
        camera's newer one: at once (the newest frame only), unless the tracker can score it
        for little (:attr:`predicts_late_live_frames`): then, as after the detector, once it
        has waited half its max latency. One 720p camera on 2 cores (2026-12-04, README
        "Video"): 65-75% of its frames scored with the newest only, 90-94% with this."""
        cheap = self.predicts_late_live_frames and any(
            hasattr(stage, "skip_detection") for stage in stages)
        return FrameTask.supersedes if cheap else FrameTask.replaces

    def attach(self, stages: list[Stage]) -> None:
        """Let the face stages among ``stages`` skip the frames the tracker predicts."""
        settings = self.settings
        if (max(settings.detect_every, settings.live_detect_every, settings.live_max_every) > 1
                or self._gated):
            for stage in stages:
                if hasattr(stage, "skip_detection"):
                    stage.skip_detection = self.skips_detection

    def tracks(self, task: FrameTask) -> bool:
        """Whether ``task``'s frame is tracked."""
        if self.mode != "auto":
            return self.mode == "on"
        return task.sequence_key is not None

    @staticmethod
    def _key(task: FrameTask) -> tuple[str, str | None]:
        """Tracks live per source, and per video file inside a folder source (a folder of
        photos tracked with mode "on" is one sequence)."""
        return task.sequence_key or (task.source_id, None)

    def finish(self) -> list[dict[str, Any]]:
        """Every source's remaining tracks end (the run is over); their events."""
        with self._lock:
            sources = list(self._sources.values())
        return [event for tracks in sources for event in tracks.finish()]

    def active_tracks(self) -> dict[str, int]:
        """Confirmed tracks alive per source id."""
        with self._lock:
            sources = list(self._sources.values())
        counts: dict[str, int] = {}
        for tracks in sources:
            counts[tracks.source_id] = counts.get(tracks.source_id, 0) + tracks.active()
        return counts
