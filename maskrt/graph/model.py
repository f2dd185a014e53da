"""The maskrt network: torchvision ResNet-18 with a 2-class head, returning logits and features.

Two modules live here:

* :class:`MaskNet` takes normalised float RGB ``[N, 3, H, W]`` (what training feeds) and returns
  ``(logits float32[N, 2], features float32[N, 512, H/32, W/32])``.
* :class:`MaskNetUint8` wraps it with the preprocessing of ARCHITECTURE.md (uint8 BGR NHWC -> cast,
  BGR->RGB, ImageNet normalisation, NCHW) so that the exported graph and every backend take the
  same ``uint8[N, 224, 224, 3]`` BGR batch.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torchvision.models import resnet18

from maskrt.graph.errors import ModelLoadError, UntrainedModelWarning
from maskrt.graph.shipped import SHIPPED_WEIGHTS
from maskrt.labels import CLASSES, IMAGENET_MEAN_RGB, IMAGENET_STD_RGB

# ModelLoadError, UntrainedModelWarning (graph/errors.py) and SHIPPED_WEIGHTS (graph/shipped.py)
# are defined where no torch is needed and re-exported here, where callers have found them.
__all__ = [
    "CHECKPOINT_FORMAT",
    "SHIPPED_WEIGHTS",
    "MaskNet",
    "MaskNetUint8",
    "ModelLoadError",
    "Preprocess",
    "UntrainedModelWarning",
    "build_model",
    "has_shipped_weights",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "maskrt-checkpoint"
CHECKPOINT_VERSION = 1
#: torchvision's ImageNet weights for resnet18 (IMAGENET1K_V1).
IMAGENET_WEIGHTS_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
class MaskNet(nn.Module):
    """ResNet-18 whose ``fc`` is ``Linear(512, 2)``; forward returns ``(logits, features)``.

    ``net`` is the plain torchvision ResNet (its ``forward`` returns logits only), kept as an
    attribute so tools such as pytorch-grad-cam can hook ``net.layer4[-1]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = resnet18(num_classes=len(CLASSES))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: float32[N, 3, H, W] normalised RGB -> layer4 output float32[N, 512, H/32, W/32]."""
        net = self.net
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.forward_features(x)
        logits = self.net.fc(torch.flatten(self.net.avgpool(features), 1))
        return logits, features

    @property
    def fc_weight(self) -> torch.Tensor:
        """The class weights ``float32[2, 512]`` that the CAM uses."""
        return self.net.fc.weight


class Preprocess(nn.Module):
    """uint8[N, H, W, 3] BGR -> float32[N, 3, H, W] RGB normalised with ImageNet mean/std.

    The mean/std are folded into one multiply-add per channel: ``x * (1/(255*std)) - mean/std``.
    """

    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN_RGB, dtype=torch.float32)
        std = torch.tensor(IMAGENET_STD_RGB, dtype=torch.float32)
        # Stored in BGR order so the channel flip happens after the affine step, on the
        # already-transposed tensor, in a single Gather.
        self.register_buffer("scale", (1.0 / (255.0 * std)).flip(0).view(1, 3, 1, 1))
        self.register_buffer("shift", (-mean / std).flip(0).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(self.scale.dtype)
        x = x * self.scale + self.shift
        return x.flip(1)


class MaskNetUint8(nn.Module):
    """The deployed graph: uint8[N, 224, 224, 3] BGR -> (logits[N, 2], features[N, 512, 7, 7])."""

    def __init__(self, model: MaskNet) -> None:
        super().__init__()
        self.preprocess = Preprocess()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(self.preprocess(images))


def build_model(pretrained: str | os.PathLike[str] | None = None) -> MaskNet:
    """A new MaskNet; ``pretrained`` is None (random init), ``"imagenet"`` or a weights file.

    ``"imagenet"`` reads torchvision's ResNet-18 ImageNet weights from the torch hub cache or
    downloads them; a path names a local copy of such a file (a torchvision ``state_dict``). The
    1000-class ``fc`` of those weights is dropped: the 2-class head starts from random init.
    """
    model = MaskNet()
    if pretrained is None or pretrained == "none":
        return model
    if pretrained == "imagenet":
        state = _download_imagenet_weights()
    else:
        state = _read_state_dict(Path(pretrained))
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.net.load_state_dict(backbone, strict=False)
    if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
        raise ModelLoadError(
            f"{pretrained}: expected torchvision resnet18 weights; missing keys "
            f"{sorted(set(missing) - {'fc.weight', 'fc.bias'})[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return model


def _download_imagenet_weights() -> Mapping[str, torch.Tensor]:
    try:
        return torch.hub.load_state_dict_from_url(
            IMAGENET_WEIGHTS_URL, map_location="cpu", progress=True, check_hash=True
        )
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise ModelLoadError(
            "--pretrained imagenet (the default) needs torchvision's ResNet-18 weights, but they are "
            "neither in "
            f"the torch hub cache ({torch.hub.get_dir()}/checkpoints) nor downloadable from "
            f"{IMAGENET_WEIGHTS_URL} ({err}). Download resnet18-f37072fd.pth elsewhere and pass "
            "its path instead (--pretrained PATH), or train from random weights with "
            "--pretrained none (Python: pretrained='none')."
        ) from err


def _torch_load(path: Path, what: str) -> Any:
    """``torch.load`` of a weights-only file; ModelLoadError naming ``what`` was expected."""
    if not path.is_file():
        raise ModelLoadError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises anything on a non-checkpoint
        # torch's own text runs over many lines and suggests weights_only=False, which is wrong
        # advice for a file that is not a checkpoint: keep its first line.
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelLoadError(f"{path}: not a readable {what} ({type(err).__name__}: "
                             f"{first})") from err


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    obj = _torch_load(path, "PyTorch weights file")
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        obj = obj["state_dict"]
        obj = {k.removeprefix("net."): v for k, v in obj.items()}
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{path}: expected a state_dict, got {type(obj).__name__}")
    return obj


def save_checkpoint(model: MaskNet, path: str | os.PathLike[str], *, half: bool = False,
                    meta: Mapping[str, Any] | None = None) -> Path:
    """Write a maskrt checkpoint (weights + class names + free-form ``meta``).

    ``half=True`` stores floating-point tensors as float16 (half the size; loading restores
    float32). BatchNorm's ``num_batches_tracked`` stays int64.
    """
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
             for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "classes": list(CLASSES), "state_dict": state, "meta": dict(meta or {})}, path)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> MaskNet:
    """Read a checkpoint written by :func:`save_checkpoint` (or ``maskrt train``) into a MaskNet."""
    path = Path(path)
    obj = _torch_load(path, "maskrt checkpoint")
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise ModelLoadError(f"{path}: expected a maskrt checkpoint (format={CHECKPOINT_FORMAT!r})")
    if tuple(obj.get("classes", ())) != CLASSES:
        raise ModelLoadError(f"{path}: expected classes {list(CLASSES)}, got {obj.get('classes')}")
    model = MaskNet()
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in obj["state_dict"].items()}
    model.load_state_dict(state)
    return model.eval()


def has_shipped_weights() -> bool:
    """Whether the trained weights of MODEL.md are inside the installed package."""
    return SHIPPED_WEIGHTS.is_file()


def load_model(model: MaskNet | str | os.PathLike[str] | None = None) -> MaskNet:
    """Resolve the ``model`` argument that Engine, the CLI and the backends accept.

    None means the shipped weights; when the package carries none, a randomly initialised
    network with a warning (its labels mean nothing). A MaskNet is used as it is.
    """
    if isinstance(model, MaskNet):
        return model.eval()
    if model is not None:
        return load_checkpoint(model)
    if has_shipped_weights():
        return load_checkpoint(SHIPPED_WEIGHTS)
    warnings.warn("maskrt ships no trained weights in this build: using a RANDOMLY INITIALISED "
                  "model, whose labels are meaningless", UntrainedModelWarning, stacklevel=2)
    torch.manual_seed(0)
    return MaskNet().eval()
