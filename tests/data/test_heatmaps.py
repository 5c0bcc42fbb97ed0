"""Heatmap targets: rendering, boundary maps, decoding back to sub-pixel points, input <-> heatmap pixels.

Decoding tolerances (measured on 1,000 random sub-pixel points, sigma 1 and 1.75, 64x64 maps):
  * "quarter" (the released code's 0.25 px shift): max error 0.25 heatmap px per axis (= 1 input
    px at stride 4), mean ~0.13; the bound is exact: a point at offset d in (-0.5, 0.5) decodes
    to +-0.25, so the error is |d -+ 0.25| <= 0.25.
  * "parabola" (log-parabola vertex): exact up to float32 rounding, measured < 1e-6; tested at 1e-4.
  * "none" (integer argmax): <= 0.5 per axis.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facebench.papers.awing.heatmaps import (
    CURVES_68, CURVES_AFLW19, curves_for, decode_heatmaps, heatmap_to_input, input_to_heatmap, render_boundary_heatmap,
    render_gaussian_heatmaps,
)

QUARTER_TOL = 0.25 + 1e-5
PARABOLA_TOL = 1e-4


def random_points(n: int, num_landmarks: int, seed: int, low: float = 3.0, high: float = 60.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(n, num_landmarks, 2, generator=g)


def test_gaussian_peak_and_width():
    hm = render_gaussian_heatmaps(torch.tensor([[10.0, 20.0]]), size=64, sigma=1.0)
    assert hm.shape == (1, 1, 64, 64)
    assert hm[0, 0, 20, 10].item() == pytest.approx(1.0)
    assert hm[0, 0, 20, 11].item() == pytest.approx(math.exp(-0.5), rel=1e-6)  # x + 1
    assert hm[0, 0, 22, 10].item() == pytest.approx(math.exp(-2.0), rel=1e-6)  # y + 2
    assert hm[0, 0].argmax().item() == 20 * 64 + 10


def test_gaussian_sub_pixel_and_visibility():
    pts = torch.tensor([[[10.3, 20.6], [5.0, 5.0]]])
    hm = render_gaussian_heatmaps(pts, size=(32, 48), sigma=1.5, visible=torch.tensor([[True, False]]))
    assert hm.shape == (1, 2, 32, 48)
    expected = math.exp(-((10 - 10.3) ** 2 + (21 - 20.6) ** 2) / (2 * 1.5**2))
    assert hm[0, 0, 21, 10].item() == pytest.approx(expected, rel=1e-6)
    assert hm[0, 1].abs().sum() == 0


@pytest.mark.parametrize("sigma", [1.0, 1.75])
def test_decode_recovers_sub_pixel_points(sigma):
    pts = random_points(200, 5, seed=0)
    hm = render_gaussian_heatmaps(pts, size=64, sigma=sigma)
    err_q = (decode_heatmaps(hm, "quarter") - pts).abs()
    err_p = (decode_heatmaps(hm, "parabola") - pts).abs()
    err_n = (decode_heatmaps(hm, "none") - pts).abs()
    assert err_q.max() <= QUARTER_TOL
    assert err_q.mean() < 0.15
    assert err_p.max() <= PARABOLA_TOL
    assert err_n.max() <= 0.5 + 1e-5


def test_quarter_shift_is_the_released_rule():
    """Argmax at (5, 5); right neighbour higher -> +0.25 in x; lower neighbour higher -> +0.25 in y."""
    hm = torch.zeros(1, 1, 11, 11)
    hm[0, 0, 5, 5] = 1.0
    hm[0, 0, 5, 6] = 0.5
    hm[0, 0, 5, 4] = 0.2
    hm[0, 0, 6, 5] = 0.3
    out = decode_heatmaps(hm, "quarter")
    assert out[0, 0].tolist() == [5.25, 5.25]
    # at the border the released code does not refine
    hm = torch.zeros(1, 1, 11, 11)
    hm[0, 0, 0, 10] = 1.0
    hm[0, 0, 0, 9] = 0.5
    assert decode_heatmaps(hm, "quarter")[0, 0].tolist() == [10.0, 0.0]


def test_parabola_falls_back_on_non_positive_values():
    hm = torch.zeros(1, 1, 7, 7)
    hm[0, 0, 3, 3] = 1.0
    hm[0, 0, 3, 4] = 0.5  # x: positive on one side only, zero on the other -> quarter rule
    out = decode_heatmaps(hm, "parabola")
    assert out[0, 0].tolist() == [3.25, 3.0]
    assert torch.isfinite(decode_heatmaps(torch.randn(2, 3, 8, 8), "parabola")).all()


def test_input_heatmap_mapping_round_trip_and_anchors():
    x = torch.tensor([-0.5, 0.0, 1.5, 127.5, 255.0, 255.5])
    h = input_to_heatmap(x, 4.0)
    # image edge maps to map edge; input centre 1.5 is the centre of heatmap pixel 0
    assert h.tolist() == pytest.approx([-0.5, -0.375, 0.0, 31.5, 63.375, 63.5])
    assert torch.allclose(heatmap_to_input(h, 4.0), x)
    arr = np.array([[3.2, 7.9]])
    np.testing.assert_allclose(input_to_heatmap(heatmap_to_input(arr, 4.0), 4.0), arr)


def test_end_to_end_in_input_pixels():
    """Input points -> heatmap -> decode -> input points: quarter error <= 0.25 * stride."""
    pts_in = random_points(50, 68, seed=1, low=12.0, high=243.0)
    hm = render_gaussian_heatmaps(input_to_heatmap(pts_in, 4.0), size=64, sigma=1.0)
    back = heatmap_to_input(decode_heatmaps(hm, "quarter"), 4.0)
    assert (back - pts_in).abs().max() <= 4 * QUARTER_TOL
    back = heatmap_to_input(decode_heatmaps(hm, "parabola"), 4.0)
    assert (back - pts_in).abs().max() <= 4 * PARABOLA_TOL


def test_boundary_on_a_segment_and_its_falloff():
    pts = torch.tensor([[10.0, 20.0], [30.0, 20.0], [50.0, 50.0]])
    curves = {"line": (0, 1)}
    b = render_boundary_heatmap(pts, curves, size=64, sigma=1.0)
    assert b.shape == (1, 1, 64, 64)
    assert b[0, 0, 20, 10:31].min().item() == pytest.approx(1.0)  # on the segment
    assert b[0, 0, 21, 20].item() == pytest.approx(math.exp(-0.5), rel=1e-6)  # 1 px away
    assert b[0, 0, 22, 20].item() == pytest.approx(math.exp(-2.0), rel=1e-6)  # 2 px away
    assert b[0, 0, 23, 20].item() == 0.0  # 3 sigma: truncated, as in the released code
    assert b[0, 0, 20, 33].item() == 0.0  # beyond the end point
    assert b[0, 0, 50, 50].item() == 0.0  # point 2 is on no curve


def test_boundary_closed_curve_and_visibility():
    square = torch.tensor([[10.0, 10.0], [20.0, 10.0], [20.0, 20.0], [10.0, 20.0]])
    b = render_boundary_heatmap(square, {"sq": (0, 1, 2, 3, 0)}, size=32)
    assert b[0, 0, 15, 10].item() == pytest.approx(1.0)  # closing edge 3 -> 0
    assert b[0, 0, 15, 15].item() == 0.0  # centre is 5 px from every edge
    b = render_boundary_heatmap(square, {"sq": (0, 1, 2, 3, 0)}, size=32,
                                visible=torch.tensor([True, True, True, False]))
    assert b[0, 0, 15, 10].item() == 0.0  # both edges at point 3 dropped
    assert b[0, 0, 10, 15].item() == pytest.approx(1.0)


def test_boundary_batch_and_default_curves():
    pts = random_points(3, 68, seed=2)
    b = render_boundary_heatmap(pts, size=64)
    assert b.shape == (3, 1, 64, 64)
    assert (b >= 0).all() and (b <= 1).all()
    # every landmark on a 68-point curve lies on the boundary
    for k in range(3):
        xi, yi = pts[k, 0].round().long().tolist()
        assert b[k, 0, yi, xi] > math.exp(-0.5)
    assert render_boundary_heatmap(random_points(2, 19, seed=3)).shape == (2, 1, 64, 64)


def test_curve_groups_cover_the_layouts():
    used = sorted({i for chain in CURVES_68.values() for i in chain})
    assert used == list(range(68))
    edges = {frozenset(e) for chain in CURVES_68.values() for e in zip(chain[:-1], chain[1:])}
    for first, last in ((36, 41), (42, 47), (48, 59), (60, 67)):  # eyes and lips are closed loops
        loop = list(range(first, last + 1)) + [first]
        assert {frozenset(e) for e in zip(loop[:-1], loop[1:])} <= edges
    assert frozenset((16, 17)) not in edges and frozenset((26, 27)) not in edges  # curves stay apart
    assert sorted({i for chain in CURVES_AFLW19.values() for i in chain}) == list(range(18))  # chin has none
    assert curves_for(68) is CURVES_68 and curves_for(19) is CURVES_AFLW19
    with pytest.raises(ValueError):
        curves_for(98)


def test_decode_rejects_bad_input():
    with pytest.raises(ValueError):
        decode_heatmaps(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError):
        decode_heatmaps(torch.zeros(1, 1, 8, 8), refine="dark")
