"""Camera motion between consecutive frames of one source, so tracks can follow a camera that
pans, zooms or shakes (BoT-SORT's global motion compensation by sparse optical flow).

Corners of the previous frame (OpenCV ``goodFeaturesToTrack``) are followed into this one
(pyramidal Lucas-Kanade) and a similarity (shift, rotation, zoom) is fitted to them with RANSAC,
on grey frames shrunk to ``side`` pixels: a few milliseconds a frame. A fixed camera gives about
the identity; a cut to another scene, a dark frame or too few corners give None (unknown), and
the tracks are predicted without it.

A scene cut (``cut``): the motion cannot be told *and* the picture changed, its grey histogram
correlating under ``cut_correlation`` with the previous frame's (or the frame changed size).
Either alone is not enough: a dark or blank view also has too few corners, and light changes
or a passer-by change the histogram (on camera clips of scenes val and train, 0.12-0.99 between
frames of one shot, -0.43-0.68 across the 32 cuts, where the motion is unknown at every cut and
nowhere else).
"""

from __future__ import annotations

import numpy as np


class CameraMotion:
    """Estimates, frame after frame of one source, the motion since the previous frame.

    side: frames are shrunk to at most this many pixels a side first. min_points: the least
    number of corners that must agree (RANSAC inliers) to trust an estimate. cut_correlation:
    see the module docstring; ``cut`` tells whether the last frame estimated began a new scene.
    """

    def __init__(self, side: int = 480, min_points: int = 12,
                 cut_correlation: float = 0.8) -> None:
        self.side = side
        self.min_points = min_points
        self.cut_correlation = cut_correlation
        #: whether the frame last handed to estimate() is the first of a new scene
        self.cut = False
        self._previous: np.ndarray | None = None
        self._corners: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None
        self._histogram: np.ndarray | None = None

    def estimate(self, image: np.ndarray) -> np.ndarray | None:
        """The 2x3 affine from the previous frame's pixels to ``image``'s (full size), or None
        for the first frame, a frame of another size, or motion that cannot be told."""
        import cv2

        scale = min(1.0, self.side / max(image.shape[:2]))
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        previous, corners, histogram = self._previous, self._corners, self._histogram
        same_size = self._shape == image.shape
        self._previous, self._shape = grey, image.shape
        self._corners = cv2.goodFeaturesToTrack(grey, maxCorners=300, qualityLevel=0.01,
                                                minDistance=8, blockSize=3)
        self._histogram = cv2.calcHist([grey], [0], None, [32], [0, 256])
        affine = self._affine(previous, corners, grey, scale) if same_size else None
        self.cut = previous is not None and affine is None and (
            not same_size or cv2.compareHist(histogram, self._histogram, cv2.HISTCMP_CORREL)
            < self.cut_correlation)
        return affine

    def _affine(self, previous: np.ndarray | None, corners: np.ndarray | None, grey: np.ndarray,
                scale: float) -> np.ndarray | None:
        """The similarity from ``previous`` to ``grey`` (shrunk frames) in full-size pixels."""
        import cv2

        if previous is None or corners is None or len(corners) < self.min_points:
            return None
        moved, found, _ = cv2.calcOpticalFlowPyrLK(previous, grey, corners, None)
        found = found.ravel() == 1
        if found.sum() < self.min_points:
            return None
        affine, inliers = cv2.estimateAffinePartial2D(corners[found], moved[found],
                                                      method=cv2.RANSAC,
                                                      ransacReprojThreshold=2.0)
        if affine is None or inliers is None or int(inliers.sum()) < self.min_points:
            return None
        affine[:, 2] /= scale  # the shift in full-size pixels (rotation and zoom are unitless)
        return affine
