"""The ``maskrt`` command line: one module per verb, registered in :data:`VERBS`.

Each verb module imports only argparse and light maskrt modules at import time and does its heavy
imports (ONNX Runtime, torch, OpenCV) inside ``main``, so ``maskrt score --help`` is fast and
``maskrt score`` never loads training code.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType
from typing import Sequence

from maskrt.cli import bench, build, check, demo, eval, export, score, train

#: verb -> (module with ``add_arguments(parser)`` and ``main(args) -> int``, one-line help)
VERBS: dict[str, tuple[ModuleType, str]] = {
    "demo": (demo, "score and explain sample faces, write overlays and a summary"),
    "score": (score, "score files, folders, videos, cameras and streams"),
    "eval": (eval, "accuracy, sensitivity and specificity on an ImageFolder tree"),
    "bench": (bench, "trtexec-style throughput and latency of a backend"),
    "check": (check, "compare a backend with the FP32 ONNX Runtime reference"),
    "export": (export, "export the model as the deployed ONNX graph"),
    "build": (build, "build an FP16 TensorRT engine from the ONNX graph"),
    "train": (train, "train a model on an ImageFolder tree"),
}


def build_parser() -> argparse.ArgumentParser:
    from maskrt import __version__

    parser = argparse.ArgumentParser(prog="maskrt", description="Face-mask classification with "
                                     "class activation maps, as fast as the hardware allows.")
    parser.add_argument("--version", action="version", version=f"maskrt {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, (module, help_text) in VERBS.items():
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        module.add_arguments(verb_parser)
        verb_parser.set_defaults(run=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
