"""Margin heads against an independent numpy computation on hand-made embeddings and weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facebench.papers.cosface.loss import (
    ArcFaceHead, CosFaceHead, NormSoftmaxHead, SoftmaxHead, SphereFaceHead, make_head, sphereface_lambda,
    sphereface_psi,
)

# 4 samples in 3-d, 5 classes; rows chosen to spread θ_y over small, medium and near-π angles.
X = np.array([[3.0, 0.5, -1.0], [0.2, -2.0, 0.7], [-1.5, -0.3, 0.1], [0.0, 1.0, 4.0]])
W = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.3], [0.5, 0.5, 0.5], [0.9, 0.1, -0.2], [0.1, 0.2, 2.0]])
Y = np.array([0, 1, 3, 4])  # sample 2 points away from its class 3: θ_y close to π


def np_cos() -> np.ndarray:
    return (X / np.linalg.norm(X, axis=1, keepdims=True)) @ (W / np.linalg.norm(W, axis=1, keepdims=True)).T


def np_ce(logits: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(Y)), Y].mean())


def np_psi(theta: np.ndarray, m: int) -> np.ndarray:
    k = np.minimum(np.floor(m * theta / np.pi), m - 1)
    return (-1.0) ** k * np.cos(m * theta) - 2 * k


def run(head) -> tuple[np.ndarray, float]:
    head = head.double()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(W))
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    return head(x, y).detach().numpy(), head.loss(x, y).item()


def with_target(other: np.ndarray, target: np.ndarray) -> np.ndarray:
    out = other.copy()
    out[np.arange(len(Y)), Y] = target
    return out


def test_softmax_is_a_plain_linear_layer():
    head = SoftmaxHead(3, 5).double()
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0, 0.5], dtype=torch.float64))
    logits, loss = run(head)
    expected = X @ W.T + np.array([0.1, -0.2, 0.3, 0.0, 0.5])
    np.testing.assert_allclose(logits, expected, atol=1e-12)
    assert loss == pytest.approx(np_ce(expected), abs=1e-12)


def test_nsl():
    logits, loss = run(NormSoftmaxHead(3, 5, s=30.0))
    np.testing.assert_allclose(logits, 30.0 * np_cos(), atol=1e-12)
    assert loss == pytest.approx(np_ce(30.0 * np_cos()), abs=1e-10)


def test_cosface():
    cos = np_cos()
    expected = with_target(64 * cos, 64 * (cos[np.arange(4), Y] - 0.35))
    logits, loss = run(CosFaceHead(3, 5))
    np.testing.assert_allclose(logits, expected, atol=1e-10)
    assert loss == pytest.approx(np_ce(expected), abs=1e-9)


def test_cosface_with_zero_margin_is_nsl():
    a, la = run(CosFaceHead(3, 5, s=64.0, m=0.0))
    b, lb = run(NormSoftmaxHead(3, 5, s=64.0))
    np.testing.assert_allclose(a, b, atol=1e-12)
    assert la == pytest.approx(lb, abs=1e-12)


@pytest.mark.parametrize("easy", [False, True])
def test_arcface(easy):
    cos = np_cos()
    theta = np.arccos(cos[np.arange(4), Y])
    assert theta.max() > np.pi - 0.5  # the hand-made data reach the θ + m > π branch
    if easy:
        target = np.where(np.cos(theta) > 0, np.cos(theta + 0.5), np.cos(theta))
    else:
        target = np.where(theta + 0.5 <= np.pi, np.cos(theta + 0.5), np.cos(theta) - 0.5 * np.sin(0.5))
    expected = with_target(64 * cos, 64 * target)
    logits, loss = run(ArcFaceHead(3, 5, easy_margin=easy))
    np.testing.assert_allclose(logits, expected, atol=1e-9)
    assert loss == pytest.approx(np_ce(expected), abs=1e-8)


def test_arcface_target_is_decreasing_with_the_released_step_at_pi_minus_m():
    head = ArcFaceHead(3, 5).double()
    theta = torch.linspace(0, math.pi, 20001, dtype=torch.float64)
    t = head.target_logits(torch.cos(theta), torch.ones_like(theta)).numpy() / 64
    assert np.all(np.diff(t) < 0)  # never rewards moving away from the class
    jumps = np.abs(np.diff(t))
    assert jumps[theta.numpy()[1:] < math.pi - 0.5 - 1e-3].max() < 1e-3  # smooth before π − m
    # at θ = π − m: cos(π) = −1 on the left, cos(π − m) − m·sin m = −(cos m + m·sin m) on the right
    assert jumps.max() == pytest.approx(math.cos(0.5) + 0.5 * math.sin(0.5) - 1, abs=1e-3)


@pytest.mark.parametrize("iteration", [0, 1, 500])
def test_sphereface(iteration):
    head = SphereFaceHead(3, 5).double().eval()
    head.iteration.fill_(iteration)
    lam = {0: 1000.0, 1: 1000.0 / 1.12, 500: 1000.0 / 61.0}[iteration]
    cos = np_cos()
    norm = np.linalg.norm(X, axis=1)
    cy = cos[np.arange(4), Y]
    target = norm * (lam * cy + np_psi(np.arccos(cy), 4)) / (1 + lam)
    expected = with_target(norm[:, None] * cos, target)  # feature norm kept, weights normalised
    logits, loss = run(head)
    np.testing.assert_allclose(logits, expected, atol=1e-9)
    assert loss == pytest.approx(np_ce(expected), abs=1e-8)


def test_sphereface_psi_over_the_whole_range():
    theta = np.linspace(0, np.pi, 40001)
    psi = sphereface_psi(torch.from_numpy(np.cos(theta)), m=4).numpy()
    np.testing.assert_allclose(psi, np_psi(theta, 4), atol=1e-9)
    assert psi[0] == pytest.approx(1.0) and psi[-1] == pytest.approx(1 - 2 * 4)
    assert np.all(np.diff(psi) < 0)  # monotonically decreasing
    assert np.abs(np.diff(psi)).max() < 1e-3  # no jump at the k·π/m boundaries
    for k in range(1, 4):  # left and right limits agree at each boundary
        b = k * np.pi / 4
        lr = sphereface_psi(torch.tensor(np.cos([b - 1e-9, b + 1e-9])), 4).numpy()
        assert abs(lr[0] - lr[1]) < 1e-6


def test_sphereface_lambda_schedule():
    assert sphereface_lambda(0) == pytest.approx(1000.0)
    assert sphereface_lambda(1) == pytest.approx(1000.0 / 1.12)
    assert sphereface_lambda(100) == pytest.approx(1000.0 / 13.0)
    assert sphereface_lambda(1000) == pytest.approx(1000.0 / 121.0)
    assert sphereface_lambda(2000) == 5.0  # 1000/241 < 5: floored at lambda_min
    assert sphereface_lambda(10, base=1500, gamma=0.01, power=2, lambda_min=0) == pytest.approx(1500 / 1.1**2)


def test_sphereface_counts_training_steps_only():
    head = SphereFaceHead(3, 5)
    x, y = torch.from_numpy(X).float(), torch.from_numpy(Y)
    head(x, y)
    head(x, y)
    assert int(head.iteration) == 2 and head.lam == pytest.approx(1000 / 1.24)
    head.eval()
    head(x, y)
    assert int(head.iteration) == 2
    assert "iteration" in head.state_dict()


@pytest.mark.parametrize("name", ["sphereface", "arcface", "cosface"])
def test_gradients_finite_when_embedding_lies_on_its_class(name):
    head = make_head(name, 3, 5)
    x = head.weight.detach()[[0, 2]].clone().mul(3.0).requires_grad_(True)  # cos θ_y = 1 exactly
    head.loss(x, torch.tensor([0, 2])).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


def test_make_head_defaults_and_errors():
    assert make_head("cosface", 8, 4).s == 64.0 and make_head("cosface", 8, 4).m == 0.35
    assert make_head("arcface", 8, 4).m == 0.5
    assert make_head("sphereface", 8, 4).m == 4
    assert make_head("nsl", 8, 4, s=30).s == 30.0
    with pytest.raises(ValueError, match="unknown head 'lmcl'"):
        make_head("lmcl", 8, 4)
    with pytest.raises(ValueError, match="head 'cosface'.*'q'"):
        make_head("cosface", 8, 4, q=1)
    with pytest.raises(ValueError, match="labels must lie in"):
        make_head("cosface", 3, 5)(torch.zeros(2, 3), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="expected embeddings"):
        make_head("cosface", 3, 5)(torch.zeros(2, 4), torch.tensor([0, 1]))
