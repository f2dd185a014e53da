"""Every figure MODEL.md reports for one model, on the val splits only.

    python scripts/eval_scene_model.py [--model CKPT] --out DIR

Runs, for the shipped model (no ``--model``) or a checkpoint:

* ``maskrt eval shared/data/facemask/val`` (accuracy / sensitivity / specificity, ONNX Runtime),
* the annotated faces of ``shared/data/scenes/val`` cut as crops widened 1.2x
  (:func:`maskrt.train.scene_crops.scene_crops`) and classified by :class:`maskrt.Engine`,
* ``maskrt eval shared/data/scenes/val`` (detector + classifier, VOC mAP at IoU 0.5 and 0.3),

and writes ``DIR/facemask_val.json``, ``DIR/scene_crops_val.json``, ``DIR/scenes_val.json`` and a
one-screen summary ``DIR/summary.json``. Going through the ``maskrt eval`` command line keeps the
figures the ones users get.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _cli_eval(data_dir: Path, model: str | None, out_json: Path) -> dict:
    from maskrt import cli

    argv = ["eval", str(data_dir), "--json", str(out_json), "--no-progress"]
    if model:
        argv += ["--model", model]
    code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"maskrt {' '.join(argv)} failed with exit code {code}")
    return json.loads(out_json.read_text())


def crop_figures(model: str | None, widen: float = 1.2) -> dict:
    """Accuracy / sensitivity / specificity on the widened ground-truth crops of scenes/val."""
    from maskrt import Engine
    from maskrt.train.scene_crops import classify_crops, scene_crops

    crops = scene_crops(SHARED / "scenes" / "val", widen=widen)
    with Engine(model) if model else Engine() as engine:
        metrics = classify_crops(engine, crops)
    return {"crops": len(crops.crops), **metrics.as_dict()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the JSON files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    face = _cli_eval(SHARED / "facemask" / "val", args.model, args.out / "facemask_val.json")
    crops = crop_figures(args.model)
    (args.out / "scene_crops_val.json").write_text(json.dumps(crops, indent=2) + "\n")
    scenes = _cli_eval(SHARED / "scenes" / "val", args.model, args.out / "scenes_val.json")
    summary = {"model": args.model or "shipped", "facemask_val": _short(face),
               "scene_crops_val": _short(crops), "scenes_val": _scene_short(scenes)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


def _short(d: dict) -> dict:
    keys = ("accuracy", "sensitivity", "specificity")
    return {k: d.get(k) for k in keys} | {"confusion": d.get("confusion_matrix")}


def _scene_short(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("mistakes", "images", "per_image")}


if __name__ == "__main__":
    sys.exit(main())
