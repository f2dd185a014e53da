"""Training-time augmentation and the batches it feeds: uint8 BGR images in, float batches out.

Geometry (crop, flip, rotation, blur) runs per image in NumPy/OpenCV on the 224x224 uint8 image
that decoding produced; colour jitter runs on the whole batch in torch. The levels are the
``--augment`` choices of :data:`maskrt.train.recipe.AUGMENT`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from maskrt.image import resize_to_input
from maskrt.train.data import LoadedImages


def augment_params(level: str) -> dict[str, Any]:
    """The random ranges of one ``--augment`` level ("off" leaves images as they are).

    "degrade" is "light" plus, for half the images, the view a camera gives of a face far away:
    :func:`degrade` (smaller, sometimes blurred, sometimes JPEG-compressed, enlarged back).
    """
    if level == "degrade":
        return {**augment_params("light"), "degrade_p": 0.5}
    if level == "degrade-tiny":  # down to the 9-px faces of crowds far from the camera
        return {**augment_params("degrade"), "degrade_scale": TINY_DEGRADE_SCALE}
    if level == "strong":
        return {"scale": (0.45, 1.0), "ratio": (3 / 4, 4 / 3), "flip": True, "rotate": 12.0,
                "rotate_p": 0.4, "brightness": 0.35, "contrast": 0.35, "saturation": 0.4,
                "gray_p": 0.05, "blur_p": 0.15, "degrade_p": 0.0}
    if level == "light":
        return {"scale": (0.8, 1.0), "ratio": (0.9, 1.1), "flip": True, "rotate": 0.0,
                "rotate_p": 0.0, "brightness": 0.15, "contrast": 0.15, "saturation": 0.15,
                "gray_p": 0.0, "blur_p": 0.0, "degrade_p": 0.0}
    return {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "flip": False, "rotate": 0.0, "rotate_p": 0.0,
            "brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "gray_p": 0.0, "blur_p": 0.0,
            "degrade_p": 0.0}


def augment_image(image: np.ndarray, size: int, params: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Random resized crop (area ``scale``, aspect ``ratio``), flip, small rotation, blur."""
    import cv2
    h, w = image.shape[:2]
    lo, hi = params["scale"]
    if hi < 1.0 or lo < 1.0:
        for _ in range(10):
            area = h * w * rng.uniform(lo, hi)
            ratio = math.exp(rng.uniform(math.log(params["ratio"][0]), math.log(params["ratio"][1])))
            cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                image = image[y0:y0 + ch, x0:x0 + cw]
                break
    out = resize_to_input(image, size)
    if params["flip"] and rng.random() < 0.5:
        out = out[:, ::-1]
    if params["rotate"] and rng.random() < params["rotate_p"]:
        angle = rng.uniform(-params["rotate"], params["rotate"])
        m = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle, 1.0)
        out = cv2.warpAffine(np.ascontiguousarray(out), m, (size, size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)
    if params["blur_p"] and rng.random() < params["blur_p"]:
        out = cv2.GaussianBlur(np.ascontiguousarray(out), (0, 0), rng.uniform(0.3, 1.2))
    if params["degrade_p"] and rng.random() < params["degrade_p"]:
        out = degrade(np.ascontiguousarray(out), rng, params.get("degrade_scale", DEGRADE_SCALE))
    return np.ascontiguousarray(out)


#: the side a degraded face is shrunk to, as a fraction of the input side (224: 27-134 px, the
#: faces of scene photos and camera frames; "degrade-tiny": from 9 px, crowds far from the
#: camera), and the JPEG qualities it may be stored at
DEGRADE_SCALE = (0.12, 0.6)
TINY_DEGRADE_SCALE = (0.04, 0.6)
DEGRADE_QUALITY = (20, 70)


def degrade(image: np.ndarray, rng: np.random.Generator,
            scale: tuple[float, float] = DEGRADE_SCALE) -> np.ndarray:
    """A square uint8 image as a camera sees the same face from further away: shrunk to a side
    in ``scale`` (fractions of its own; default :data:`DEGRADE_SCALE`), blurred (40%),
    JPEG-compressed (60%) at that size, enlarged back bilinearly as scoring enlarges small crops. Degrading at the small size matters: JPEG blocks
    and blur act on the face's own pixels, as in a frame, not on the 224-pixel crop."""
    import cv2
    size = image.shape[0]
    side = max(8, int(round(size * rng.uniform(*scale))))
    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.4:
        small = cv2.GaussianBlur(small, (0, 0), rng.uniform(0.4, 1.2))
    if rng.random() < 0.6:
        quality = int(rng.integers(DEGRADE_QUALITY[0], DEGRADE_QUALITY[1] + 1))
        ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            small = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)


def color_jitter(batch: torch.Tensor, params: dict[str, Any], gen: torch.Generator) -> torch.Tensor:
    """float32[N, H, W, 3] BGR in [0, 255] -> jittered brightness/contrast/saturation (+ gray)."""
    n = batch.shape[0]
    if not (params["brightness"] or params["contrast"] or params["saturation"] or params["gray_p"]):
        return batch

    def factor(amount: float) -> torch.Tensor:
        return 1.0 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * amount

    weights = torch.tensor([0.114, 0.587, 0.299])  # BGR luma
    x = batch
    if params["brightness"]:
        x = x * factor(params["brightness"])
    if params["contrast"]:
        mean = (x * weights).sum(-1, keepdim=True).mean(dim=(1, 2), keepdim=True)
        x = (x - mean) * factor(params["contrast"]) + mean
    if params["saturation"]:
        gray = (x * weights).sum(-1, keepdim=True)
        x = (x - gray) * factor(params["saturation"]) + gray
    if params["gray_p"]:
        to_gray = (torch.rand(n, 1, 1, 1, generator=gen) < params["gray_p"]).float()
        gray = (x * weights).sum(-1, keepdim=True)
        x = x * (1 - to_gray) + gray * to_gray
    return x.clamp_(0, 255)


class BatchStream:
    """Shuffled, augmented training batches, prepared one batch ahead in a worker thread."""

    def __init__(self, data: LoadedImages, batch_size: int, size: int, augment: str, seed: int,
                 drop_last: bool = False) -> None:
        self.data, self.batch_size, self.size = data, batch_size, size
        self.params = augment_params(augment)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        n = len(data)
        # Every image trains each epoch, the last partial batch too; only a last batch of one
        # image is left out (BatchNorm cannot normalise a batch of one in training mode), and it
        # differs from epoch to epoch because the order is shuffled.
        self.drop_last = drop_last or n % batch_size == 1
        self.steps = n // batch_size if self.drop_last else math.ceil(n / batch_size)

    def __len__(self) -> int:
        return self.steps

    def _make(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        out = np.empty((len(idx), self.size, self.size, 3), dtype=np.uint8)
        for j, i in enumerate(idx):
            out[j] = augment_image(self.data.images[i], self.size, self.params, self.rng)
        x = color_jitter(torch.from_numpy(out).float(), self.params, self.gen)
        return x, torch.from_numpy(self.data.labels[idx])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.rng.permutation(len(self.data))
        chunks = [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(self.steps)]
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._make, chunks[0]) if chunks else None
            for k in range(len(chunks)):
                batch = pending.result()
                pending = pool.submit(self._make, chunks[k + 1]) if k + 1 < len(chunks) else None
                yield batch

