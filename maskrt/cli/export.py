"""``maskrt export``: write the deployed ONNX graph."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Constants only: maskrt.graph.export imports torch and onnx inside export_onnx.
from maskrt.graph.export import INPUT_NAME, OPSET, OUTPUT_NAMES
from maskrt.labels import INPUT_SIZE


def opset(text: str) -> int:
    """argparse type: an ONNX opset the exporter writes. Below OPSET torch's exporter would
    write OPSET anyway after a failed down-conversion (and we would report the wrong opset)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < OPSET:
        raise argparse.ArgumentTypeError(f"expected {OPSET} or later, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="ONNX file to write")
    parser.add_argument("--model", default=None,
                        help="maskrt checkpoint (default: the weights shipped in the package)")
    parser.add_argument("--opset", type=opset, default=OPSET,
                        help=f"ONNX opset, {OPSET} or later (default {OPSET})")


def main(args: argparse.Namespace) -> int:
    from maskrt.cli.common import fail
    from maskrt.graph.errors import ModelLoadError
    from maskrt.graph.export import export_onnx, file_sha256

    newest = _newest_opset()
    if newest is not None and args.opset > newest:
        print(f"maskrt export: error: --opset: the installed onnx knows opsets up to {newest}, "
              f"got {args.opset}", file=sys.stderr)
        return 2
    try:
        path = export_onnx(args.model, args.out, opset=args.opset)
    except ModelLoadError as err:
        return fail("export", err, args, prefix="error: ")
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({size_mb:.1f} MB, opset {args.opset}, sha256 {file_sha256(path)[:16]}...)")
    print(f"  input  {INPUT_NAME}: uint8[N,{INPUT_SIZE},{INPUT_SIZE},3] BGR")
    print(f"  output {OUTPUT_NAMES[0]}: float32[N,2]  {OUTPUT_NAMES[1]}: float32[N,512,7,7]")
    return 0


def _newest_opset() -> int | None:
    """The newest opset the installed onnx converts to (None without onnx: export_onnx then
    says what to install)."""
    try:
        import onnx
    except ImportError:
        return None
    return int(onnx.defs.onnx_opset_version())
