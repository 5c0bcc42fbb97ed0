"""Heatmap losses: AWing against hand-computed values, its C1 join at theta, the weighted loss map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from facebench.papers.awing.loss import (
    HeatmapLoss, awing_loss, awing_pixelwise, make_heatmap_loss, stacked_loss, weight_map, wing_pixelwise,
)

ALPHA, OMEGA, EPS, THETA = 2.1, 14.0, 1.0, 0.5


def awing_reference(y: float, y_hat: float) -> tuple[float, float]:
    """Paper Eq. 7 written out with math, and its derivative d/d y_hat, independent of the module."""
    p = ALPHA - y
    x = abs(y - y_hat)
    sign = math.copysign(1.0, y_hat - y)  # d|y - y_hat| / d y_hat
    if x < THETA:
        value = OMEGA * math.log(1 + (x / EPS) ** p)
        slope = OMEGA * p * (x / EPS) ** (p - 1) / EPS / (1 + (x / EPS) ** p)
    else:
        r = THETA / EPS
        a = OMEGA * (1 / (1 + r**p)) * p * r ** (p - 1) / EPS
        c = THETA * a - OMEGA * math.log(1 + r**p)
        value, slope = a * x - c, a
    return value, sign * slope


# (y, y_hat, loss, d loss / d y_hat), defaults alpha=2.1, omega=14, epsilon=1, theta=0.5. By hand:
#   y=0, err 0.1: 14 ln(1 + 0.1^2.1) = 14 ln(1.0079433) = 0.110767;
#                 slope 14 * 2.1 * 0.1^1.1 / 1.0079433 = 2.316921
#   y=0, err 0.8: p=2.1, A = 14 * 2.1 * 0.5^1.1 / (1 + 0.5^2.1) = 29.4 * 0.466516 / 1.233258 = 11.121422,
#                 C = 0.5 A - 14 ln(1.233258) = 2.625356, loss = 0.8 A - C = 6.271662
#   y=1, err 0.1: 14 ln(1 + 0.1^1.1) = 14 ln(1.0794328) = 1.070100;
#                 slope -14 * 1.1 * 0.1^0.1 / 1.0794328 = -11.332484 (y_hat below y)
#   y=1, err 0.8: p=1.1, A = 14 * 1.1 * 0.5^0.1 / (1 + 0.5^1.1) = 9.797850,
#                 C = 0.5 A - 14 ln(1.466516) = -0.461491, loss = 0.8 A - C = 8.299813
HAND = [
    (0.0, 0.1, 0.110767, 2.316921),
    (0.0, 0.8, 6.271662, 11.121422),
    (1.0, 0.9, 1.070100, -11.332484),
    (1.0, 0.2, 8.299813, -9.797850),
]


@pytest.mark.parametrize("y, y_hat, loss, grad", HAND)
def test_awing_value_and_gradient_match_hand_numbers(y, y_hat, loss, grad):
    pred = torch.tensor([y_hat], dtype=torch.float64, requires_grad=True)
    value = awing_pixelwise(pred, torch.tensor([y], dtype=torch.float64))
    value.backward()
    ref_value, ref_grad = awing_reference(y, y_hat)
    assert value.item() == pytest.approx(loss, abs=2e-6)
    assert pred.grad.item() == pytest.approx(grad, abs=2e-6)
    assert value.item() == pytest.approx(ref_value, rel=1e-12)
    assert pred.grad.item() == pytest.approx(ref_grad, rel=1e-12)


def test_awing_on_a_grid_matches_numpy_reference():
    y = torch.linspace(0, 1, 11, dtype=torch.float64).repeat_interleave(21)
    y_hat = torch.linspace(-0.2, 1.2, 21, dtype=torch.float64).repeat(11)
    pred = y_hat.clone().requires_grad_(True)
    out = awing_pixelwise(pred, y)
    out.sum().backward()
    ref = np.array([awing_reference(a, b) for a, b in zip(y.tolist(), y_hat.tolist())])
    np.testing.assert_allclose(out.detach().numpy(), ref[:, 0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pred.grad.numpy(), ref[:, 1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("y", [0.0, 0.3, 0.7, 1.0])
def test_awing_is_c1_at_theta(y):
    """Value and slope from the log side (theta - d) and the linear side (theta + d) agree."""
    d = 1e-9
    target = torch.tensor([y, y], dtype=torch.float64)
    pred = torch.tensor([y + THETA - d, y + THETA + d], dtype=torch.float64, requires_grad=True)
    out = awing_pixelwise(pred, target)
    out.sum().backward()
    left, right = out.tolist()
    g_left, g_right = pred.grad.tolist()
    assert abs(left - right) < 1e-6
    assert abs(g_left - g_right) < 1e-6
    # each side really comes from its own piece (log branch left, linear branch right)
    assert left == pytest.approx(awing_reference(y, y + THETA - d)[0], rel=1e-12)
    assert right == pytest.approx(awing_reference(y, y + THETA + d)[0], rel=1e-12)


def test_awing_zero_at_perfect_prediction_and_smooth_on_background():
    target = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    pred = target.clone().requires_grad_(True)
    out = awing_pixelwise(pred, target)
    out.sum().backward()
    assert torch.all(out == 0)
    assert torch.all(pred.grad == 0)  # p = alpha - y > 1, so the gradient vanishes at 0 error


def test_wing_pixelwise_formula():
    pred, target = torch.tensor([0.3, 12.0]), torch.tensor([0.0, 0.0])
    out = wing_pixelwise(pred, target, w=10.0, eps=2.0)
    c = 10 - 10 * math.log(1 + 10 / 2)
    assert out[0].item() == pytest.approx(10 * math.log(1 + 0.3 / 2), rel=1e-6)
    assert out[1].item() == pytest.approx(12 - c, rel=1e-6)


def hand_heatmap() -> torch.Tensor:
    """6x6: a peak 0.9 at (row 2, col 2), 0.25 at the corner (5, 0), exactly 0.2 at (0, 5), noise 0.1."""
    h = torch.zeros(1, 1, 6, 6)
    h[0, 0, 2, 2] = 0.9
    h[0, 0, 5, 0] = 0.25
    h[0, 0, 0, 5] = 0.2  # not above the threshold: the released code's test is dilate > 0.2
    h[0, 0, 4, 4] = 0.1
    return h


def hand_mask() -> torch.Tensor:
    m = torch.zeros(1, 1, 6, 6)
    m[0, 0, 1:4, 1:4] = 1  # 3x3 around the peak
    m[0, 0, 4:6, 0:2] = 1  # 3x3 around the corner pixel, clipped by the border
    return m


def test_weight_map_is_W_exactly_on_the_dilated_thresholded_heatmap():
    h = hand_heatmap()
    wm = weight_map(h)
    assert torch.equal(wm, 10.0 * hand_mask())
    assert set(wm.unique().tolist()) == {0.0, 10.0}
    # Independent check: the released code's scipy grey dilation, then > 0.2.
    ref = (ndimage.grey_dilation(h[0, 0].numpy(), size=(3, 3)) > 0.2).astype(np.float32) * 10
    np.testing.assert_array_equal(wm[0, 0].numpy(), ref)


def test_weighted_loss_multiplies_by_W_plus_1_on_the_mask():
    target = hand_heatmap()
    pred = torch.full_like(target, 0.05)
    per_pixel = awing_pixelwise(pred, target)
    weights = torch.where(hand_mask() > 0, 11.0, 1.0)
    expected = (per_pixel * weights).mean()
    assert awing_loss(pred, target, weighted=True).item() == pytest.approx(expected.item(), rel=1e-6)
    assert awing_loss(pred, target).item() == pytest.approx(per_pixel.mean().item(), rel=1e-6)
    loss = make_heatmap_loss("awing", use_weight_map=True)
    assert loss(pred, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_random_weight_map_matches_scipy():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(2, 3, 9, 7, generator=g) ** 4
    ref = np.stack([[ndimage.grey_dilation(c, size=(3, 3)) > 0.2 for c in s] for s in h.numpy()]) * 10.0
    np.testing.assert_array_equal(weight_map(h).numpy(), ref.astype(np.float32))


@pytest.mark.parametrize("name", ["mse", "l1", "wing", "awing"])
def test_every_loss_is_a_mean_and_differentiable(name):
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 8, 8, generator=g)
    pred = torch.rand(2, 3, 8, 8, generator=g, requires_grad=True)
    for weighted in (False, True):
        loss = make_heatmap_loss(name, use_weight_map=weighted)
        value = loss(pred, target)
        assert value.dim() == 0 and torch.isfinite(value)
        (grad,) = torch.autograd.grad(value, pred)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # the mean does not depend on how many pixels are stacked
    loss = make_heatmap_loss(name)
    doubled = loss(torch.cat([pred, pred]), torch.cat([target, target]))
    assert doubled.item() == pytest.approx(loss(pred, target).item(), rel=1e-6)


def test_mse_and_l1_values():
    pred, target = torch.full((1, 1, 2, 2), 0.5), torch.zeros(1, 1, 2, 2)
    assert make_heatmap_loss("mse")(pred, target).item() == pytest.approx(0.25)
    assert make_heatmap_loss("l1")(pred, target).item() == pytest.approx(0.5)


def test_make_heatmap_loss_errors_and_params():
    with pytest.raises(ValueError, match="unknown heatmap loss"):
        make_heatmap_loss("focal")
    with pytest.raises(ValueError, match="unknown parameter"):
        make_heatmap_loss("awing", w=3.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        make_heatmap_loss("mse", eps=1.0)
    with pytest.raises(ValueError, match="use_weight_map=True"):
        make_heatmap_loss("awing", W=5.0)
    with pytest.raises(ValueError, match="awing: theta must be > 0, got 0$"):
        make_heatmap_loss("awing", theta=0.0)
    loss = make_heatmap_loss("awing", use_weight_map=True, W=5.0, threshold=0.3, omega=10.0)
    assert isinstance(loss, HeatmapLoss)
    assert loss.W == 5.0 and loss.threshold == 0.3 and loss.params["omega"] == 10.0
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4))


def test_stacked_loss_sums_stacks():
    target = torch.zeros(1, 1, 4, 4)
    preds = [torch.full_like(target, 0.1), torch.full_like(target, 0.2)]
    loss = make_heatmap_loss("mse")
    assert stacked_loss(loss, preds, target).item() == pytest.approx(0.01 + 0.04)
