"""``maskrt export``: write the deployed ONNX graph."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Constants only: maskrt.graph.export imports torch and onnx inside export_onnx.
from maskrt.graph.export import INPUT_NAME, OPSET, OUTPUT_NAMES
from maskrt.labels import INPUT_SIZE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="ONNX file to write")
    parser.add_argument("--model", default=None,
                        help="maskrt checkpoint (default: the weights shipped in the package)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")


def main(args: argparse.Namespace) -> int:
    from maskrt.graph.errors import ModelLoadError
    from maskrt.graph.export import export_onnx, file_sha256

    try:
        path = export_onnx(args.model, args.out, opset=args.opset)
    except ModelLoadError as err:
        print(f"maskrt export: error: {err}", file=sys.stderr)
        return 2
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({size_mb:.1f} MB, opset {args.opset}, sha256 {file_sha256(path)[:16]}...)")
    print(f"  input  {INPUT_NAME}: uint8[N,{INPUT_SIZE},{INPUT_SIZE},3] BGR")
    print(f"  output {OUTPUT_NAMES[0]}: float32[N,2]  {OUTPUT_NAMES[1]}: float32[N,512,7,7]")
    return 0
