"""Camera motion between consecutive frames of one source, so tracks can follow a camera that
pans, zooms or shakes (BoT-SORT's global motion compensation by sparse optical flow).

Corners of the previous frame (OpenCV ``goodFeaturesToTrack``) are followed into this one
(pyramidal Lucas-Kanade) and a similarity (shift, rotation, zoom) is fitted to them with RANSAC,
on grey frames shrunk to ``side`` pixels: a few milliseconds a frame. A fixed camera gives about
the identity; a cut to another scene, a dark frame or too few corners give None (unknown), and
the tracks are predicted without it.
"""

from __future__ import annotations

import numpy as np


class CameraMotion:
    """Estimates, frame after frame of one source, the motion since the previous frame.

    side: frames are shrunk to at most this many pixels a side first. min_points: the least
    number of corners that must agree (RANSAC inliers) to trust an estimate.
    """

    def __init__(self, side: int = 480, min_points: int = 12) -> None:
        self.side = side
        self.min_points = min_points
        self._previous: np.ndarray | None = None
        self._corners: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None

    def estimate(self, image: np.ndarray) -> np.ndarray | None:
        """The 2x3 affine from the previous frame's pixels to ``image``'s (full size), or None
        for the first frame, a frame of another size, or motion that cannot be told."""
        import cv2

        scale = min(1.0, self.side / max(image.shape[:2]))
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        previous, corners = self._previous, self._corners
        same_size = self._shape == image.shape
        self._previous, self._shape = grey, image.shape
        self._corners = cv2.goodFeaturesToTrack(grey, maxCorners=300, qualityLevel=0.01,
                                                minDistance=8, blockSize=3)
        if previous is None or corners is None or not same_size or len(corners) < self.min_points:
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
