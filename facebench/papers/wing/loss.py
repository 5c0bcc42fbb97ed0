"""Coordinate-regression losses compared in the Wing loss paper (Feng et al., CVPR 2018, Sec. 4).

Every loss takes ``pred`` and ``target`` of shape (N, 2L), in pixels of the network input, and
returns a scalar: the per-sample SUM of the elementwise loss over the 2L coordinates, averaged
over the batch. That is the paper's per-sample form (Eq. 1: loss(s, s') = sum_i f(s_i - s'_i)),
kept identical for every loss so that their magnitudes are comparable.

Units matter: Wing's w=10 and eps=2 are pixels of a 64x64 input. On coordinates normalised to
[0, 1] every |x| is far below w and Wing degenerates to a scaled L1 (DESIGN.md, "Protocol traps").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from facebench.loss_specs import LANDMARK_LOSSES, check_param

LOSS_NAMES = tuple(LANDMARK_LOSSES)  # ("l2", "l1", "smooth_l1", "wing")


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    if pred.dim() != 2:
        raise ValueError(f"expected (N, 2L) coordinates, got shape {tuple(pred.shape)}")


def _reduce(per_coord: torch.Tensor) -> torch.Tensor:
    """Sum over coordinates (the paper's per-sample loss), mean over the batch."""
    return per_coord.sum(dim=1).mean()


def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L2(x) = x^2 / 2 (the paper's Sec. 4.1 definition, with the 1/2)."""
    _check(pred, target)
    return _reduce(0.5 * (pred - target) ** 2)


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1(x) = |x| (paper Sec. 4.1)."""
    _check(pred, target)
    return _reduce((pred - target).abs())


def smooth_l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """smooth_L1(x) = x^2 / 2 if |x| < 1 else |x| - 1/2 (paper Sec. 4.1; Fast R-CNN's form, beta = 1)."""
    _check(pred, target)
    x = (pred - target).abs()
    return _reduce(torch.where(x < 1.0, 0.5 * x**2, x - 0.5))


def _check_wing(w: float, eps: float) -> None:
    """w and eps are positive numbers of pixels (the rule lives in loss_specs.py, which params.yaml shares)."""
    check_param("wing", LANDMARK_LOSSES["wing"], "w", w)
    check_param("wing", LANDMARK_LOSSES["wing"], "eps", eps)


def wing_loss(pred: torch.Tensor, target: torch.Tensor, w: float = 10.0, eps: float = 2.0) -> torch.Tensor:
    """wing(x) = w ln(1 + |x|/eps) if |x| < w else |x| - C, with C = w - w ln(1 + w/eps) (paper Eq. 5).

    The log branch amplifies small and medium errors (gradient w / (eps + |x|) instead of L1's 1);
    C joins the two pieces continuously at |x| = w. Defaults are the paper's w=10, eps=2 (pixels).
    """
    _check(pred, target)
    _check_wing(w, eps)
    x = (pred - target).abs()
    c = w - w * math.log1p(w / eps)
    return _reduce(torch.where(x < w, w * torch.log1p(x / eps), x - c))


class L2Loss(nn.Module):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return l2_loss(pred, target)


class L1Loss(nn.Module):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return l1_loss(pred, target)


class SmoothL1Loss(nn.Module):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return smooth_l1_loss(pred, target)


class WingLoss(nn.Module):
    """Wing loss (paper Eq. 5) with w and eps in pixels of the network input."""

    def __init__(self, w: float = 10.0, eps: float = 2.0):
        super().__init__()
        w, eps = float(w), float(eps)
        _check_wing(w, eps)
        self.w, self.eps = w, eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return wing_loss(pred, target, self.w, self.eps)

    def extra_repr(self) -> str:
        return f"w={self.w}, eps={self.eps}"


def make_landmark_loss(name: str, **params: float) -> nn.Module:
    """Build a loss by its params.yaml name: one of "l2", "l1", "smooth_l1", "wing".

    Only Wing takes parameters (w, eps); anything else is refused rather than silently ignored.
    """
    if name == "wing":
        unknown = set(params) - set(LANDMARK_LOSSES["wing"])
        if unknown:
            raise ValueError(f"loss 'wing' takes only w and eps, got unknown parameter(s) {sorted(unknown)}")
        return WingLoss(**params)
    if name in ("l2", "l1", "smooth_l1"):
        if params:
            raise ValueError(f"loss {name!r} takes no parameters, got {sorted(params)}")
        if name == "l2":
            return L2Loss()
        if name == "l1":
            return L1Loss()
        return SmoothL1Loss()
    raise ValueError(f"unknown landmark loss {name!r}; valid names: {', '.join(LOSS_NAMES)}")
