"""INT8 graphs for ONNX Runtime on the CPU: static quantization of the classifier.

The FP32 graph is quantized with ONNX Runtime's static quantizer (QDQ format, per-channel int8
weights, uint8 activations with min-max ranges calibrated on real face crops). The uint8 input,
its cast and normalisation stay as they are; ``logits`` and ``features`` come out float32
(dequantized), so the CAM kernels and every consumer see the same types as before. On CPUs with
VNNI (AVX-512 or AVX-VNNI) ONNX Runtime runs the int8 convolutions several times faster than
FP32.

An INT8 graph sits beside its FP32 graph as ``<stem>_int8.onnx`` and records the SHA-256 of the
graph it was made from (ONNX metadata ``maskrt.source_onnx_sha256``); a graph whose source
changed is stale and is refused. The shipped one is regenerated with::

    maskrt quantize --onnx maskrt/models/maskrt_resnet18.onnx \
        --calibration ../shared/data/facemask/train

and users quantize their own graphs with ``maskrt quantize``.
"""

from __future__ import annotations

import os
import random
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np

SOURCE_SHA256_KEY = "maskrt.source_onnx_sha256"
DEFAULT_CALIBRATION_IMAGES = 256
CALIBRATION_BATCH = 32


def int8_path(onnx_path: str | os.PathLike[str]) -> Path:
    """Where the INT8 graph of ``onnx_path`` lives: ``<stem>_int8.onnx`` beside it."""
    path = Path(onnx_path)
    return path.with_name(f"{path.stem}_int8.onnx")


def calibration_images(folder: str | os.PathLike[str], count: int = DEFAULT_CALIBRATION_IMAGES,
                       seed: int = 0) -> np.ndarray:
    """``count`` images under ``folder`` (recursively; a fixed random choice), decoded and resized
    to the classifier's input as uint8 [N, 224, 224, 3]. Unreadable files are skipped."""
    from maskrt.image import ImageError, decode_image, resize_to_input
    from maskrt.train.data import IMAGE_EXTENSIONS

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"calibration: expected a folder of face images, {root} is not one")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    random.Random(seed).shuffle(paths)
    images = []
    for path in paths:
        if len(images) == count:
            break
        try:
            images.append(resize_to_input(decode_image(path)))
        except (ImageError, OSError):
            continue
    if len(images) < min(count, CALIBRATION_BATCH):
        raise ValueError(f"calibration: expected at least {min(count, CALIBRATION_BATCH)} readable images "
                         f"under {root}, found {len(images)}")
    return np.stack(images)


def quantize_int8(onnx_path: str | os.PathLike[str], images: np.ndarray,
                  out: str | os.PathLike[str] | None = None) -> Path:
    """Write the INT8 graph of ``onnx_path`` calibrated on ``images`` (uint8 [N, 224, 224, 3]) to
    ``out`` (default :func:`int8_path`) and return its path."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from maskrt.graph.export import file_sha256

    source = Path(onnx_path)
    target = Path(out) if out is not None else int8_path(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantized), _Batches(images), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        model = onnx.load(str(quantized))
        _record_source(model, file_sha256(source), len(images))
        onnx.save(model, str(quantized))
        os.replace(quantized, target)
    return target


class _Batches:
    """ONNX Runtime's CalibrationDataReader protocol over a uint8 image array."""

    def __init__(self, images: np.ndarray) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            [images[i:i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        from maskrt.graph.export import INPUT_NAME

        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def _record_source(model: Any, source_sha256: str, images: int) -> None:
    for key, value in ((SOURCE_SHA256_KEY, source_sha256), ("maskrt.quantization",
                       f"ONNX Runtime static QDQ, per-channel int8 weights, uint8 activations, "
                       f"min-max calibration on {images} images")):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


@lru_cache(maxsize=16)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """file_sha256, once per file version (size and mtime key it)."""
    from maskrt.graph.export import file_sha256

    del size, mtime_ns
    return file_sha256(path)


def int8_problem(int8_file: Path, source: Path) -> str | None:
    """Why ``int8_file`` is not the INT8 graph of ``source`` (missing, or made from another
    graph), or None when it is."""
    from maskrt.graph.onnx_proto import read_metadata

    if not int8_file.is_file():
        return f"no INT8 graph at {int8_file} (make one with `maskrt quantize --onnx {source}`)"
    recorded = read_metadata(int8_file).get(SOURCE_SHA256_KEY)
    stat = Path(source).stat()
    if recorded != _sha256(Path(source), stat.st_size, stat.st_mtime_ns):
        return (f"{int8_file} was quantized from another graph than {source} (source SHA-256 "
                f"{recorded}); quantize again with `maskrt quantize --onnx {source}`")
    return None
