"""The ``maskrt`` command line: one verb per module, imported only when that verb runs."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

#: verb -> (module implementing it, one-line help). Each module has
#: ``add_arguments(parser: argparse.ArgumentParser) -> None`` and ``main(args) -> int``.
VERBS: dict[str, tuple[str, str]] = {
    "demo": ("maskrt.demo", "score and explain sample faces, write overlays and a summary"),
    "export": ("maskrt.export", "export the model as the ONNX graph of DESIGN.md"),
    "bench": ("maskrt.bench", "trtexec-style throughput and latency of a backend"),
    "train": ("maskrt.train", "train a model on an ImageFolder tree"),
    "eval": ("maskrt.evaluate", "accuracy, sensitivity and specificity on an ImageFolder tree"),
    "score": ("maskrt.score", "score files, folders, videos, cameras and streams"),
    "build": ("maskrt.backends.tensorrt_build", "build an FP16 TensorRT engine from the ONNX graph"),
    "check": ("maskrt.check", "compare a backend with the FP32 ONNX Runtime reference"),
}


def build_parser(verbs: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskrt", description="Face-mask classification with "
                                     "class activation maps, as fast as the hardware allows.")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in verbs or VERBS:
        module_name, help_text = VERBS[verb]
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        verb_parser.set_defaults(module=module_name)
        if verbs is not None:
            importlib.import_module(module_name).add_arguments(verb_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the module of the verb asked for, so `maskrt score` never pays for training code.
    verb = next((a for a in argv if not a.startswith("-")), None)
    verbs = [verb] if verb in VERBS else None
    parser = build_parser(verbs)
    args = parser.parse_args(argv)
    module = importlib.import_module(args.module)
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
