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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("split", help="a VOC scene split (as for make_clips.py)")
    parser.add_argument("out", type=Path, help="the clip set to write")
    parser.add_argument("--tool", type=Path, default=TOOL, help="make_clips.py")
    known, rest = parser.parse_known_args(argv)
    tool = load_tool(known.tool)
    tool.camera = fixed_camera(tool)
    tool.main([known.split, str(known.out), *rest])
    manifest = known.out / "clips.json"
    data = json.loads(manifest.read_text())
    data["camera"] = "fixed"
    data["made_by"] = "benchmarks/fixed_camera_clips.py (make_clips.py, its camera held still)"
    manifest.write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
