"""Blurred frames sharpened before faces are found and classified (``sharpen``, a face option).

Why: a mild blur (Gaussian, sigma 1 px) of the scene photos cost the default preset 0.12 of
mAP@0.5 on scenes val (0.894 -> 0.771): the detector misses blurred small faces and the
classifier calls blurred masks bare. An unsharp mask on those frames gives most of it back
(0.866), but on frames that are already sharp it costs (0.889 at a mild amount, 0.864 at a
strong one): so only frames measured as blurred are sharpened.

The measure (a no-reference re-blur ratio, after Crete-Roffet et al., "The blur effect", 2007):
the energy of the grey frame's Laplacian after one more Gaussian blur (sigma 1) over its energy
before. A sharp frame loses most of its fine detail to that blur (ratio about 0.05-0.16 on
scenes train and val); an already blurred one has little left to lose (0.2-0.47 after the blur
above). Being a ratio of energies, it is led by a frame's sharpest parts: a sharp subject
before a blurred background (depth of field) measures as sharp (train and val photos with all
but their centre blurred by sigma 3: 0.05-0.17, as unchanged), and per-tile ratios told sharp
from blurred photos less well. Frames are sharpened with ``amount`` scaled linearly from 0 at
ratio ``soft`` to full at ``blurred``, so a video's frames near the edge never switch
sharpening on and off; the frame the faces are found in, the crops the classifier sees and the
overlays are that sharpened frame.

The constants were chosen on scenes val and checked on train (README, "Faces in scenes"):
``soft`` lies above the ratio of 276 of the 277 unchanged train photos and every val photo,
``blurred`` at the 5th percentile of val blurred by sigma 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: the measure looks at no more than this many pixels (a centred window; a 400x300 photo is
#: measured whole): 12 ms on a whole 720p frame, on this project's 2-core machine
MEASURE_PIXELS = 640 * 360


@dataclass(frozen=True)
class Sharpener:
    """Unsharp masking of the frames measured as blurred (see the module's docstring).

    amount: the unsharp mask's weight on a fully blurred frame (0: never sharpen).
    """

    amount: float = 2.5
    sigma: float = 1.5
    soft: float = 0.18
    blurred: float = 0.33

    def __post_init__(self) -> None:
        if not self.amount >= 0:  # NaN too
            raise ValueError(f"sharpen: expected a weight >= 0 (0 turns it off), got "
                             f"{self.amount}")
        if not (self.sigma > 0 and 0 < self.soft < self.blurred < 1):
            raise ValueError(f"sharpen: expected sigma > 0 and 0 < soft < blurred < 1, got "
                             f"{self.sigma}, {self.soft}, {self.blurred}")

    def weight(self, image: np.ndarray) -> float:
        """The unsharp mask's weight for ``image`` (0 for a sharp one)."""
        if self.amount == 0:
            return 0.0
        ratio = blur_ratio(image)
        return self.amount * float(np.clip((ratio - self.soft) / (self.blurred - self.soft), 0, 1))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``image`` itself when sharp, else a sharpened copy (uint8, same shape)."""
        weight = self.weight(image)
        if weight == 0:
            return image
        smooth = cv2.GaussianBlur(image, (0, 0), self.sigma)
        return cv2.addWeighted(image, 1 + weight, smooth, -weight, 0)


def blur_ratio(image: np.ndarray) -> float:
    """The re-blur ratio of a BGR or grey uint8 image, over its centre when it is large: about
    0.05-0.16 for sharp photos, more the blurrier (1 for a flat one)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    if h * w > MEASURE_PIXELS:
        shrink = (MEASURE_PIXELS / (h * w)) ** 0.5
        ch, cw = max(8, int(h * shrink)), max(8, int(w * shrink))
        top, left = (h - ch) // 2, (w - cw) // 2
        grey = grey[top:top + ch, left:left + cw]
    grey = grey.astype(np.float32)
    energy = float(np.square(cv2.Laplacian(grey, cv2.CV_32F)).mean())
    if energy < 1e-6:
        return 1.0
    again = cv2.Laplacian(cv2.GaussianBlur(grey, (0, 0), 1.0), cv2.CV_32F)
    return float(np.square(again).mean()) / energy
