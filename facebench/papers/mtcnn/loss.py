"""MTCNN's multi-task loss (Zhang et al., SPL 2016, Sec. II-B and II-C).

Every training crop is one of four kinds, and each kind trains only its tasks:
- negative (IoU < 0.3 with every face) and positive (IoU > 0.65): face classification, cross-entropy;
- positive and part face (0.4 < IoU < 0.65): box regression, Euclidean loss on the four offsets;
- landmark face: landmark localisation, Euclidean loss on the ten coordinates.

The total is ``det * L_det + box * L_box + landmark * L_landmark`` with the paper's task weights
(P-Net and R-Net 1 / 0.5 / 0.5, O-Net 1 / 0.5 / 1). Online hard sample mining: per mini-batch, only
the largest 70% of the classification losses count (the paper's "top 70%"); the easy 30% give no
gradient. A kind missing from a batch adds nothing (its mean would be 0/0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from facebench.loss_specs import MTCNN_LOSSES, check_param

NEGATIVE, POSITIVE, PART, LANDMARK = 0, 1, 2, 3  # the ``kind`` column of the training crops
KIND_NAMES = ("negative", "positive", "part", "landmark")
TASK_WEIGHTS = {"pnet": (1.0, 0.5, 0.5), "rnet": (1.0, 0.5, 0.5), "onet": (1.0, 0.5, 1.0)}  # det, box, landmark


def hard_mean(losses: torch.Tensor, keep: float) -> torch.Tensor:
    """Mean of the ``ceil(keep * n)`` largest values (online hard sample mining); 0 for no values."""
    n = losses.numel()
    if n == 0:
        return losses.sum()
    k = max(1, math.ceil(keep * n))
    return torch.topk(losses, k, sorted=False).values.mean()


class MTCNNLoss(nn.Module):
    def __init__(self, det: float = 1.0, box: float = 0.5, landmark: float = 0.5, hard_ratio: float = 0.7):
        super().__init__()
        check_param("mtcnn", MTCNN_LOSSES["mtcnn"], "hard_ratio", hard_ratio)
        self.det, self.box, self.landmark, self.hard_ratio = det, box, landmark, hard_ratio

    def parts(self, cls_logits: torch.Tensor, box_pred: torch.Tensor, landmark_pred: torch.Tensor | None,
              kind: torch.Tensor, box_target: torch.Tensor, landmark_target: torch.Tensor
              ) -> dict[str, torch.Tensor]:
        """The three task losses, unweighted: (N, 2) logits, (N, 4) offsets, (N, 10) landmarks or None."""
        kind = kind.long()
        labelled = (kind == NEGATIVE) | (kind == POSITIVE)
        ce = F.cross_entropy(cls_logits[labelled].float(), (kind[labelled] == POSITIVE).long(), reduction="none")
        boxed = (kind == POSITIVE) | (kind == PART)
        box = ((box_pred[boxed].float() - box_target[boxed]) ** 2).sum(1)
        out = {"det": hard_mean(ce, self.hard_ratio), "box": box.mean() if box.numel() else box.sum()}
        if landmark_pred is not None:
            marked = kind == LANDMARK
            lm = ((landmark_pred[marked].float() - landmark_target[marked]) ** 2).sum(1)
            out["landmark"] = lm.mean() if lm.numel() else lm.sum()
        return out

    def forward(self, cls_logits: torch.Tensor, box_pred: torch.Tensor, landmark_pred: torch.Tensor | None,
                kind: torch.Tensor, box_target: torch.Tensor, landmark_target: torch.Tensor) -> torch.Tensor:
        p = self.parts(cls_logits, box_pred, landmark_pred, kind, box_target, landmark_target)
        total = self.det * p["det"] + self.box * p["box"]
        return total + self.landmark * p["landmark"] if "landmark" in p else total


def make_mtcnn_loss(stage: str, hard_ratio: float = 0.7) -> MTCNNLoss:
    """The loss of one cascade stage with the paper's task weights."""
    if stage not in TASK_WEIGHTS:
        raise ValueError(f"unknown MTCNN stage {stage!r}; expected one of {sorted(TASK_WEIGHTS)}")
    det, box, landmark = TASK_WEIGHTS[stage]
    return MTCNNLoss(det, box, landmark, hard_ratio)
