"""``maskrt view RUN_DIR``: the live view's page over a finished run's outputs - summary.json
(tiles, counts, settings), records.jsonl (the face gallery, filtered by source, label and
time) and the overlays ``--explain`` wrote (tile pictures, CAM thumbnails).

Face thumbnails are cut from the image file a record came from (photos, folders, drop
folders: ``uri``) when it is still there, CAMs from the frame's overlay; a video frame without
an overlay has none. Nothing is written to the run folder.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maskrt.web.faces import WITHOUT_MASK, matches
from maskrt.web.live import tile
from maskrt.web.pictures import cut, encode_jpeg

log = logging.getLogger("maskrt.web")

#: face records kept from records.jsonl (the gallery pages through them)
MAX_FACES = 200_000
#: thumbnails kept encoded
CACHE_SIZE = 2000


@dataclass
class RunFace:
    id: int
    source_id: str
    frame_index: int
    timestamp: float | None
    label: str
    p_without_mask: float | None
    track_id: int | None
    box: list[int]
    uri: str | None
    overlay: str | None
    seen: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "source_id": self.source_id, "frame_index": self.frame_index,
                "last_frame": self.frame_index, "timestamp": self.timestamp, "seen": self.seen,
                "label": self.label, "p_without_mask": self.p_without_mask,
                "track_id": self.track_id, "box": self.box, "uri": self.uri,
                "face_url": f"/face/{self.id}.jpg" if self.uri else None,
                "cam_url": f"/face/{self.id}_cam.jpg" if self.overlay else None}


class RunData:
    """What the server asks, answered from a run folder (read once, when made)."""

    mode = "run"
    closed = True

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        path = self.run_dir / "summary.json"
        if not path.is_file():
            raise ValueError(f"{self.run_dir}: not a maskrt score output folder (no summary.json)")
        self.summary_data = json.loads(path.read_text(encoding="utf-8"))
        self.faces: list[RunFace] = []
        self._last_overlay: dict[str, str] = {}
        self._people = 0
        self._read_records(self.run_dir / "records.jsonl")
        self._cache: OrderedDict[tuple[int, str], bytes | None] = OrderedDict()
        self._lock = threading.Lock()

    def _read_records(self, path: Path) -> None:
        if not path.is_file():
            return
        overlays: dict[tuple[str, int], str] = {}
        people: set[tuple[str, int]] = set()
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a full disk
                key = (record.get("source_id"), record.get("frame_index"))
                if record.get("overlay"):
                    overlays[key] = record["overlay"]
                    self._last_overlay[key[0]] = record["overlay"]
                if record.get("status") != "scored" or record.get("label") is None \
                        or record.get("box") is None or len(self.faces) >= MAX_FACES:
                    continue
                if record.get("track_id") is not None:
                    if record.get("track_label") == WITHOUT_MASK:
                        people.add((key[0], record["track_id"]))
                elif record["label"] == WITHOUT_MASK and record.get("track_label") is None:
                    self._people += 1
                self.faces.append(RunFace(
                    len(self.faces) + 1, key[0], key[1], record.get("source_timestamp"),
                    record["label"], record.get("p_without_mask"), record.get("track_id"),
                    record["box"], record.get("uri"), overlays.get(key)))
        self._people += len(people)

    # ------------------------------------------------------------ what the server asks

    def sources(self) -> list[dict[str, Any]]:
        tiles = []
        for index, (source_id, entry) in enumerate(self.summary_data.get("sources", {}).items()):
            data = tile(source_id, index, entry)
            data["latency_ms"] = {"last": None, "p50": None}
            data["seq"] = 1 if source_id in self._last_overlay else 0
            tiles.append(data)
        return tiles

    def summary(self) -> dict[str, Any]:
        summary = self.summary_data
        settings = dict(summary.get("settings") or {})
        for key in ("backend", "model", "specs"):
            if key in summary:
                settings[key] = summary[key]
        return {"mode": self.mode, "finished": True, "settings": settings, "summary": summary,
                "people_without_mask": self._people, "run_dir": str(self.run_dir)}

    def faces_since(self, after: int, limit: int, **filters: Any) -> dict[str, Any]:
        found = [f for f in self.faces if f.id > after and matches(f, **filters)]
        return {"faces": [f.to_json() for f in found[:max(0, limit)]], "matched": len(found),
                "last_id": len(self.faces), "total": len(self.faces)}

    def frame(self, source_id: str) -> tuple[int, bytes] | None:
        """The source's last overlay, as written (a JPEG already)."""
        path = self._last_overlay.get(source_id)
        if path is None:
            return None
        try:
            return 1, Path(path).read_bytes()
        except OSError:
            return None

    def face_image(self, entry_id: int, kind: str) -> bytes | None:
        if not 1 <= entry_id <= len(self.faces):
            return None
        key = (entry_id, kind)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        jpeg = self._thumbnail(self.faces[entry_id - 1], kind)
        with self._lock:
            self._cache[key] = jpeg
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return jpeg

    def _thumbnail(self, face: RunFace, kind: str) -> bytes | None:
        import cv2

        path = face.uri if kind == "face" else face.overlay
        image = cv2.imread(path, cv2.IMREAD_COLOR) if path else None
        if image is None:
            return None
        box = face.box
        if kind == "cam" and face.uri:  # the overlay may be the frame decoded smaller
            original = cv2.imread(face.uri, cv2.IMREAD_COLOR)
            if original is not None:
                scale = image.shape[1] / original.shape[1]
                box = [round(v * scale) for v in box] if abs(scale - 1) > 0.02 else box
        crop = cut(image, box, side=160)
        return None if crop is None else encode_jpeg(crop, quality=85)


def serve_run(run_dir: str | Path, host: str = "127.0.0.1", port: int = 0) -> Any:
    """A :class:`~maskrt.web.server.WebServer` of the run folder (serving once made)."""
    from maskrt.web.server import WebServer

    return WebServer(RunData(run_dir), host, port)
