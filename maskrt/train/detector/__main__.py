"""``python -m maskrt.train.detector``: fine-tune YuNet-n on scene photos; regenerates the
shipped detector with its defaults::

    python -m maskrt.train.detector ../shared/data/scenes/train \\
        --out maskrt/models/yunet/yunet_n_masks.onnx --eval ../shared/data/scenes/val

Pass training splits only: the val split is for measuring (``--eval``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maskrt.detect import DETECTOR_MODELS, MODELS_DIR, PRESETS
from maskrt.train.detector.fit import Recipe, detector_figures, fine_tune
from maskrt.train.scenes import index_scenes


def _parser() -> argparse.ArgumentParser:
    defaults = Recipe()
    parser = argparse.ArgumentParser(prog="python -m maskrt.train.detector", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("splits", nargs="+", type=Path, help="VOC scene splits to train on")
    parser.add_argument("--out", type=Path, required=True, help="the ONNX graph to write")
    parser.add_argument("--source", default=str(MODELS_DIR / DETECTOR_MODELS["yunet"]),
                        help="the YuNet graph to start from (default: the published YuNet-n)")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-degrade", action="store_true",
                        help="no brightness, blur, noise or JPEG augmentation")
    parser.add_argument("--source-degrade", type=float, default=defaults.source_degrade,
                        metavar="P", help="the share of crops whose photo is first shrunk, "
                        "blurred and JPEG-compressed at its own resolution (default %(default)s)")
    parser.add_argument("--eval", type=Path, action="append", default=[],
                        help="a VOC split to measure the source and the result on (repeatable)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.steps < 1 or args.batch < 1 or not args.lr > 0 or not 0 <= args.source_degrade <= 1:
        print(f"error: expected --steps, --batch >= 1, --lr > 0 and --source-degrade in [0, 1], "
              f"got {args.steps}, {args.batch}, {args.lr}, {args.source_degrade}", file=sys.stderr)
        return 2
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    scenes = [scene for split in args.splits for scene in index_scenes(split)]
    recipe = Recipe(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                    degrade=not args.no_degrade, source_degrade=args.source_degrade)
    # The large faces' fit (the first four numbers): the shipped detector was trained with it
    # before box_fit had a small faces' part, which was then fitted on its boxes.
    fine_tune(scenes, args.source, args.out, PRESETS["default"]["box_fit"][:4], recipe)
    for split in args.eval:
        held = index_scenes(split)
        for name, model in (("source", args.source), ("fine-tuned", str(args.out))):
            figures = detector_figures(held, model)
            print(f"{split} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
