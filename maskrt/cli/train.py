"""``maskrt train``: train a model on an ImageFolder tree."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Plain Python (no torch): the parser takes its defaults and choices from the recipe itself.
from maskrt.cli.common import non_negative_int
from maskrt.train.recipe import AUGMENT, FREEZE_CHOICES, OPTIMIZERS, SCHEDULES, Recipe


def _progressive(text: str) -> list[tuple[int, int]]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            size, epochs = part.split(":")
            out.append((int(size), int(epochs)))
        except ValueError as err:
            raise argparse.ArgumentTypeError(
                f"expected SIZE:EPOCHS[,SIZE:EPOCHS...], got {text!r}") from err
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Recipe()
    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder with train/ and val/, each "
                        "holding with_mask/ and without_mask/")
    parser.add_argument("--out", metavar="RUN_DIR", required=True, help="where checkpoints, "
                        "metrics.json, curves.png and the confusion matrix go")
    g = parser.add_argument_group("recipe (defaults: the paper's transfer learning)")
    g.add_argument("--pretrained", default=d.pretrained, metavar="imagenet|none|PATH",
                   help="initial weights: torchvision's ImageNet weights (from the torch hub cache "
                   "or downloaded), none (random init) or a local resnet18 weights file (default %(default)s)")
    g.add_argument("--init", default=d.init, metavar="CKPT",
                   help="fine-tune: start from every weight of this maskrt checkpoint (e.g. "
                   "maskrt/weights/maskrt_resnet18.pt or a run's best.pt), the 2-class head included; "
                   "--pretrained is then ignored")
    g.add_argument("--freeze-until", choices=(*FREEZE_CHOICES, "auto"), default="auto",
                   help="freeze this stage and all before it (default auto: layer2, i.e. conv1, "
                        "layer1 and layer2, with --pretrained imagenet; none otherwise, since frozen "
                        "random weights learn nothing)")
    g.add_argument("--epochs", type=int, default=d.epochs, help="default %(default)s")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default %(default)s)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="default %(default)s")
    g.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum / Adam beta1 (default %(default)s)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="default %(default)s")
    g.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help="learning-rate schedule (default %(default)s)")
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs,
                   help="linear warm-up epochs; for onecycle a value < 1 is the fraction of the run (default 0.25)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="default %(default)s")
    g.add_argument("--img-size", type=int, default=d.img_size,
                   help="training size of the last epochs and the validation size (default %(default)s, "
                   "what the exported graph runs at)")
    g.add_argument("--progressive", type=_progressive, default=[], metavar="SIZE:EPOCHS[,...]",
                   help="train the first epochs at smaller sizes, e.g. 128:14 (the rest run at --img-size)")
    g.add_argument("--augment", choices=AUGMENT, default=d.augment,
                   help="off, light (flip, crops of 80-100%%, mild colour) or strong (crops of "
                   "45-100%%, rotation, blur, colour, gray) or degrade (light, and half the images shrunk, "
                   "blurred and JPEG-compressed like far faces in frames); default %(default)s")
    g.add_argument("--no-augment", dest="augment", action="store_const", const="off",
                   help="same as --augment off")
    g.add_argument("--final-augment", choices=AUGMENT, default=None,
                   help="augmentation of the epochs at --img-size after --progressive stages "
                   "(default: same as --augment)")
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="default %(default)s")
    g.add_argument("--seed", type=int, default=d.seed, help="default %(default)s")
    r = parser.add_argument_group("run")
    r.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default %(default)s")
    r.add_argument("--threads", type=non_negative_int, default=2,
                   help="CPU threads for torch (default %(default)s; 0: torch's own choice)")
    r.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="continue an interrupted run from CKPT (default RUN_DIR/last.pt)")
    r.add_argument("--keep-epochs", action="store_true",
                   help="also write every epoch's weights as RUN_DIR/epoch_NN.pt (to choose the epoch "
                   "on other validation data afterwards)")
    r.add_argument("--max-steps-per-epoch", type=int, default=None, help=argparse.SUPPRESS)
    r.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from maskrt.cli.common import fail
    from maskrt.graph.errors import ModelLoadError
    from maskrt.train.data import DatasetError
    from maskrt.train.trainer import train

    try:
        recipe = Recipe(pretrained=args.pretrained, init=args.init, freeze_until=args.freeze_until, epochs=args.epochs,
                        lr=args.lr, optimizer=args.optimizer, momentum=args.momentum,
                        weight_decay=args.weight_decay, schedule=args.schedule,
                        warmup_epochs=args.warmup_epochs, batch_size=args.batch_size,
                        img_size=args.img_size, progressive=args.progressive, augment=args.augment,
                        final_augment=args.final_augment,
                        label_smoothing=args.label_smoothing, seed=args.seed)
    except ValueError as err:
        return fail("train", err, args, prefix="error: ")
    resume = args.resume
    if resume == "auto":
        resume = Path(args.out) / "last.pt"
    try:
        train(recipe, args.data_dir, args.out, device=args.device, threads=args.threads, resume=resume,
              progress=not args.no_progress, max_steps_per_epoch=args.max_steps_per_epoch,
              keep_epochs=args.keep_epochs,
              log=lambda s: print(s, flush=True))
    except (DatasetError, ModelLoadError, RuntimeError, OSError) as err:
        return fail("train", err, args, prefix="error: ")
    except KeyboardInterrupt:
        print(f"\nmaskrt train: interrupted; continue with --resume (from {Path(args.out) / 'last.pt'})",
              file=sys.stderr)
        return 130
    return 0
