"""Landmark localisation metrics: NME, its normalisers, CED, AUC, failure rate, a mean-shape baseline.

All errors are fractions (NME 0.035, not 3.5); the report multiplies by 100. Which normaliser a
number uses must travel with it (datasets.md §1.6, §2.3): the Wing paper's 300-W figures use
inter-pupil distance, the 300-W challenge / HRNet / MMPose use inter-ocular (outer corners).
"""

from __future__ import annotations

import numpy as np

# 68-point markup, 0-based (datasets.md §1.4).
OUTER_EYE_CORNERS = (36, 45)
LEFT_EYE = slice(36, 42)   # image-left eye contour, points 37-42 1-based
RIGHT_EYE = slice(42, 48)  # image-right eye contour, points 43-48 1-based


def nme_per_sample(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """Mean over the L points of the Euclidean point-to-point error, divided by the sample's norm.

    pred, gt: (N, L, 2); norm: (N,) in the same units. Returns (N,).
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    norm = np.asarray(norm, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both be (N, L, 2)")
    if norm.shape != (pred.shape[0],):
        raise ValueError(f"norm must be ({pred.shape[0]},), got {norm.shape}")
    if not np.all(norm > 0):
        raise ValueError(f"normalisers must be positive; got {np.count_nonzero(~(norm > 0))} that are not")
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=-1) / norm


def _check68(gt68: np.ndarray) -> np.ndarray:
    gt68 = np.asarray(gt68, dtype=np.float64)
    if gt68.shape[-2:] != (68, 2):
        raise ValueError(f"expected (..., 68, 2) landmarks of the 68-point markup, got {gt68.shape}")
    return gt68


def inter_ocular(gt68: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners, points 37 and 46 (0-based 36, 45): the 300-W convention."""
    gt68 = _check68(gt68)
    a, b = OUTER_EYE_CORNERS
    return np.linalg.norm(gt68[..., a, :] - gt68[..., b, :], axis=-1)


def inter_pupil(gt68: np.ndarray) -> np.ndarray:
    """Distance between the eye-contour centroids (0-based 36-41 and 42-47).

    300-W has no pupil points; LBF (Ren et al. 2014), which the Wing paper follows, uses the
    contour means in their place (datasets.md §1.6).
    """
    gt68 = _check68(gt68)
    left = gt68[..., LEFT_EYE, :].mean(axis=-2)
    right = gt68[..., RIGHT_EYE, :].mean(axis=-2)
    return np.linalg.norm(left - right, axis=-1)


def _errors(errors: np.ndarray) -> np.ndarray:
    """1-D float errors; NaN (a diverged prediction) counts as an infinite error, i.e. a failure."""
    errors = np.asarray(errors, dtype=np.float64).ravel()
    if errors.size == 0:
        raise ValueError("no errors to summarise")
    return np.where(np.isnan(errors), np.inf, errors)


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be positive and finite, got {threshold!r}")
    return threshold


def ced_curve(errors: np.ndarray, max_threshold: float, num: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: fraction of samples with error <= t, at num thresholds in [0, max]."""
    errors = _errors(errors)
    thresholds = np.linspace(0.0, _check_threshold(max_threshold), int(num))
    fraction = (errors[None, :] <= thresholds[:, None]).mean(axis=1)
    return thresholds, fraction


def auc_at(errors: np.ndarray, threshold: float) -> float:
    """Area under the CED on [0, threshold], divided by threshold (so 1.0 is perfect).

    The CED is a step function, F(t) = mean(e_i <= t), so its integral is exact in closed form:
    integral_0^T F(t) dt = mean(max(0, T - e_i)). No trapezoid on a sampled grid, hence no
    dependence on the grid step. E.g. errors [0.02, 0.05, 0.2], T = 0.1 -> (0.08 + 0.05) / 3 / 0.1.
    """
    errors = _errors(errors)
    threshold = _check_threshold(threshold)
    return float(np.clip(threshold - errors, 0.0, None).mean() / threshold)


def failure_rate(errors: np.ndarray, threshold: float) -> float:
    """Fraction of samples whose error is strictly above threshold."""
    errors = _errors(errors)
    return float((errors > _check_threshold(threshold)).mean())


def summarise(errors: np.ndarray) -> dict[str, float]:
    """Mean NME plus AUC and failure rate at 0.08 and 0.10 (all fractions, not percentages)."""
    errors = _errors(errors)  # a NaN error makes the mean NME inf, and counts as a failure
    return {
        "nme": float(errors.mean()),
        "auc08": auc_at(errors, 0.08),
        "fr08": failure_rate(errors, 0.08),
        "auc10": auc_at(errors, 0.10),
        "fr10": failure_rate(errors, 0.10),
    }


def mean_shape_baseline(train_landmarks: np.ndarray, train_bbox: np.ndarray, test_bbox: np.ndarray) -> np.ndarray:
    """The trivial predictor every model must beat: the mean training shape, placed in each test box.

    Each training shape is expressed in its box's coordinates, u = (p - (x, y)) / (w, h); the mean
    of u is mapped back through every test box (x, y, w, h). Boxes are xywh. Returns (M, L, 2).
    """
    train_landmarks = np.asarray(train_landmarks, dtype=np.float64)
    train_bbox = np.asarray(train_bbox, dtype=np.float64)
    test_bbox = np.asarray(test_bbox, dtype=np.float64)
    if train_landmarks.ndim != 3 or train_landmarks.shape[-1] != 2:
        raise ValueError(f"train_landmarks must be (N, L, 2), got {train_landmarks.shape}")
    if train_bbox.shape != (train_landmarks.shape[0], 4):
        raise ValueError(f"train_bbox must be ({train_landmarks.shape[0]}, 4) xywh, got {train_bbox.shape}")
    if test_bbox.ndim != 2 or test_bbox.shape[1] != 4:
        raise ValueError(f"test_bbox must be (M, 4) xywh, got {test_bbox.shape}")
    if not np.all(train_bbox[:, 2:] > 0):
        raise ValueError("training boxes must have positive width and height")
    origin, size = train_bbox[:, None, :2], train_bbox[:, None, 2:]
    mean_unit = ((train_landmarks - origin) / size).mean(axis=0)  # (L, 2)
    return test_bbox[:, None, :2] + mean_unit[None] * test_bbox[:, None, 2:]
