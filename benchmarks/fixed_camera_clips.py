"""Clips of fixed cameras: ``make_clips.py``'s clips with the camera held still.

    python benchmarks/fixed_camera_clips.py ../shared/data/scenes/val clips/fixed-val --clips 8 --seconds 10
    (every option of make_clips.py; --tool PATH names make_clips.py when it is not at
    ../shared/tools/make_clips.py)

Why: ``make_clips.py``'s virtual camera always zooms, pans and shakes, while most cameras users
point maskrt at are fixed (a door, a corridor, a waiting room). These clips are the same scenes,
light drift, sensor noise, passers-by (the dark bar that sweeps across) and cuts between shots,
filmed by a camera that stays where it was pointed: each shot keeps one framing (zoom and pan
drawn as ``make_clips.py`` draws them, held for the shot; no rotation, no shake). The people
still do not move on their own, so a shot is a seated crowd that a passer-by crosses now and
then: what the detector's motion gate (``--track-option motion_gate``) is for. The output has
``make_clips.py``'s layout (``maskrt eval`` reads it); ``clips.json`` says ``"camera": "fixed"``.

``--walkers N`` adds N people who walk into each shot: a head-and-shoulders patch around an
annotated face of a photo of the split (its class kept), its face 20-60 px, pasted with soft
edges, stepping in from one side during the first 60% of the shot and walking across at 15-35
px a frame, behind the passers-by's bar; their faces are ground-truth tracks like the others
(use long shots, ``--shots 1``, for them to get across). Pasted people are not
filmed people, but they move, which neither ``make_clips.py``'s people nor the seated crowds
do: what a fixed camera in front of a corridor sees.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO.parent / "shared" / "tools" / "make_clips.py"


def load_tool(path: Path) -> ModuleType:
    """``make_clips.py`` as a module (it is a script of the shared material, not a package)."""
    if not path.is_file():
        raise SystemExit(f"fixed_camera_clips: expected make_clips.py at {path} (--tool PATH)")
    spec = importlib.util.spec_from_file_location("make_clips", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fixed_camera(tool: ModuleType) -> Any:
    """A replacement for ``tool.camera``: the first frame's framing of its moving camera, kept
    for every frame of the shot, with the rotation and the shake left out."""
    import cv2

    def camera(rng: np.random.Generator, n: int, img_w: int, img_h: int, out_w: int,
               out_h: int) -> list[np.ndarray]:
        cover = max(out_w / img_w, out_h / img_h)
        scale = cover * float(rng.uniform(1.0, 1.4))
        half_w, half_h = out_w / (2 * scale), out_h / (2 * scale)
        cx, cy = rng.uniform(0.0, 1.0, size=2)
        x = half_w + cx * max(img_w - 2 * half_w, 0) if img_w > 2 * half_w else img_w / 2
        y = half_h + cy * max(img_h - 2 * half_h, 0) if img_h > 2 * half_h else img_h / 2
        matrix = cv2.getRotationMatrix2D((x, y), 0.0, scale)
        matrix[0, 2] += out_w / 2 - x
        matrix[1, 2] += out_h / 2 - y
        return [matrix] * n

    return camera


#: a walker's patch around its face (multiples of the face box: width, height above, below)
PATCH = (2.2, 0.7, 1.9)
#: a walker's face side in the frame (px) and pace (px a frame: 150-350 px/s at 10 fps, a
#: walk across a 720p view in 4-9 s), drawn uniformly
WALKER_FACE = (20.0, 60.0)
WALKER_SPEED = (15.0, 35.0)


class Walkers:
    """People walking across each shot (``--walkers``): made when a shot's mosaic is, pasted
    into its frames as ``render_shot`` warps them, their ground-truth rows added after."""

    def __init__(self, tool: ModuleType, donors: list[tuple[np.ndarray, int, list[float]]],
                 count: int, seed: int) -> None:
        self.tool, self.donors, self.count = tool, donors, count
        self.rng = np.random.default_rng(seed + 7919)  # not the clip's own stream
        self.pending: list[dict[str, Any]] = []
        self.current: list[dict[str, Any]] = []
        self.frame = 0
        self.bar: Any = None
        self.n = 0  # frames of the shot being rendered

    def install(self) -> None:
        tool, mosaic, render, occluder, cv2 = (self.tool, self.tool.mosaic, self.tool.render_shot,
                                               self.tool.occluder, self.tool.cv2)
        walkers = self

        def with_walkers(photos: Any, out_w: int, out_h: int, grid: int) -> Any:
            image, faces = mosaic(photos, out_w, out_h, grid)
            walkers.pending = [walkers._walker(out_w, out_h) for _ in range(walkers.count)]
            return image, faces + [(w["cls"], [0.0, 0.0, 1.0, 1.0]) for w in walkers.pending]

        def rendered(rng: Any, img: Any, faces: list, n: int, out_w: int, out_h: int,
                     first_id: int) -> Any:
            walkers.current, walkers.frame, walkers.bar, walkers.n = walkers.pending, 0, None, n
            still = len(faces) - len(walkers.current)
            frames, rows = render(rng, img, faces[:still], n, out_w, out_h, first_id)
            for j, walker in enumerate(walkers.current):
                rows += walkers._rows(walker, n, out_w, out_h, first_id + still + j)
            return frames, rows

        def captured(rng: Any, n: int, out_w: int, out_h: int) -> Any:
            walkers.bar = occluder(rng, n, out_w, out_h)
            return walkers.bar

        class _Cv2:  # make_clips.py's cv2, its warpAffine pasting the walkers in
            def __getattr__(self, name: str) -> Any:
                return getattr(cv2, name)

            @staticmethod
            def warpAffine(*args: Any, **kwargs: Any) -> Any:
                frame = cv2.warpAffine(*args, **kwargs)
                for walker in walkers.current:
                    walkers._paste(frame, walker, walkers.frame)
                walkers.frame += 1
                return frame

        tool.mosaic, tool.render_shot, tool.occluder, tool.cv2 = (with_walkers, rendered,
                                                                  captured, _Cv2())

    def _walker(self, out_w: int, out_h: int) -> dict[str, Any]:
        import cv2

        image, cls, (x0, y0, x1, y1) = self.donors[int(self.rng.integers(len(self.donors)))]
        side = max(x1 - x0, y1 - y0)
        left, top = x0 - (PATCH[0] - 1) / 2 * (x1 - x0), y0 - PATCH[1] * side
        right, bottom = x1 + (PATCH[0] - 1) / 2 * (x1 - x0), y1 + PATCH[2] * side
        h, w = image.shape[:2]
        box = [max(0, int(left)), max(0, int(top)), min(w, int(right)), min(h, int(bottom))]
        scale = float(self.rng.uniform(*WALKER_FACE)) / side
        patch = cv2.resize(image[box[1]:box[3], box[0]:box[2]], None, fx=scale, fy=scale,
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        face = [(x0 - box[0]) * scale, (y0 - box[1]) * scale, (x1 - box[0]) * scale,
                (y1 - box[1]) * scale]
        start, speed = self.rng.uniform(0.0, 0.6), self.rng.uniform(*WALKER_SPEED)
        rightward = bool(self.rng.random() < 0.5)
        return {"cls": cls, "patch": patch, "face": face, "start": start, "speed": speed,
                "y": float(self.rng.uniform(0.15, 0.85)) * out_h - patch.shape[0] / 2,
                "rightward": rightward, "alpha": _soft_edges(patch.shape[:2])}

    @staticmethod
    def _x(walker: dict[str, Any], k: int, n: int, out_w: int) -> float | None:
        """The patch's left edge in frame k of n (None: not in the frame yet, or gone): it
        steps in from one side at frame ``start`` x n and walks at ``speed`` px a frame."""
        steps = k - walker["start"] * n
        width = walker["patch"].shape[1]
        x = -width + steps * walker["speed"]
        if steps < 0 or x > out_w:
            return None
        return x if walker["rightward"] else out_w - width - x

    def _paste(self, frame: np.ndarray, walker: dict[str, Any], k: int) -> None:
        x = self._x(walker, k, self.n, frame.shape[1])
        if x is None:
            return
        patch, alpha = walker["patch"], walker["alpha"]
        left, top = int(round(x)), int(round(walker["y"]))
        fx0, fy0 = max(left, 0), max(top, 0)
        fx1, fy1 = min(left + patch.shape[1], frame.shape[1]), min(top + patch.shape[0], frame.shape[0])
        if fx1 <= fx0 or fy1 <= fy0:
            return
        px0, py0 = fx0 - left, fy0 - top
        region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
        a = alpha[py0:py0 + fy1 - fy0, px0:px0 + fx1 - fx0, None]
        src = patch[py0:py0 + fy1 - fy0, px0:px0 + fx1 - fx0].astype(np.float32)
        frame[fy0:fy1, fx0:fx1] = (a * src + (1 - a) * region).astype(np.uint8)

    def _rows(self, walker: dict[str, Any], n: int, out_w: int, out_h: int,
              track_id: int) -> list[tuple]:
        rows = []
        for k in range(n):
            x = self._x(walker, k, n, out_w)
            if x is None:
                continue
            fx0, fy0, fx1, fy1 = walker["face"]
            box = [round(x) + fx0, round(walker["y"]) + fy0, round(x) + fx1, round(walker["y"]) + fy1]
            rows.extend(self._row(k, track_id, walker["cls"], box, out_w, out_h))
        return rows

    def _row(self, k: int, track_id: int, cls: int, box: list[float], out_w: int,
             out_h: int) -> list[tuple]:
        """make_clips.py's ground-truth row of a face box in frame k (none when outside)."""
        x0, y0, x1, y1 = box
        area = max((x1 - x0) * (y1 - y0), 1e-6)
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, out_w), min(y1, out_h)
        if cx1 <= cx0 or cy1 <= cy0:
            return []
        hidden = 0.0
        if self.bar and self.bar[k]:
            ox0, ox1 = max(cx0, self.bar[k][0]), min(cx1, self.bar[k][1])
            hidden = max(ox1 - ox0, 0) * (cy1 - cy0)
        vis = max((cx1 - cx0) * (cy1 - cy0) - hidden, 0) / area
        w, h = cx1 - cx0, cy1 - cy0
        consider = int(cls in (1, 2) and vis >= 0.5 and min(w, h) >= 8)
        return [(k, track_id, cx0, cy0, w, h, consider, cls, round(vis, 3))]


