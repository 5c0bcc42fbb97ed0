"""NME, normalisers, CED/AUC/FR and the mean-shape baseline on cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from facebench.metrics.landmarks import (
    auc_at,
    ced_curve,
    failure_rate,
    inter_ocular,
    inter_pupil,
    mean_shape_baseline,
    nme_per_sample,
    summarise,
)


def test_nme_hand_case():
    gt = np.array([[[0.0, 0.0], [10.0, 0.0]],
                   [[5.0, 5.0], [7.0, 5.0]]])
    pred = np.array([[[3.0, 4.0], [10.0, 0.0]],     # errors 5 and 0 -> mean 2.5
                     [[6.0, 5.0], [8.0, 5.0]]])     # errors 1 and 1 -> mean 1
    norm = np.array([10.0, 2.0])
    np.testing.assert_allclose(nme_per_sample(pred, gt, norm), [0.25, 0.5])


def test_nme_rejects_bad_input():
    pts = np.zeros((2, 3, 2))
    with pytest.raises(ValueError, match="positive"):
        nme_per_sample(pts, pts, np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"\(N, L, 2\)"):
        nme_per_sample(pts, np.zeros((2, 4, 2)), np.ones(2))
    with pytest.raises(ValueError, match="norm"):
        nme_per_sample(pts, pts, np.ones(3))


def shape68() -> np.ndarray:
    """68 points at the origin except the eyes (0-based 36-41 and 42-47), laid out by hand.

    Left eye: outer corner 36 at (0, 0), inner corner 39 at (4, 0), centroid (2, 0).
    Right eye: inner corner 42 at (8, 0), outer corner 45 at (12, 0), centroid (10, 0).
    Inter-ocular = |p36 - p45| = 12; inter-pupil = |(2, 0) - (10, 0)| = 8.
    """
    s = np.zeros((68, 2))
    s[36:42] = [(0, 0), (1, 1), (3, 1), (4, 0), (3, -1), (1, -1)]
    s[42:48] = [(8, 0), (9, 1), (11, 1), (12, 0), (11, -1), (9, -1)]
    return s


def test_inter_ocular_and_inter_pupil_hand_shape():
    s = shape68()
    assert inter_ocular(s[None])[0] == pytest.approx(12.0)
    assert inter_pupil(s[None])[0] == pytest.approx(8.0)
    # batch of two, the second scaled by 2 and shifted: distances double
    batch = np.stack([s, 2 * s + 7])
    np.testing.assert_allclose(inter_ocular(batch), [12.0, 24.0])
    np.testing.assert_allclose(inter_pupil(batch), [8.0, 16.0])


def test_normalisers_need_68_points():
    with pytest.raises(ValueError, match="68"):
        inter_ocular(np.zeros((1, 19, 2)))
    with pytest.raises(ValueError, match="68"):
        inter_pupil(np.zeros((1, 19, 2)))


ERRORS = np.array([0.02, 0.05, 0.2])


def test_auc_hand_case():
    # integral_0^0.1 F(t) dt = (0.1 - 0.02) / 3 + (0.1 - 0.05) / 3; divided by 0.1
    assert auc_at(ERRORS, 0.1) == pytest.approx(((0.1 - 0.02) + (0.1 - 0.05)) / 3 / 0.1)
    assert auc_at(ERRORS, 0.1) == pytest.approx(0.4333333333)
    assert auc_at(ERRORS, 0.08) == pytest.approx((0.06 + 0.03) / 3 / 0.08)  # 0.375


def test_auc_extremes():
    assert auc_at(np.zeros(5), 0.08) == pytest.approx(1.0)
    assert auc_at(np.full(5, 0.5), 0.08) == 0.0
    assert auc_at(np.array([0.04]), 0.08) == pytest.approx(0.5)


def test_auc_is_the_limit_of_a_fine_trapezoid():
    rng = np.random.default_rng(0)
    errors = rng.gamma(2.0, 0.02, size=500)
    t, f = ced_curve(errors, 0.1, num=200_001)
    assert auc_at(errors, 0.1) == pytest.approx((0.5 * (f[1:] + f[:-1]) * np.diff(t)).sum() / 0.1, abs=1e-4)


def test_failure_rate_hand_case():
    assert failure_rate(ERRORS, 0.1) == pytest.approx(1 / 3)
    assert failure_rate(ERRORS, 0.05) == pytest.approx(1 / 3)  # strictly above: 0.05 is not a failure
    assert failure_rate(ERRORS, 0.01) == 1.0
    assert failure_rate(ERRORS, 0.5) == 0.0


def test_ced_curve_values_and_monotone():
    t, f = ced_curve(ERRORS, 0.1, num=11)
    np.testing.assert_allclose(t, np.linspace(0, 0.1, 11))
    assert f[0] == 0.0
    assert f[2] == pytest.approx(1 / 3)   # t = 0.02: e <= t counts
    assert f[5] == pytest.approx(2 / 3)   # t = 0.05
    assert f[-1] == pytest.approx(2 / 3)  # 0.2 never enters below 0.1
    rng = np.random.default_rng(1)
    _, f = ced_curve(rng.exponential(0.05, size=300), 0.3, num=301)
    assert np.all(np.diff(f) >= 0) and 0.0 <= f[0] and f[-1] <= 1.0


def test_summarise_hand_case():
    s = summarise(ERRORS)
    assert set(s) == {"nme", "auc08", "fr08", "auc10", "fr10"}
    assert s["nme"] == pytest.approx(0.09)
    assert s["auc08"] == pytest.approx(0.375)
    assert s["fr08"] == pytest.approx(1 / 3)
    assert s["auc10"] == pytest.approx(0.4333333333)
    assert s["fr10"] == pytest.approx(1 / 3)


def test_nan_error_counts_as_failure():
    s = summarise(np.array([0.02, np.nan]))
    assert s["fr10"] == 0.5 and s["fr08"] == 0.5
    assert s["auc10"] == pytest.approx((0.1 - 0.02) / 2 / 0.1)
    assert s["nme"] == np.inf


def test_bad_threshold_and_empty():
    with pytest.raises(ValueError, match="threshold"):
        auc_at(ERRORS, 0.0)
    with pytest.raises(ValueError, match="no errors"):
        failure_rate(np.array([]), 0.1)


def test_mean_shape_baseline_exact_when_all_faces_share_a_shape():
    unit = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])  # box coordinates
    train_bbox = np.array([[10, 20, 100, 120], [0, 0, 50, 50], [-5, 3, 30, 80]], dtype=float)
    test_bbox = np.array([[7, 9, 64, 64], [100, 50, 20, 40]], dtype=float)
    place = lambda boxes: boxes[:, None, :2] + unit[None] * boxes[:, None, 2:]  # noqa: E731
    pred = mean_shape_baseline(place(train_bbox), train_bbox, test_bbox)
    assert pred.shape == (2, 5, 2)
    np.testing.assert_allclose(pred, place(test_bbox))
    gt = place(test_bbox)
    np.testing.assert_allclose(nme_per_sample(pred, gt, np.array([64.0, 20.0])), 0.0, atol=1e-12)


def test_mean_shape_baseline_averages_in_box_coordinates():
    # two one-point faces: unit coordinates (0.2, 0.4) and (0.6, 0.8) -> mean (0.4, 0.6)
    train = np.array([[[2.0, 4.0]], [[100 + 12.0, 16.0]]])
    train_bbox = np.array([[0, 0, 10, 10], [100, 0, 20, 20]], dtype=float)
    pred = mean_shape_baseline(train, train_bbox, np.array([[50, 50, 100, 200]], dtype=float))
    np.testing.assert_allclose(pred, [[[90.0, 170.0]]])


def test_mean_shape_baseline_shape_checks():
    with pytest.raises(ValueError, match="train_bbox"):
        mean_shape_baseline(np.zeros((2, 5, 2)), np.ones((3, 4)), np.ones((1, 4)))
    with pytest.raises(ValueError, match="positive width"):
        mean_shape_baseline(np.zeros((1, 5, 2)), np.array([[0, 0, 0, 10.0]]), np.ones((1, 4)))
