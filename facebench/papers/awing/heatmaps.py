"""Heatmap targets and decoding for heatmap-regression landmark models (Adaptive Wing, ICCV 2019).

Coordinates: every point here is (x, y) with 0-based pixel CENTRES, like the rest of facebench
(``RawFace``, CNN-6). A heatmap with stride s = input_size / heatmap_size (4: 256 -> 64) covers
input pixels [s*i, s*i + s) with its pixel i, so the two grids relate by

    x_input = (x_heat + 0.5) * s - 0.5        x_heat = (x_input + 0.5) / s - 0.5

(input pixel centre 1.5 sits at the centre 0 of heatmap pixel 0, for s = 4).

What the authors' released code does (protossw512/AdaptiveWingLoss, read for this module; the
paper's text was not reachable here), and where we differ:

* Landmark heatmaps: ``draw_gaussian(heatmap, landmarks / 4 + 1, sigma=1)`` pastes a 7x7 kernel
  (6*sigma + 1) from the FAN code, whose ``_gaussian(size)`` uses its own default width
  0.25 * size, i.e. a standard deviation of 1.75 heatmap pixels, peak 1, centred on the
  landmark's floored integer pixel (no sub-pixel centre), values clipped at 1. We render the
  Gaussian at the exact sub-pixel position with an explicit ``sigma`` (default 1.0 heatmap
  pixel, the value the code passes); pass ``sigma=1.75`` to match the code's effective width.
* Boundary heatmap: the code fits splines through each curve's (floored) points, rasterises them
  with matplotlib, takes OpenCV's distance transform d and sets exp(-d^2 / 2 sigma^2) for d < 3 sigma
  (sigma = 1), else 0, all curves in ONE channel. We use the piecewise-linear curve through the
  exact points and the exact Euclidean distance from each pixel centre to it (the continuous
  distance transform, no rasterisation), with the same Gaussian, truncation and single channel.
* Decoding (``get_preds_fromhm``): argmax, then a quarter-pixel shift towards the higher
  neighbour on each axis, sign(h[x+1] - h[x-1]) * 0.25, only where the max is off the border on
  both axes; then x 4 to input pixels. ``decode_heatmaps(refine="quarter")`` is that, except that
  we refine each axis on its own wherever that axis has both neighbours. ``refine="parabola"`` is our
  addition: a 3-point parabola fit on log h, exact for an untruncated Gaussian.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from facebench.data.landmark_layouts import AFLW19_N_POINTS, W300_CURVES, W300_N_POINTS

# Curve groups for the boundary heatmap: name -> point indices of an OPEN polyline (a closed
# curve repeats its first index). 68 points: ``landmark_layouts.W300_CURVES`` -- jaw, both brows,
# nose bridge, nostrils, both eyes and both lips (eyes and lips closed, each split into upper and
# lower halves sharing the corners), the same pieces as the released code's 13 splines.
CURVES_68: dict[str, tuple[int, ...]] = dict(W300_CURVES)

# AFLW-19 (``landmark_layouts.AFLW19_NAMES``): brows, eyes (corner-centre-corner), nose and mouth
# come in triples; the chin is a single point. The layout has no contours, so our small set joins
# each triple into one open curve and leaves the chin out. The released code uses the brows, eyes
# and nose only (its right-brow slice 3:5 drops point 5, which we read as a slip); we add the
# mouth line (corner - centre - corner), which lies on the lips' meeting line.
CURVES_AFLW19: dict[str, tuple[int, ...]] = {
    "left_brow": (0, 1, 2),
    "right_brow": (3, 4, 5),
    "left_eye": (6, 7, 8),
    "right_eye": (9, 10, 11),
    "nose": (12, 13, 14),
    "mouth": (15, 16, 17),
}


def curves_for(num_landmarks: int) -> dict[str, tuple[int, ...]]:
    """The boundary curve groups of a landmark layout, by its number of points (68 or 19)."""
    if num_landmarks == W300_N_POINTS:
        return CURVES_68
    if num_landmarks == AFLW19_N_POINTS:
        return CURVES_AFLW19
    raise ValueError(f"no boundary curves defined for {num_landmarks} landmarks (known: 68, 19)")


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1:
        raise ValueError(f"heatmap size must be positive, got {size!r}")
    return int(h), int(w)


def _points(points: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, bool]:
    """(L, 2) or (N, L, 2) points as a float tensor of shape (N, L, 2), and whether a batch came in."""
    pts = torch.as_tensor(points)
    if not pts.is_floating_point():
        pts = pts.float()
    batched = pts.dim() == 3
    if pts.dim() == 2:
        pts = pts.unsqueeze(0)
    if pts.dim() != 3 or pts.shape[-1] != 2:
        raise ValueError(f"expected (L, 2) or (N, L, 2) points, got shape {tuple(pts.shape)}")
    return pts, batched


def _visible(visible: torch.Tensor | np.ndarray | None, pts: torch.Tensor) -> torch.Tensor:
    if visible is None:
        return torch.ones(pts.shape[:2], dtype=torch.bool, device=pts.device)
    vis = torch.as_tensor(visible, device=pts.device).bool()
    if vis.dim() == 1:
        vis = vis.unsqueeze(0)
    if vis.shape != pts.shape[:2]:
        raise ValueError(f"visible {tuple(vis.shape)} does not match points {tuple(pts.shape[:2])}")
    return vis


def input_to_heatmap(coords: torch.Tensor | np.ndarray, stride: float = 4.0):
    """Input pixels -> heatmap pixels, both with 0-based pixel centres: (x + 0.5) / s - 0.5."""
    return (coords + 0.5) / stride - 0.5


def heatmap_to_input(coords: torch.Tensor | np.ndarray, stride: float = 4.0):
    """Heatmap pixels -> input pixels, both with 0-based pixel centres: (x + 0.5) * s - 0.5."""
    return (coords + 0.5) * stride - 0.5


def render_gaussian_heatmaps(points: torch.Tensor | np.ndarray, size: int | tuple[int, int] = 64,
                             sigma: float = 1.0, visible: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """One Gaussian per landmark, exp(-((u - x)^2 + (v - y)^2) / (2 sigma^2)), peak 1 at the point.

    ``points`` are in HEATMAP pixels (use ``input_to_heatmap`` first), shape (L, 2) or (N, L, 2);
    returns (N, L, H, W) (N = 1 for unbatched input). The Gaussian is centred at the exact
    sub-pixel position and not truncated; an invisible landmark gets an all-zero map, as in
    the stacked-hourglass convention.
    """
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    h, w = _size(size)
    pts, _ = _points(points)
    vis = _visible(visible, pts)
    u = torch.arange(w, dtype=pts.dtype, device=pts.device)
    v = torch.arange(h, dtype=pts.dtype, device=pts.device)
    # Separable: exp(-(dx^2 + dy^2)/2s^2) = exp(-dx^2/2s^2) * exp(-dy^2/2s^2).
    gx = torch.exp(-((u - pts[..., 0:1]) ** 2) / (2 * sigma**2))  # (N, L, W)
    gy = torch.exp(-((v - pts[..., 1:2]) ** 2) / (2 * sigma**2))  # (N, L, H)
    maps = gy.unsqueeze(-1) * gx.unsqueeze(-2)
    return maps * vis[..., None, None].to(maps.dtype)


def _segment_distance(px: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance from pixel centres px (P, 2) to segments a-b (N, S, 2) -> (N, P, S)."""
    ab = b - a                                               # (N, S, 2)
    ap = px[None, :, None, :] - a[:, None, :, :]             # (N, P, S, 2)
    denom = (ab * ab).sum(-1).clamp_min(1e-12)[:, None, :]   # (N, 1, S)
    t = ((ap * ab[:, None]).sum(-1) / denom).clamp(0.0, 1.0)  # (N, P, S)
    return (ap - t[..., None] * ab[:, None]).norm(dim=-1)