def _soft_edges(shape: tuple[int, int]) -> np.ndarray:
    """An alpha mask of ``shape``: 1 inside, falling to 0 over the outer tenth of each side."""
    h, w = shape
    ramp_y = np.clip(np.minimum(np.arange(h), np.arange(h)[::-1]) / max(h * 0.1, 1), 0, 1)
    ramp_x = np.clip(np.minimum(np.arange(w), np.arange(w)[::-1]) / max(w * 0.1, 1), 0, 1)
    return (ramp_y[:, None] * ramp_x[None, :]).astype(np.float32)


def donors(tool: ModuleType, split: str) -> list[tuple[np.ndarray, int, list[float]]]:
    """(photo, class, face box) of the split's annotated with_mask / without_mask faces of 16
    px and more: the faces walkers are cut around."""
    import cv2

    root = Path(split)
    out = []
    for xml in sorted((root / "annotations").glob("*.xml")):
        faces = [(c, b) for c, b in tool.read_voc(str(xml)) if c in (1, 2)
                 and min(b[2] - b[0], b[3] - b[1]) >= 16]
        image_path = next((p for p in (root / "images").glob(xml.stem + ".*")), None)
        if not faces or image_path is None:
            continue
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        out.extend((image, c, b) for c, b in faces)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("split", help="a VOC scene split (as for make_clips.py)")
    parser.add_argument("out", type=Path, help="the clip set to write")
    parser.add_argument("--tool", type=Path, default=TOOL, help="make_clips.py")
    parser.add_argument("--walkers", type=int, default=0, help="people walking across a shot")
    known, rest = parser.parse_known_args(argv)
    tool = load_tool(known.tool)
    tool.camera = fixed_camera(tool)
    if known.walkers > 0:
        seed = int(rest[rest.index("--seed") + 1]) if "--seed" in rest else 0
        Walkers(tool, donors(tool, known.split), known.walkers, seed).install()
    tool.main([known.split, str(known.out), *rest])
    manifest = known.out / "clips.json"
    data = json.loads(manifest.read_text())
    data["camera"] = "fixed"
    data["walkers_per_shot"] = known.walkers
    data["made_by"] = "benchmarks/fixed_camera_clips.py (make_clips.py, its camera held still)"
    manifest.write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
