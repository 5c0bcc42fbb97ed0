"""Pose-based data balancing: Procrustes without reflection, the pose histogram, the repeats."""

from __future__ import annotations

import numpy as np
import pytest

from facebench.data.pdb import balance, pdb_resample, procrustes_align


def template(num: int = 68) -> np.ndarray:
    """A fixed face-like point cloud: an ellipse of points plus an inner grid, unit scale."""
    angles = np.linspace(0, 2 * np.pi, num // 2, endpoint=False)
    ring = np.stack([np.cos(angles), 1.3 * np.sin(angles)], axis=1)
    inner = np.stack([np.linspace(-0.5, 0.5, num - num // 2), np.linspace(-0.6, 0.6, num - num // 2) ** 2], axis=1)
    return np.concatenate([ring, inner])


def yawed(t: float, num: int = 68) -> np.ndarray:
    """A yaw-like deformation that no similarity can undo: points shift sideways by t * (1 - y^2)."""
    shape = template(num).copy()
    shape[:, 0] += t * (1.0 - (shape[:, 1] / 1.3) ** 2)
    return shape


def random_similarity(rng: np.random.Generator, shape: np.ndarray) -> np.ndarray:
    a = rng.uniform(-0.5, 0.5)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return rng.uniform(50, 150) * shape @ rot.T + rng.uniform(0, 300, size=2)


def test_procrustes_undoes_a_similarity():
    rng = np.random.default_rng(0)
    ref = template()
    moved = random_similarity(rng, ref)
    np.testing.assert_allclose(procrustes_align(moved, ref), ref, atol=1e-9)


def test_procrustes_never_reflects():
    ref = yawed(0.4)
    mirrored = ref * np.array([-1.0, 1.0])
    aligned = procrustes_align(mirrored, ref)
    assert np.abs(aligned - ref).max() > 0.1, "a reflection would have matched exactly"
    # the result is a proper similarity of the input: orientation (signed area) is kept
    def signed_area(p):
        return np.sum(p[:-1, 0] * p[1:, 1] - p[1:, 0] * p[:-1, 1])
    assert np.sign(signed_area(aligned)) == np.sign(signed_area(mirrored))


def test_rare_poses_are_repeated_about_nine_times():
    """90 near-frontal faces and 10 strongly yawed ones (5 each way), each under a random similarity."""
    rng = np.random.default_rng(1)
    ts = np.concatenate([rng.normal(0, 0.005, 90), np.repeat([0.6, -0.6], 5) + rng.normal(0, 0.005, 10)])
    shapes = np.stack([random_similarity(rng, yawed(t)) for t in ts])
    result = pdb_resample(shapes, num_bins=9)
    assert result.component == 0
    # hand computation: bin 0 holds the 90 frontal faces, bin 8 the 10 yawed ones; M = 90,
    # r_0 = round(90 / 90) = 1, r_8 = round(90 / 10) = 9, empty bins get none
    assert result.hist_before.tolist() == [90, 0, 0, 0, 0, 0, 0, 0, 10]
    assert result.repeats.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 9]
    assert result.hist_after.tolist() == [90, 0, 0, 0, 0, 0, 0, 0, 90]
    counts = np.bincount(result.indices, minlength=100)
    assert (counts[:90] == 1).all() and (counts[90:] == 9).all()
    assert result.pose[90:].min() > 10 * result.pose[:90].max()
    # copies are numbered 0..r-1 and each sample's occurrences are adjacent
    rare = np.flatnonzero(result.indices == 95)
    assert np.diff(rare).tolist() == [1] * 8 and result.copy[rare].tolist() == list(range(9))
    assert (result.copy[result.indices < 90] == 0).all()


def test_three_pose_groups_match_a_hand_computation():
    rng = np.random.default_rng(2)
    ts = np.concatenate([rng.normal(0, 0.003, 80), np.full(15, 0.5), np.full(5, 1.0)]) * rng.choice([-1, 1], 100)
    shapes = np.stack([random_similarity(rng, yawed(0.3 * t)) for t in ts])
    result = pdb_resample(shapes, num_bins=9)
    # |b| is close to proportional to |t|: 0.5 of the maximum falls in bin 4 = [4/9, 5/9)
    assert result.hist_before.tolist() == [80, 0, 0, 0, 15, 0, 0, 0, 5]
    # M = 80: r_4 = round(80 / 15 = 5.33) = 5, r_8 = round(80 / 5) = 16
    assert result.repeats.tolist() == [1, 0, 0, 0, 5, 0, 0, 0, 16]
    assert len(result.indices) == 80 + 75 + 80


def test_bins_are_half_open_with_a_closed_last_bin_and_matlab_rounding():
    # edges 0, 1, 2, 3, 4 (max 4, K = 4): 1.0 sits on an inner edge -> counted once, in bin 1
    pose = np.array([0.0, 0.5, 0.9, 1.0, 1.5, 2.5, 4.0, 0.2, 0.3, 0.1])
    result = balance(pose, 4)
    np.testing.assert_allclose(result.edges, [0, 1, 2, 3, 4])
    assert result.bins.tolist() == [0, 0, 0, 1, 1, 2, 3, 0, 0, 0]
    assert result.hist_before.tolist() == [6, 2, 1, 1]
    # r = round(6/6, 6/2, 6/1, 6/1) = 1, 3, 6, 6; total occurrences = 6 + 6 + 6 + 6
    assert result.repeats.tolist() == [1, 3, 6, 6]
    assert len(result.indices) == 24 == result.hist_after.sum()
    # halves round up as in MATLAB: bins [5, 0, 0, 2], 5 / 2 = 2.5 -> 3 (numpy's round would give 2)
    assert balance(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 3.5, 3.9]), 4).repeats.tolist() == [1, 0, 0, 3]


def test_default_component_and_identical_shapes():
    rng = np.random.default_rng(3)
    aflw = np.stack([random_similarity(rng, template(19) + rng.normal(0, 0.01, (19, 2))) for _ in range(20)])
    assert pdb_resample(aflw).component == 1
    assert pdb_resample(aflw, component=2).component == 2
    same = np.stack([random_similarity(rng, template()) for _ in range(5)])
    result = pdb_resample(same, num_bins=3)
    assert result.hist_before.sum() == 5 and len(result.indices) == 5


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="N >= 2"):
        pdb_resample(np.zeros((1, 68, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        pdb_resample(np.full((3, 68, 2), np.nan))
