"""``maskrt quantize``: the INT8 twin of the ONNX graph, for ONNX Runtime on the CPU."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from maskrt.cli.common import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calibration", type=Path, required=True,
                        help="folder of face crops like the ones to be scored (searched "
                             "recursively; e.g. a training split)")
    parser.add_argument("--count", type=positive_int, default=256,
                        help="calibration images, a fixed random choice (default 256)")
    parser.add_argument("--onnx", type=Path, default=None,
                        help="ONNX graph (default: the model's graph)")
    parser.add_argument("--model", default=None,
                        help="maskrt checkpoint when --onnx is not given (default: shipped weights)")


def main(args: argparse.Namespace) -> int:
    from maskrt.graph import Graph
    from maskrt.graph.quantize import calibration_images, quantize_int8

    onnx_path = args.onnx if args.onnx is not None else Graph(args.model).onnx_path()
    if not Path(onnx_path).is_file():
        raise FileNotFoundError(f"--onnx: expected an ONNX file, {onnx_path} does not exist")
    images = calibration_images(args.calibration, args.count)
    print(f"quantizing {onnx_path}: calibrating on {len(images)} images from {args.calibration}")
    start = time.perf_counter()
    out = quantize_int8(onnx_path, images)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.0f} s; "
          f"run it with --backend-option precision=int8 (check it first: maskrt check "
          f"--backend onnxruntime --backend-option precision=int8 --data VAL_FOLDER)")
    return 0
