"""``maskrt build``: an FP16 TensorRT engine of the classifier (or of the face detector)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# Plain Python (TensorRT is imported by main, through versions.import_tensorrt): the profile rules
# and file names the parser's defaults and the summary need.
from maskrt.backends.tensorrt.build import (
    DEFAULT_ENGINE_DIR,
    DEFAULT_PROFILE,
    Profile,
    load_or_build,
    sidecar_path,
)
from maskrt.cli.common import non_negative_int, positive_int
from maskrt.graph.export import MAX_EXPORT_BATCH


def profile_from_args(args: argparse.Namespace) -> Profile:
    """The validated profile of ``--min-batch/--opt-batch/--max-batch`` (ValueError if invalid)."""
    return Profile(args.min_batch, args.opt_batch, args.max_batch)


def spec_from_args(args: argparse.Namespace) -> Any:
    """The graph to build: the classifier with the batch profile, or (``--graph detector``) the
    YuNet face detector's engine, the one ``detector_backend=tensorrt`` loads."""
    if getattr(args, "graph", "classifier") == "detector":
        from maskrt.detect.yunet_tensorrt import yunet_spec

        return yunet_spec(max_side=args.max_side)
    from maskrt.backends.tensorrt.spec import classifier_spec

    return classifier_spec(profile_from_args(args))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--graph", choices=("classifier", "detector"), default="classifier",
                        help="which engine: the mask classifier (default) or the YuNet face "
                             "detector (its profile: 1-8 frames, 32 px up to --max-side)")
    parser.add_argument("--max-side", type=positive_int, default=2048,
                        help="--graph detector: the largest frame side the engine takes, after "
                             "upscaling (default 2048, the detector's max_side)")
    parser.add_argument("--onnx", type=Path, default=None,
                        help="ONNX graph (default: the model's graph, exported into the cache)")
    parser.add_argument("--model", default=None,
                        help="maskrt checkpoint when --onnx is not given (default: shipped weights)")
    parser.add_argument("--min-batch", type=int, default=DEFAULT_PROFILE[0],
                        help=f"smallest batch the engine takes (default {DEFAULT_PROFILE[0]})")
    parser.add_argument("--opt-batch", type=int, default=DEFAULT_PROFILE[1],
                        help=f"batch TensorRT tunes the kernels for (default {DEFAULT_PROFILE[1]})")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_PROFILE[2],
                        help=f"largest batch; device buffers are sized for it (default "
                             f"{DEFAULT_PROFILE[2]}, at most {MAX_EXPORT_BATCH})")
    parser.add_argument("--out", type=Path, default=DEFAULT_ENGINE_DIR,
                        help=f"engine folder (default: {DEFAULT_ENGINE_DIR}/)")
    parser.add_argument("--device", type=non_negative_int, default=0,
                        help="CUDA device index (default 0)")
    parser.add_argument("--workspace-mb", type=positive_int, default=None,
                        help="TensorRT workspace limit in MB (default: TensorRT's)")
    parser.add_argument("--force", action="store_true",
                        help="rebuild even when a matching engine exists")


def main(args: argparse.Namespace) -> int:
    from maskrt.backends import BackendUnavailable
    from maskrt.backends.tensorrt import versions as trt_compat
    from maskrt.cli.common import fail
    from maskrt.graph.errors import ModelLoadError

    # On stdout, like the rest of build's output (tests/test_tensorrt.py reads them there).
    try:
        spec = spec_from_args(args)
        trt = trt_compat.import_tensorrt()
        onnx_path = args.onnx if args.onnx is not None else _default_onnx(args)
    except (ValueError, BackendUnavailable, ModelLoadError) as err:
        return fail("build", err, args, file=sys.stdout)
    if not Path(onnx_path).is_file():
        print(f"maskrt build: ONNX file not found: {onnx_path}")
        return 2
    workspace = args.workspace_mb * (1 << 20) if args.workspace_mb else None
    files = load_or_build(trt, Path(onnx_path), args.out, spec, device_index=args.device,
                          force=args.force, workspace_bytes=workspace)
    if not files.built:
        print(f"up to date: {files.engine} (built {files.sidecar.built_at} with TensorRT "
              f"{files.sidecar.tensorrt_version} on {files.sidecar.gpu_name})")
    low, tuned, high = ("x".join(map(str, shape)) for shape in spec.shapes())
    print(f"  input  {spec.input_name}: {low} to {high}, tuned for {tuned}")
    print(f"  sidecar {sidecar_path(files.engine)}")
    return 0


def _default_onnx(args: argparse.Namespace) -> Path:
    """The detector's shipped graph, or the classifier's, exported once into the export cache
    (what the backends run)."""
    if args.graph == "detector":
        from maskrt.detect import PRESETS, detector_model_path

        return detector_model_path(PRESETS["default"]["detector_model"])
    from maskrt.graph import Graph

    return Graph(args.model).onnx_path()
