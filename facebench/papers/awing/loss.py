"""Per-pixel heatmap-regression losses of the Adaptive Wing paper (Wang, Bo, Fuxin, ICCV 2019).

Every loss takes ``pred`` and ``target`` heatmaps of the same shape (N, C, H, W), values of the
target in [0, 1], and returns the MEAN of the per-pixel loss over every element (batch, channel,
pixel). Unlike the coordinate losses in ``landmark.py`` (per-sample sum), a per-pixel mean keeps
the magnitude independent of the heatmap size and of the number of landmarks.

Weighted loss map (the paper's "Weighted Loss Map"): M is the ground-truth heatmap, grey-dilated with a
3x3 window and binarised at 0.2; the per-pixel loss is multiplied by (W * M + 1), W = 10, so the
foreground and the hard background pixels next to it count 11x. ``weight_map`` returns the W * M
part (W where M is on, 0 elsewhere); the losses apply ``loss * (weight_map + 1)``.

Verified against the authors' released code (protossw512/AdaptiveWingLoss, utils/utils.py
``generate_weight_map``): ``scipy.ndimage.grey_dilation(heatmap, size=(3, 3))`` then ``> 0.2``,
computed per channel, the boundary channel included. We use the same strict ``>``; a 3x3
``max_pool2d`` with stride 1 and padding 1 is exactly that grey dilation (max_pool pads with
-inf, and scipy's default 'reflect' border only repeats pixels already inside the window).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from facebench.loss_specs import HEATMAP_LOSSES, WEIGHT_MAP_PARAMS, check_param

HEATMAP_LOSS_NAMES = tuple(HEATMAP_LOSSES)  # ("mse", "l1", "wing", "awing")
WEIGHT_THRESHOLD = 0.2
WEIGHT_W = 10.0


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    if pred.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) heatmaps, got shape {tuple(pred.shape)}")


def weight_map(target: torch.Tensor, threshold: float = WEIGHT_THRESHOLD, W: float = WEIGHT_W) -> torch.Tensor:
    """W * M with M = [grey_dilation_3x3(target) > threshold] (weighted loss map; released code's strict >).

    Returns a tensor shaped like ``target`` holding W where the dilated, thresholded ground truth
    is on and 0 elsewhere; the loss weight is this plus 1. No gradient flows through it.
    """
    if target.dim() != 4:
        raise ValueError(f"weight_map expects (N, C, H, W) heatmaps, got shape {tuple(target.shape)}")
    with torch.no_grad():
        dilated = F.max_pool2d(target, kernel_size=3, stride=1, padding=1)
        return (dilated > threshold).to(target.dtype) * W


def _reduce(per_pixel: torch.Tensor, target: torch.Tensor, weighted: bool, threshold: float, W: float) -> torch.Tensor:
    if weighted:
        per_pixel = per_pixel * (weight_map(target, threshold, W) + 1.0)
    return per_pixel.mean()


def mse_pixelwise(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(y_hat - y)^2 per pixel: the usual heatmap-regression loss the paper argues against."""
    return (pred - target) ** 2


def l1_pixelwise(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|y_hat - y| per pixel."""
    return (pred - target).abs()


def wing_pixelwise(pred: torch.Tensor, target: torch.Tensor, w: float = 10.0, eps: float = 2.0) -> torch.Tensor:
    """Wing (Feng et al. 2018, Eq. 5) per pixel: w ln(1 + |x|/eps) if |x| < w else |x| - C.

    On heatmaps |x| <= 1 (both in [0, 1]), so with the coordinate defaults w=10, eps=2 only the
    log branch is ever used; the AWing paper uses exactly this to show why Wing does not
    suit heatmaps: its gradient is largest at x -> 0, so it never settles on background pixels.
    """
    _check_positive("wing", w=w, eps=eps)
    x = (pred - target).abs()
    c = w - w * math.log1p(w / eps)
    return torch.where(x < w, w * torch.log1p(x / eps), x - c)


def awing_pixelwise(pred: torch.Tensor, target: torch.Tensor, alpha: float = 2.1, omega: float = 14.0,
                    epsilon: float = 1.0, theta: float = 0.5) -> torch.Tensor:
    """Adaptive Wing per pixel (the paper's AWing definition), with p = alpha - y the per-pixel exponent:

        AWing(y, y_hat) = omega ln(1 + |(y - y_hat)/epsilon|^p)   if |y - y_hat| < theta
                          A |y - y_hat| - C                        otherwise
        A = omega (1 / (1 + (theta/epsilon)^p)) p (theta/epsilon)^(p - 1) (1 / epsilon)
        C = theta A - omega ln(1 + (theta/epsilon)^p)

    A and C make the two pieces meet with equal value and slope at |x| = theta. Because
    alpha > 2 >= 1 + y, p > 1 and the gradient tends to 0 at x -> 0 on background pixels
    (y ~ 0, like MSE) while staying large near foreground pixels (y ~ 1, p ~ 1.1, like Wing).
    """
    _check_positive("awing", alpha=alpha, omega=omega, epsilon=epsilon, theta=theta)
    x = (target - pred).abs()
    p = alpha - target
    ratio = theta / epsilon
    ratio_p = torch.pow(ratio, p)
    a = omega * (1.0 / (1.0 + ratio_p)) * p * torch.pow(ratio, p - 1.0) / epsilon
    c = theta * a - omega * torch.log1p(ratio_p)
    # Clamp the log branch's argument to its own domain, so its (discarded) value stays finite
    # where the linear branch is taken and torch.where's backward sees no inf * 0.
    small = torch.clamp(x, max=theta)
    log_branch = omega * torch.log1p(torch.pow(small / epsilon, p))
    return torch.where(x < theta, log_branch, a * x - c)


def _check_positive(loss: str, **values: float) -> None:
    """The ranges of loss_specs.py (which params.yaml's checks share): every parameter here is > 0."""
    for key, v in values.items():
        check_param(loss, HEATMAP_LOSSES[loss], key, v)


def mse_loss(pred: torch.Tensor, target: torch.Tensor, weighted: bool = False,
             threshold: float = WEIGHT_THRESHOLD, W: float = WEIGHT_W) -> torch.Tensor:
    _check(pred, target)
    return _reduce(mse_pixelwise(pred, target), target, weighted, threshold, W)


def l1_loss(pred: torch.Tensor, target: torch.Tensor, weighted: bool = False,
            threshold: float = WEIGHT_THRESHOLD, W: float = WEIGHT_W) -> torch.Tensor:
    _check(pred, target)
    return _reduce(l1_pixelwise(pred, target), target, weighted, threshold, W)


def wing_loss(pred: torch.Tensor, target: torch.Tensor, w: float = 10.0, eps: float = 2.0, weighted: bool = False,
              threshold: float = WEIGHT_THRESHOLD, W: float = WEIGHT_W) -> torch.Tensor:
    _check(pred, target)
    return _reduce(wing_pixelwise(pred, target, w, eps), target, weighted, threshold, W)


def awing_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = 2.1, omega: float = 14.0,
               epsilon: float = 1.0, theta: float = 0.5, weighted: bool = False,
               threshold: float = WEIGHT_THRESHOLD, W: float = WEIGHT_W) -> torch.Tensor:
    _check(pred, target)
    per_pixel = awing_pixelwise(pred, target, alpha, omega, epsilon, theta)
    return _reduce(per_pixel, target, weighted, threshold, W)


# Parameters each loss accepts (beyond pred/target), with the papers' defaults; the names and
# ranges are loss_specs.py's HEATMAP_LOSSES (a test keeps the two key sets equal).
_LOSS_PARAMS: dict[str, dict[str, float]] = {
    "mse": {},
    "l1": {},
    "wing": {"w": 10.0, "eps": 2.0},
    "awing": {"alpha": 2.1, "omega": 14.0, "epsilon": 1.0, "theta": 0.5},
}
_WEIGHT_PARAMS = {"threshold": WEIGHT_THRESHOLD, "W": WEIGHT_W}


class HeatmapLoss(nn.Module):
    """One per-pixel loss, optionally weighted by (W * M + 1), mean over every element."""

    def __init__(self, name: str, use_weight_map: bool = False, threshold: float = WEIGHT_THRESHOLD,
                 W: float = WEIGHT_W, **params: float):
        super().__init__()
        if name not in _LOSS_PARAMS:
            raise ValueError(f"unknown heatmap loss {name!r}; valid names: {', '.join(HEATMAP_LOSS_NAMES)}")
        unknown = set(params) - set(_LOSS_PARAMS[name])
        if unknown:
            allowed = sorted(_LOSS_PARAMS[name]) or "none"
            raise ValueError(f"heatmap loss {name!r} got unknown parameter(s) {sorted(unknown)}; it takes {allowed}")
        check_param("weight map", WEIGHT_MAP_PARAMS, "threshold", threshold)
        check_param("weight map", WEIGHT_MAP_PARAMS, "W", W)
        self.name = name
        self.use_weight_map = bool(use_weight_map)
        self.threshold, self.W = float(threshold), float(W)
        self.params = {**_LOSS_PARAMS[name], **{k: float(v) for k, v in params.items()}}
        if self.params:
            _check_positive(name, **self.params)

    def pixelwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.name == "mse":
            return mse_pixelwise(pred, target)
        if self.name == "l1":
            return l1_pixelwise(pred, target)
        if self.name == "wing":
            return wing_pixelwise(pred, target, **self.params)
        return awing_pixelwise(pred, target, **self.params)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check(pred, target)
        return _reduce(self.pixelwise(pred, target), target, self.use_weight_map, self.threshold, self.W)

    def extra_repr(self) -> str:
        parts = [self.name] + [f"{k}={v}" for k, v in self.params.items()]
        if self.use_weight_map:
            parts.append(f"weight_map(threshold={self.threshold}, W={self.W})")
        return ", ".join(parts)


def make_heatmap_loss(name: str, use_weight_map: bool = False, **params: float) -> HeatmapLoss:
    """Build a heatmap loss by name: "mse", "l1", "wing" (w, eps) or "awing" (alpha, omega, epsilon, theta).

    ``threshold`` and ``W`` configure the weighted loss map and are accepted only with
    ``use_weight_map=True``; any other unknown parameter is refused rather than ignored.
    """
    weight_params = {k: params.pop(k) for k in list(params) if k in _WEIGHT_PARAMS}
    if weight_params and not use_weight_map:
        raise ValueError(f"{sorted(weight_params)} configure the weight map; pass use_weight_map=True to use them")
    if name not in _LOSS_PARAMS:
        raise ValueError(f"unknown heatmap loss {name!r}; valid names: {', '.join(HEATMAP_LOSS_NAMES)}")
    return HeatmapLoss(name, use_weight_map, **weight_params, **params)


def stacked_loss(loss: nn.Module, preds: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Intermediate supervision: the same loss on every stack's output, summed (Newell et al. 2016)."""
    if not preds:
        raise ValueError("stacked_loss needs at least one stack output")
    return sum((loss(p, target) for p in preds), start=torch.zeros((), device=target.device, dtype=target.dtype))