@functools.lru_cache(maxsize=32)
def _segment_ends(chains: tuple[tuple[int, ...], ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end landmark indices of every curve segment, made once per device (no copy per batch)."""
    starts = [i for chain in chains for i in chain[:-1]]
    ends = [i for chain in chains for i in chain[1:]]
    return torch.tensor(starts, device=device), torch.tensor(ends, device=device)


def render_boundary_heatmap(points: torch.Tensor | np.ndarray,
                            curves: dict[str, tuple[int, ...]] | None = None,
                            size: int | tuple[int, int] = 64, sigma: float = 1.0,
                            visible: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """All facial curves in one channel: exp(-d^2 / (2 sigma^2)) if d < 3 sigma else 0, where d is the
    distance from a pixel centre to the nearest curve (the paper's boundary map).

    ``points`` in heatmap pixels, (L, 2) or (N, L, 2); ``curves`` (name -> indices of an open
    polyline) defaults to ``curves_for(L)``.
    A segment with an invisible end point is left out. Returns (N, 1, H, W).
    """
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    h, w = _size(size)
    pts, _ = _points(points)
    vis = _visible(visible, pts)
    n, num_landmarks, _ = pts.shape
    curves = curves_for(num_landmarks) if curves is None else curves
    for name, chain in curves.items():
        if max(chain) >= num_landmarks or min(chain) < 0:
            raise ValueError(f"curve {name!r} {tuple(chain)} indexes outside the {num_landmarks} landmarks")
    if not any(len(chain) > 1 for chain in curves.values()):
        return pts.new_zeros((n, 1, h, w))
    s_idx, e_idx = _segment_ends(tuple(tuple(c) for c in curves.values()), pts.device)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=pts.dtype, device=pts.device),
                            torch.arange(w, dtype=pts.dtype, device=pts.device), indexing="ij")
    centres = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)
    # All faces at once, no host round trip: a left-out segment is infinitely far away.
    keep = vis[:, s_idx] & vis[:, e_idx]                                              # (N, S)
    d = _segment_distance(centres, pts[:, s_idx], pts[:, e_idx])                      # (N, P, S)
    d = torch.where(keep[:, None, :], d, torch.full_like(d, float("inf"))).amin(dim=2)  # (N, P)
    g = torch.where(d < 3 * sigma, torch.exp(-(d * d) / (2 * sigma**2)), torch.zeros_like(d))
    return g.view(n, 1, h, w)


def decode_heatmaps(heatmaps: torch.Tensor, refine: str = "quarter") -> torch.Tensor:
    """(N, L, H, W) heatmaps -> (N, L, 2) points (x, y) in heatmap pixels, 0-based centres.

    ``refine``: "none" (integer argmax), "quarter" (the released code: move 0.25 px towards the
    higher neighbour per axis, where both neighbours exist; error up to 0.25 px per axis) or
    "parabola" (fit a parabola to log h at the max and its two neighbours per axis and take its
    vertex, clamped to +-0.5 px; exact for a clean Gaussian, falls back to "quarter" where the
    log values are not a strict maximum, e.g. non-positive network outputs).
    Use ``heatmap_to_input`` to go to input pixels.
    """
    if heatmaps.dim() != 4:
        raise ValueError(f"expected (N, L, H, W) heatmaps, got shape {tuple(heatmaps.shape)}")
    if refine not in ("none", "quarter", "parabola"):
        raise ValueError(f"refine must be 'none', 'quarter' or 'parabola', got {refine!r}")
    n, num_landmarks, h, w = heatmaps.shape
    hm = heatmaps.detach().float().reshape(n * num_landmarks, h, w)
    idx = hm.reshape(n * num_landmarks, -1).argmax(dim=1)
    iy, ix = idx // w, idx % w
    coords = torch.stack([ix, iy], dim=-1).float()
    if refine == "none":
        return coords.view(n, num_landmarks, 2)
    rows = torch.arange(n * num_landmarks, device=hm.device)
    for axis, (i, size) in enumerate(((ix, w), (iy, h))):
        inside = (i > 0) & (i < size - 1)
        lo_i, hi_i = (i - 1).clamp(min=0), (i + 1).clamp(max=size - 1)
        if axis == 0:
            lo, mid, hi = hm[rows, iy, lo_i], hm[rows, iy, ix], hm[rows, iy, hi_i]
        else:
            lo, mid, hi = hm[rows, lo_i, ix], hm[rows, iy, ix], hm[rows, hi_i, ix]
        shift = 0.25 * torch.sign(hi - lo)
        if refine == "parabola":
            tiny = torch.finfo(hm.dtype).tiny
            ok = (lo > 0) & (mid > 0) & (hi > 0)
            l_lo, l_mid, l_hi = (t.clamp_min(tiny).log() for t in (lo, mid, hi))
            curv = l_lo - 2 * l_mid + l_hi
            ok = ok & (curv < 0)
            vertex = (0.5 * (l_lo - l_hi) / torch.where(ok, curv, torch.ones_like(curv))).clamp(-0.5, 0.5)
            shift = torch.where(ok, vertex, shift)
        coords[:, axis] += torch.where(inside, shift, torch.zeros_like(shift))
    return coords.view(n, num_landmarks, 2)
