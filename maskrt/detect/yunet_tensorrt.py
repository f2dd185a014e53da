"""YuNet-n as an FP16 TensorRT engine: built, cached and reused exactly as the classifier's engine
(the same builder, engine folder, sidecar rules and timing cache; see
:mod:`maskrt.backends.tensorrt.build`), run by an
:class:`~maskrt.backends.tensorrt.session.EngineSession` on the caller's CUDA device.

The engine's optimisation profile follows the detector's settings: 1 to 8 frames per call, from
32x32 up to ``max_side`` (rounded up to the 32-pixel padding) in height and width, tuned for a
1080p frame at the default preset (upscaled 2x, capped to 2048 on the longer side: 1152x2048).
Outputs are float32 (the strongly typed FP16 graph casts them back), decoded by the torch
detector's code (:class:`~maskrt.detect.yunet_torch.YuNetTorchDetector`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from maskrt.backends.tensorrt.build import DEFAULT_ENGINE_DIR, Log
from maskrt.backends.tensorrt.onnx_rewrite import float_graph_onnx_bytes
from maskrt.backends.tensorrt.spec import GraphSpec, Profile, Spatial
from maskrt.detect.yunet import MODEL_PATH, PAD

#: Frames per engine call: 1 to 8, tuned for 4 (several cameras' frames of one size).
DETECTOR_PROFILE = Profile(1, 4, 8)
#: The input size the engine is tuned for: a 1080p frame at the default preset.
OPT_HW = (1152, 2048)
INPUT_NAME = "input"


def yunet_spec(max_side: int = 2048, profile: Profile = DETECTOR_PROFILE) -> GraphSpec:
    """YuNet's graph for the builder: float32[N, 3, H, W] in (BGR 0-255, H and W multiples of
    32 up to ``max_side`` rounded up), float32 cls/obj/bbox/kps per stride out."""
    top = -(-int(max_side) // PAD) * PAD
    opt = (min(OPT_HW[0], top), min(OPT_HW[1], top))
    return GraphSpec("yunet", INPUT_NAME, (3, -1, -1), profile, float_graph_onnx_bytes,
                     spatial=Spatial((PAD, PAD), opt, (top, top)))


class YuNetEngine:
    """The TensorRT engine of YuNet on CUDA ``device`` (a torch.device): called with a CUDA
    float32 blob of at most :attr:`max_batch` frames, returns the outputs by name as views of the
    engine's buffers (valid until the next call)."""

    def __init__(self, device: Any, *, max_side: int = 2048,
                 engine_dir: str | os.PathLike[str] = DEFAULT_ENGINE_DIR,
                 model: str | os.PathLike[str] = MODEL_PATH, log: Log = print) -> None:
        import torch

        from maskrt.backends.tensorrt.session import EngineSession

        self.spec = yunet_spec(max_side)
        self.max_batch = self.spec.profile.max
        with torch.cuda.device(device):
            self.session = EngineSession(self.spec, Path(model), device, engine_dir=engine_dir,
                                         log=log)

    def describe(self) -> str:
        return f"tensorrt {self.session.trt.__version__} fp16 ({self.session.engine_file.name})"

    def __call__(self, blob: Any) -> dict[str, Any]:
        return self.session.run(blob)

    def close(self) -> None:
        self.session.close()
