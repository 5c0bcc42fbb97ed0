"""The four losses of the Wing paper against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from facebench.papers.wing.loss import (
    L1Loss, L2Loss, SmoothL1Loss, WingLoss, l1_loss, l2_loss, make_landmark_loss, smooth_l1_loss, wing_loss,
)

# w = 10, eps = 2:  C = 10 - 10 ln(1 + 10/2) = 10 - 10 ln 6 = -7.917594692...
C = -7.917594692280549
WING_HAND = {
    1.0: 4.054651081081644,    # 10 ln(1.5)
    5.0: 12.52762968495368,    # 10 ln(3.5)
    10.0: 17.91759469228055,   # |x| >= w: 10 - C = 10 ln 6
    15.0: 22.91759469228055,   # 15 - C
}


def one(values: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of one sample whose coordinate errors are `values` (pred - target)."""
    pred = torch.tensor([values], dtype=torch.float64)
    return pred, torch.zeros_like(pred)


def test_wing_constant_c():
    assert 10 - 10 * math.log(6) == pytest.approx(C)


@pytest.mark.parametrize("x, expected", sorted(WING_HAND.items()))
def test_wing_hand_values(x, expected):
    assert wing_loss(*one([x])).item() == pytest.approx(expected, abs=1e-9)
    assert wing_loss(*one([-x])).item() == pytest.approx(expected, abs=1e-9)  # symmetric


def test_wing_sum_over_coordinates():
    total = sum(WING_HAND.values())
    assert wing_loss(*one([1.0, -5.0, 10.0, -15.0])).item() == pytest.approx(total, abs=1e-9)


def test_wing_continuous_at_w():
    w, eps = 10.0, 2.0
    d = 1e-9
    left = wing_loss(*one([w - d])).item()
    right = wing_loss(*one([w + d])).item()
    at = wing_loss(*one([w])).item()
    assert left == pytest.approx(w * math.log(1 + w / eps), abs=1e-7)
    assert right == pytest.approx(left, abs=1e-7)
    assert at == pytest.approx(left, abs=1e-7)


@pytest.mark.parametrize("w, eps", [(10.0, 2.0), (5.0, 0.5), (15.0, 3.0)])
def test_wing_gradient_is_analytic(w, eps):
    x = torch.tensor([[-20.0, -10.5, -3.0, -0.25, 0.25, 1.0, 5.0, 9.5, 10.5, 40.0]], dtype=torch.float64)
    x.requires_grad_(True)
    wing_loss(x, torch.zeros_like(x), w=w, eps=eps).backward()
    a = x.detach().abs()
    expected = torch.where(a < w, w / (eps + a), torch.ones_like(a)) * x.detach().sign()
    torch.testing.assert_close(x.grad, expected)


def test_wing_equals_module_and_params_used():
    pred, target = one([1.0, 3.0])
    assert WingLoss(w=4.0, eps=1.0)(pred, target).item() == pytest.approx(4 * math.log(2) + 4 * math.log(4))


def test_l2_hand_values():
    # 0.5 * (0.5^2 + 3^2 + (-2)^2) = 0.5 * 13.25
    assert l2_loss(*one([0.5, 3.0, -2.0])).item() == pytest.approx(6.625)


def test_l1_hand_values():
    assert l1_loss(*one([0.5, -3.0, 2.0])).item() == pytest.approx(5.5)


def test_smooth_l1_hand_values():
    # |x| < 1: x^2/2 ; else |x| - 1/2
    assert smooth_l1_loss(*one([0.5])).item() == pytest.approx(0.125)
    assert smooth_l1_loss(*one([-0.5])).item() == pytest.approx(0.125)
    assert smooth_l1_loss(*one([1.0])).item() == pytest.approx(0.5)  # both pieces give 0.5 at |x| = 1
    assert smooth_l1_loss(*one([3.0])).item() == pytest.approx(2.5)
    assert smooth_l1_loss(*one([0.5, -3.0])).item() == pytest.approx(2.625)


@pytest.mark.parametrize("fn", [l2_loss, l1_loss, smooth_l1_loss, wing_loss])
def test_symmetric_and_zero_at_zero(fn):
    pred = torch.tensor([[0.3, -2.0, 7.0, 12.0]])
    target = torch.tensor([[1.0, 1.0, -1.0, 0.0]])
    assert fn(pred, target).item() == pytest.approx(fn(target, pred).item())
    assert fn(target, target).item() == 0.0


def test_batch_reduction_is_mean_of_per_sample_sums():
    pred = torch.tensor([[1.0, 0.0, 0.0, 0.0], [2.0, -3.0, 0.0, 0.0]])
    target = torch.zeros_like(pred)
    # per-sample L1 sums 1 and 5 -> mean 3 (not the mean over the 8 coordinates, 0.75)
    assert l1_loss(pred, target).item() == pytest.approx(3.0)
    # L2: 0.5 * 1 = 0.5 and 0.5 * 13 = 6.5 -> 3.5
    assert l2_loss(pred, target).item() == pytest.approx(3.5)
    # Wing: sample sums 10 ln 1.5 and 10 ln 2 + 10 ln 2.5
    expected = (10 * math.log(1.5) + 10 * math.log(2.0) + 10 * math.log(2.5)) / 2
    assert wing_loss(pred, target).item() == pytest.approx(expected, rel=1e-6)


def test_factory_names_and_modules():
    assert isinstance(make_landmark_loss("l2"), L2Loss)
    assert isinstance(make_landmark_loss("l1"), L1Loss)
    assert isinstance(make_landmark_loss("smooth_l1"), SmoothL1Loss)
    wing = make_landmark_loss("wing", w=5.0, eps=1.0)
    assert isinstance(wing, WingLoss) and (wing.w, wing.eps) == (5.0, 1.0)
    assert "w=5.0" in repr(wing)
    pred, target = one([0.5, 3.0])
    for name, fn in [("l2", l2_loss), ("l1", l1_loss), ("smooth_l1", smooth_l1_loss), ("wing", wing_loss)]:
        assert make_landmark_loss(name)(pred, target).item() == pytest.approx(fn(pred, target).item())


def test_factory_rejects_unknown_name():
    with pytest.raises(ValueError, match="l2, l1, smooth_l1, wing"):
        make_landmark_loss("awing")


def test_factory_rejects_unknown_params():
    with pytest.raises(ValueError, match="takes no parameters"):
        make_landmark_loss("l1", w=10.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        make_landmark_loss("wing", omega=14.0)


@pytest.mark.parametrize("w, eps", [(0.0, 2.0), (-1.0, 2.0), (10.0, 0.0), (10.0, -2.0), (float("nan"), 2.0)])
def test_wing_rejects_bad_params(w, eps):
    with pytest.raises(ValueError, match="wing: (w|eps) must be > 0"):
        WingLoss(w=w, eps=eps)
    with pytest.raises(ValueError, match="wing: (w|eps) must be > 0"):
        wing_loss(*one([1.0]), w=w, eps=eps)


def test_shape_checks():
    with pytest.raises(ValueError, match="same shape"):
        l1_loss(torch.zeros(2, 4), torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"\(N, 2L\)"):
        l1_loss(torch.zeros(2, 3, 2), torch.zeros(2, 3, 2))
