"""A constant-velocity Kalman filter over face boxes, vectorised over tracks.

State per track: ``(cx, cy, w, h, vcx, vcy, vw, vh)``, the box's centre and size and their
velocities per frame; the measurement is the box ``(cx, cy, w, h)``. Every function takes the
states of many tracks at once (``mean [N, 8]``, ``cov [N, 8, 8]``), so the tracker predicts all
its tracks in one call and corrects the matched ones in another.

The noise follows ByteTrack's and BoT-SORT's xywh filter: standard deviations proportional to
the box's own width (x terms) and height (y terms), ``std_position`` (1/20) for positions and
sizes, ``std_velocity`` (1/160) for velocities. A face's jitter in pixels grows with its size, so
one set of weights serves small faces far away and large ones close up.

Boxes enter and leave as ``x0, y0, x1, y1`` (the tracker's format); the filter works in
``cx, cy, w, h`` because there the motion is linear.
"""

from __future__ import annotations

import numpy as np

STD_POSITION = 1.0 / 20.0
STD_VELOCITY = 1.0 / 160.0

_DIM = 4  # measured quantities: cx, cy, w, h

#: transition: each quantity moves by its velocity per frame
_F = np.eye(2 * _DIM)
_F[:_DIM, _DIM:] = np.eye(_DIM)
#: measurement: the filter observes the box, not its velocity
_H = np.eye(_DIM, 2 * _DIM)


def to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` x0, y0, x1, y1 -> cx, cy, w, h (float64)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    size = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([boxes[:, :2] + size / 2.0, size], axis=1)


def to_xyxy(cxcywh: np.ndarray) -> np.ndarray:
    """``[N, >=4]`` cx, cy, w, h (a state's first four columns) -> x0, y0, x1, y1."""
    centre, size = cxcywh[:, :2], cxcywh[:, 2:4]
    return np.concatenate([centre - size / 2.0, centre + size / 2.0], axis=1)


def _diag(std: np.ndarray) -> np.ndarray:
    """``[N, K]`` standard deviations -> ``[N, K, K]`` diagonal covariances."""
    n, k = std.shape
    out = np.zeros((n, k, k))
    out[:, np.arange(k), np.arange(k)] = std**2
    return out


def _scaled(mean: np.ndarray, weight: float) -> np.ndarray:
    """``[N, 4]`` deviations ``weight`` x (w, h, w, h): x-like terms by width, y-like by height."""
    w, h = np.abs(mean[:, 2]), np.abs(mean[:, 3])
    return weight * np.stack([w, h, w, h], axis=1)


class BoxKalman:
    """The filter's constants; its state lives with the caller (one row per track)."""

    def __init__(self, std_position: float = STD_POSITION,
                 std_velocity: float = STD_VELOCITY) -> None:
        if std_position <= 0 or std_velocity <= 0:
            raise ValueError(f"BoxKalman: expected std_position > 0 and std_velocity > 0, got "
                             f"{std_position}, {std_velocity}")
        self.std_position = std_position
        self.std_velocity = std_velocity

    def initiate(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New states from ``[N, 4]`` x0, y0, x1, y1 boxes: at rest, velocities uncertain."""
        z = to_cxcywh(boxes)
        mean = np.concatenate([z, np.zeros_like(z)], axis=1)
        # A first sighting says little about the motion: a wide velocity prior lets the first
        # few matches set it (the weights are ByteTrack's).
        std = np.concatenate([_scaled(mean, 2 * self.std_position),
                              _scaled(mean, 10 * self.std_velocity)], axis=1)
        return mean, _diag(std)

    def predict(self, mean: np.ndarray, cov: np.ndarray,
                steps: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The states ``steps`` frames on (new arrays); process noise added at every step."""
        for _ in range(steps):
            std = np.concatenate([_scaled(mean, self.std_position),
                                  _scaled(mean, self.std_velocity)], axis=1)
            mean = mean @ _F.T
            cov = _F @ cov @ _F.T + _diag(std)
        return mean, cov

    @staticmethod
    def warp(mean: np.ndarray, cov: np.ndarray,
             affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The states moved into the next frame's pixels when the camera moved: ``affine``
        (2x3, similarity: rotation and zoom R, shift t) maps the previous frame's pixels to
        this one's. Centres become R c + t and their velocities R v; sizes and their velocities
        scale by the zoom (a box stays upright)."""
        rotation, shift = affine[:, :2], affine[:, 2]
        zoom = float(np.sqrt(abs(np.linalg.det(rotation))))
        m = np.zeros((8, 8))
        m[0:2, 0:2] = m[4:6, 4:6] = rotation
        m[2:4, 2:4] = m[6:8, 6:8] = zoom * np.eye(2)
        mean = mean @ m.T
        mean[:, :2] += shift
        return mean, m @ cov @ m.T

    def update(self, mean: np.ndarray, cov: np.ndarray,
               boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The states corrected by one measured box each (``[N, 4]`` x0, y0, x1, y1)."""
        if len(mean) == 0:
            return mean, cov
        innovation = to_cxcywh(boxes) - mean @ _H.T
        projected = _H @ cov @ _H.T + _diag(_scaled(mean, self.std_position))
        # gain = cov H^T S^-1; S and cov are symmetric, so solve S X = H cov and transpose
        # (stabler than inverting S).
        gain = np.linalg.solve(projected, _H @ cov).transpose(0, 2, 1)
        mean = mean + (gain @ innovation[:, :, None])[:, :, 0]
        cov = cov - gain @ projected @ gain.transpose(0, 2, 1)
        return mean, cov
