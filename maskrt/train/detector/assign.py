"""Which cells of YuNet's output learn which face: SimOTA, the assigner YuNet was trained with.

YuNet predicts at every cell of three strides (8, 16, 32); a cell's prior point is its top-left
corner (``col * stride``, ``row * stride``: :func:`maskrt.detect.yunet.decode` adds the offsets to
it). For each face, the candidate cells are those whose prior lies in the face box or within
``CENTRE_RADIUS`` strides of its centre; each face takes its ``k`` cheapest candidates, ``k`` the
sum of its 10 best IoUs (at least 1), the cost being the score's cross-entropy plus 3x -log(IoU)
of the cell's current prediction, and a large penalty unless the prior is in both the box and
the centre region. A cell claimed by two faces goes to the cheaper. (Ge et al., "YOLOX", 2021.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maskrt.detect.yunet import STRIDES

CENTRE_RADIUS = 2.5
TOP_IOUS = 10
_OUTSIDE = 1e5


@dataclass
class Priors:
    """points: [P, 2] prior points (input pixels); strides: [P] their stride; cells of all strides
    in YuNet's output order (stride 8 row-major, then 16, then 32)."""

    points: torch.Tensor
    strides: torch.Tensor

    @classmethod
    def of(cls, height: int, width: int) -> Priors:
        points, strides = [], []
        for stride in STRIDES:
            rows, cols = torch.meshgrid(torch.arange(height // stride), torch.arange(width // stride),
                                        indexing="ij")
            grid = torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=1).float() * stride
            points.append(grid)
            strides.append(torch.full((grid.shape[0],), float(stride)))
        return cls(torch.cat(points), torch.cat(strides))


@dataclass
class Assignment:
    """positive: bool [P]; face: long [P] (the face index of positive cells, else -1);
    ignore: bool [P] (cells in an ignore region, not positive)."""

    positive: torch.Tensor
    face: torch.Tensor
    ignore: torch.Tensor


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box of ``a`` [A, 4] with every box of ``b`` [B, 4] (x0, y0, x1, y1) -> [A, B]."""
    low = torch.maximum(a[:, None, :2], b[None, :, :2])
    high = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-6)


def _inside(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """[F, P]: whether each prior point lies inside each box."""
    x, y = points[None, :, 0], points[None, :, 1]
    return (x >= boxes[:, None, 0]) & (x < boxes[:, None, 2]) & (y >= boxes[:, None, 1]) & (y < boxes[:, None, 3])


@torch.no_grad()
def assign(priors: Priors, boxes: torch.Tensor, scores: torch.Tensor, faces: torch.Tensor,
           ignore: torch.Tensor) -> Assignment:
    """SimOTA for one image: ``boxes`` [P, 4] and ``scores`` [P] are the current predictions,
    ``faces`` [F, 4] the boxes to find, ``ignore`` [I, 4] regions to learn nothing in."""
    count = priors.points.shape[0]
    positive = torch.zeros(count, dtype=torch.bool)
    face = torch.full((count,), -1, dtype=torch.long)
    ignored = _inside(priors.points, ignore).any(dim=0) if len(ignore) else torch.zeros(count, dtype=torch.bool)
    if len(faces) == 0:
        return Assignment(positive, face, ignored)
    in_box = _inside(priors.points, faces)
    centre = (faces[:, :2] + faces[:, 2:]) / 2
    reach = CENTRE_RADIUS * priors.strides[None, :]
    in_centre = ((priors.points[None, :, 0] - centre[:, None, 0]).abs() < reach) & \
                ((priors.points[None, :, 1] - centre[:, None, 1]).abs() < reach)
    candidate = (in_box | in_centre).any(dim=0)
    cells = torch.nonzero(candidate).squeeze(1)
    if cells.numel() == 0:
        return Assignment(positive, face, ignored)
    iou = box_iou(faces, boxes[cells])
    score = scores[cells].clamp(1e-6, 1 - 1e-6)
    cost = -torch.log(score)[None, :] + 3.0 * -torch.log(iou + 1e-8)
    cost = cost + _OUTSIDE * ~(in_box[:, cells] & in_centre[:, cells])
    k = iou.topk(min(TOP_IOUS, cells.numel()), dim=1).values.sum(dim=1).int().clamp(min=1)
    matching = torch.zeros_like(cost, dtype=torch.bool)
    for f in range(len(faces)):
        matching[f, cost[f].topk(int(k[f]), largest=False).indices] = True
    claimed = matching.any(dim=0)
    owner = torch.where(matching, cost, torch.full_like(cost, float("inf"))).argmin(dim=0)
    positive[cells[claimed]] = True
    face[cells[claimed]] = owner[claimed]
    return Assignment(positive, face, ignored & ~positive)
