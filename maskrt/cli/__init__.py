"""The ``maskrt`` command line: one module per verb, registered in :data:`VERBS`.

Each verb module imports only argparse and light maskrt modules at import time and does its heavy
imports (ONNX Runtime, torch, OpenCV) inside ``main``, so ``maskrt score --help`` is fast and
``maskrt score`` never loads training code.

Failures: :func:`main` turns the expected ones (:func:`maskrt.cli.common.expected_errors`: a
missing file, a bad value, a backend this machine cannot run, ...) into one line on stderr,
``maskrt VERB: message``, and exit status 2; Ctrl-C is ``maskrt VERB: interrupted`` and 130.
``--debug`` (before or after the verb) prints their tracebacks too, leaves OpenCV's and FFmpeg's
log lines on and logs maskrt at debug level. Any other exception is a bug in maskrt: it keeps
its traceback, so that the report of it can be useful without a second run.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import NoReturn

from maskrt.cli import bench, build, check, demo, eval, export, quantize, ray, score, train, view
from maskrt.cli.common import expected_errors, fail, quiet_native_logs

#: verb -> (module with ``add_arguments(parser)`` and ``main(args) -> int``, one-line help)
VERBS: dict[str, tuple[ModuleType, str]] = {
    "demo": (demo, "score and explain sample faces, write overlays and a summary"),
    "score": (score, "score files, folders, videos, cameras and streams"),
    "eval": (eval, "accuracy on face crops, mAP on VOC scene photos, tracking metrics on camera clips"),
    "bench": (bench, "trtexec-style throughput and latency of a backend"),
    "check": (check, "compare a backend with the FP32 ONNX Runtime reference"),
    "export": (export, "export the model as the deployed ONNX graph"),
    "build": (build, "build an FP16 TensorRT engine from the ONNX graph"),
    "quantize": (quantize, "the INT8 graph for ONNX Runtime on the CPU (static quantization)"),
    "train": (train, "train a model on an ImageFolder tree"),
    "ray": (ray, "scale out on Ray: offline scoring (ray score), serving (ray serve)"),
    "view": (view, "the live view's page over a finished score run, in the browser"),
}


DEBUG_HELP = ("show the traceback of a failure, OpenCV's and FFmpeg's own log lines, and "
              "maskrt's debug log")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``maskrt VERB: error: ...``, naming
    the flag and, for choices, the valid ones) plus a hint, not the whole usage block, which
    buries the error; ``--help`` still shows everything."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n({self.prog} --help shows every option)\n")


def build_parser() -> argparse.ArgumentParser:
    from maskrt import __version__

    parser = OneLineParser(prog="maskrt", description="Face-mask classification with "
                           "class activation maps, as fast as the hardware allows.")
    parser.add_argument("--version", action="version", version=f"maskrt {__version__}")
    parser.add_argument("--debug", action="store_true", default=False, help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True,
                                parser_class=OneLineParser)
    for verb, (module, help_text) in VERBS.items():
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        module.add_arguments(verb_parser)
        # SUPPRESS: absent after the verb, it leaves the value given before the verb alone.
        verb_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help=DEBUG_HELP)
        verb_parser.set_defaults(run=module.main, verb_parser=verb_parser)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The parsed command line. An unknown flag is reported by the verb's parser, so the error
    names ``maskrt VERB`` (parse_args would blame the top-level parser and show its usage)."""
    args, unknown = build_parser().parse_known_args(list(argv))
    if unknown:
        args.verb_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    quiet = contextlib.nullcontext() if args.debug else quiet_native_logs()
    with quiet, _debug_logging(args.debug):
        try:
            return int(args.run(args) or 0)
        except KeyboardInterrupt:
            print(f"\nmaskrt {args.verb}: interrupted", file=sys.stderr)
            return 130
        except expected_errors() as err:
            # Bugs (any other exception) are not caught: their traceback is the bug report.
            return fail(args.verb, err, args)


@contextlib.contextmanager
def _debug_logging(enabled: bool) -> Iterator[None]:
    """With --debug, maskrt's loggers at DEBUG on stderr for the run (then as they were)."""
    if not enabled:
        yield
        return
    logger = logging.getLogger("maskrt")
    saved = logger.level, logger.propagate
    handler = None
    if not logger.handlers:  # (score installs its own when it finds none)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("maskrt: %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


if __name__ == "__main__":
    sys.exit(main())
