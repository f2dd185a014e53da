"""``maskrt check``: compare a backend with the FP32 ONNX Runtime reference."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from maskrt.backends import add_backend_arguments
from maskrt.tools.check import DEFAULT_MIN_AGREEMENT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # torch by default: the ONNX Runtime reference checked against itself would prove nothing.
    add_backend_arguments(parser, default="torch")
    parser.add_argument("--data", type=Path, default=None,
                        help="ImageFolder tree or folder of images (default: $MASKRT_VAL_DIR, "
                             "else the packaged sample faces)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N images only")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT,
                        help=f"required label agreement (default {DEFAULT_MIN_AGREEMENT})")
    parser.add_argument("--json", type=Path, default=None, help="write the full report here")


def main(args: argparse.Namespace) -> int:
    from maskrt.backends import BackendUnavailable, backend_options
    from maskrt.cli.common import fail, model_rejected
    from maskrt.graph.errors import ModelLoadError
    from maskrt.tools.check import (
        default_data_dir,
        format_report,
        load_check_images,
        run_check,
    )

    if args.batch < 1 or (args.limit is not None and args.limit < 1):
        print(f"maskrt check: expected --batch >= 1 and --limit >= 1, got {args.batch} and "
              f"{args.limit}")
        return 2
    if not 0.0 <= args.min_agreement <= 1.0:
        print(f"maskrt check: --min-agreement: expected a fraction in [0, 1], got {args.min_agreement}")
        return 2
    try:
        options = backend_options(args)
        data = load_check_images(args.data or default_data_dir(), args.limit)
        report = run_check(args.backend, data, model=args.model, options=options,
                           batch=args.batch, min_agreement=args.min_agreement)
    except (BackendUnavailable, ModelLoadError, FileNotFoundError, ValueError) as err:
        # On stdout, like the rest of check's report (where scripts and its tests read it).
        return fail("check", err, args, file=sys.stdout)
    except Exception as err:
        unloadable = model_rejected(args.model, err)
        if unloadable is None:
            raise  # a bug: keeps its traceback
        return fail("check", unloadable, args, file=sys.stdout)
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0 if report.passed else 1
