"""``maskrt export``: write the deployed ONNX graph, or a Triton model repository of it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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
    from maskrt.cli.common import non_negative_int, positive_int
    from maskrt.serving.triton_faces_repo import PIPELINES
    from maskrt.serving.triton_repo import (DEFAULT_MAX_BATCH, DEFAULT_PLATFORM,
                                            DEFAULT_QUEUE_DELAY_US, PLATFORMS)

    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="ONNX file to write")
    target.add_argument("--triton-repo", type=Path, metavar="DIR",
                        help="write a Triton model repository here (DIR/maskrt/config.pbtxt, "
                             "DIR/maskrt/1/model.*)")
    parser.add_argument("--model", default=None,
                        help="maskrt checkpoint (default: the weights shipped in the package); "
                             "with --triton-repo also an .onnx graph")
    parser.add_argument("--opset", type=opset, default=OPSET,
                        help=f"ONNX opset of --out, {OPSET} or later (default {OPSET})")
    triton = parser.add_argument_group("Triton repository (--triton-repo)")
    triton.add_argument("--pipeline", choices=PIPELINES, default="classifier",
                        help="classifier (default): the classifier graph, 224x224 crops in; "
                             "faces: whole frames in, their faces out (the detector and "
                             "classifier graphs and a maskrt_faces entry model, which needs "
                             "maskrt in the server's Python)")
    triton.add_argument("--platform", choices=PLATFORMS, default=None,
                        help=f"onnxruntime_onnx: model.onnx; tensorrt_plan: an FP16 model.plan "
                             f"(TensorRT and a GPU); python: model.py running model.onnx with "
                             f"ONNX Runtime (default {DEFAULT_PLATFORM}; python with "
                             f"--pipeline faces, which takes python or onnxruntime_onnx)")
    triton.add_argument("--preset", choices=("default", "fast"), default="default",
                        help="--pipeline faces: the face detection preset (as maskrt score's)")
    triton.add_argument("--face-option", action="append", default=[], metavar="KEY=VALUE",
                        help="--pipeline faces: override a preset setting, repeatable (as "
                             "maskrt score's; fixed in the repository)")
    triton.add_argument("--max-batch", type=positive_int, default=DEFAULT_MAX_BATCH,
                        help=f"max_batch_size (default {DEFAULT_MAX_BATCH})")
    triton.add_argument("--max-queue-delay-us", type=non_negative_int,
                        default=DEFAULT_QUEUE_DELAY_US,
                        help=f"dynamic batching's max queue delay in microseconds (default "
                             f"{DEFAULT_QUEUE_DELAY_US})")
    triton.add_argument("--instances", type=positive_int, default=1,
                        help="model instances (instance_group count, default 1)")


def main(args: argparse.Namespace) -> int:
    from maskrt.cli.common import fail
    from maskrt.graph.errors import ModelLoadError
    from maskrt.graph.export import export_onnx, file_sha256

    if args.triton_repo is not None:
        return _triton_repo(args)
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


def _triton_repo(args: argparse.Namespace) -> int:
    """``--triton-repo DIR``: the model's graph (shipped, an .onnx, or a checkpoint exported into
    the cache) as a Triton model repository; failures are the CLI's expected errors."""
    from maskrt.graph import Graph
    from maskrt.serving.triton_repo import DEFAULT_PLATFORM, RepositorySettings, write_repository

    faces = args.pipeline == "faces"
    if not faces and (args.face_option or args.preset != "default"):
        raise ValueError("--preset and --face-option: expected with --pipeline faces only (the "
                         "classifier repository has no face settings)")
    platform = args.platform or ("python" if faces else DEFAULT_PLATFORM)
    settings = RepositorySettings(platform, args.max_batch, args.max_queue_delay_us,
                                  args.instances)
    onnx_path = Graph(args.model).onnx_path()
    if faces:
        return _faces_repo(args, settings, onnx_path)
    repo = write_repository(args.triton_repo, settings, onnx_path)
    print(f"wrote {repo.config} ({settings.platform}, max_batch_size {settings.max_batch}, "
          f"max queue delay {settings.max_queue_delay_us} us, {settings.instances} instance(s))")
    for path in repo.files:
        print(f"  {path}")
    for spec in (*repo.inputs, *repo.outputs):
        print(f"  {spec.name}: {spec.data_type} [-1, {', '.join(str(d) for d in spec.dims)}]")
    print(f"  graph {onnx_path} (sha256 {repo.onnx_sha256[:16]}...)")
    return 0


def _faces_repo(args: argparse.Namespace, settings: Any, onnx_path: Path) -> int:
    """``--pipeline faces``: the classifier, detector and entry models."""
    from maskrt.serving.triton_faces_repo import FacesSettings, write_faces_repository

    faces = FacesSettings(args.preset, tuple(args.face_option))
    repo = write_faces_repository(args.triton_repo, settings, faces, onnx_path)
    print(f"wrote {repo.config} (the faces pipeline: preset {faces.preset}, face options "
          f"{list(faces.face_options) or 'none'}; {settings.platform} graph models, "
          f"{settings.instances} instance(s) each)")
    for part in (repo.classifier, repo.detector):
        print(f"  {part.config} (sha256 {part.onnx_sha256[:16]}...)")
        for path in part.files:
            print(f"    {path}")
    print(f"  {repo.files[0]} (imports maskrt: the server's Python needs it installed)")
    return 0


def _newest_opset() -> int | None:
    """The newest opset the installed onnx converts to (None without onnx: export_onnx then
    says what to install)."""
    try:
        import onnx
    except ImportError:
        return None
    return int(onnx.defs.onnx_opset_version())
