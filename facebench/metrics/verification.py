"""Face verification metrics: LFW 10-fold accuracy, TAR at fixed FAR, ROC curves.

Scores are cosine similarities of pair embeddings (higher = more alike); a pair is declared "same"
when its score is strictly above the threshold.

10-fold protocol (datasets.md §4.3; Huang et al. 2007, View 2): for each fold, pick the threshold
that maximises accuracy on the other nine, report accuracy on the held-out fold; the result is the
mean ± std of the ten accuracies. Our threshold search is exact rather than a grid: candidates
are the midpoints between consecutive distinct training scores (and one value below/above all),
which attains the best achievable training accuracy; among equally good candidates the middle
one is taken (SphereFace's evaluation.m averages its tied grid points to the same end). The std is
the population std (ddof = 0), as InsightFace's verification.py (np.std) reports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def l2_normalize(e: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    e = np.asarray(e, dtype=np.float64)
    return e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), eps)


def combine_flip(e: np.ndarray, e_flip: np.ndarray) -> np.ndarray:
    """Embedding of an image from those of the image and its horizontal mirror: L2-normalise(e + e_flip).

    InsightFace's evaluation choice. SphereFace/CosFace concatenate [e, e_flip] instead; for cosine
    scoring the sum is the cheaper of the two, keeps the embedding dimension, and treats both views
    symmetrically, so every head is evaluated the same way here.
    """
    e, e_flip = np.asarray(e, dtype=np.float64), np.asarray(e_flip, dtype=np.float64)
    if e.shape != e_flip.shape:
        raise ValueError(f"embedding shapes differ: {e.shape} vs {e_flip.shape}")
    return l2_normalize(e + e_flip)


def cosine_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) embedding arrays -> (N,)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two (N, D) arrays of one shape, got {a.shape} and {b.shape}")
    return np.sum(l2_normalize(a) * l2_normalize(b), axis=1)


def _check(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same)
    if scores.ndim != 1 or same.shape != scores.shape:
        raise ValueError(f"scores and same must be 1-d of one length, got {scores.shape} and {same.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    if same.dtype != bool:
        if not np.isin(same, (0, 1)).all():
            raise ValueError("same must hold booleans (or 0/1)")
        same = same.astype(bool)
    return scores, same


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold maximising the accuracy of "same iff score > threshold" on these pairs."""
    scores, same = _check(scores, same)
    if scores.size == 0:
        raise ValueError("no pairs to choose a threshold on")
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], same[order]
    uniq, first = np.unique(s, return_index=True)
    cuts = np.append(first, s.size)  # number of pairs below each candidate threshold
    neg_below = np.concatenate([[0], np.cumsum(~y)])[cuts]
    pos_above = y.sum() - np.concatenate([[0], np.cumsum(y)])[cuts]
    correct = neg_below + pos_above
    candidates = np.concatenate([[uniq[0] - 1.0], (uniq[:-1] + uniq[1:]) / 2, [uniq[-1] + 1.0]])
    best = np.flatnonzero(correct == correct.max())
    return float(candidates[best[len(best) // 2]])


def accuracy(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    scores, same = _check(scores, same)
    return float(np.mean((scores > threshold) == same))


@dataclass
class KFoldResult:
    accuracies: np.ndarray  # (K,) accuracy on each held-out fold
    thresholds: np.ndarray  # (K,) threshold chosen on the other folds
    mean: float
    std: float  # population std (ddof = 0)


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray | None = None,
                   n_folds: int = 10) -> KFoldResult:
    """K-fold verification accuracy. ``folds`` gives each pair's fold (e.g. ``LfwPair.fold``);
    without it the pairs are split in file order into ``n_folds`` contiguous blocks (LFW's blocks,
    and sklearn's KFold(shuffle=False) used by InsightFace)."""
    scores, same = _check(scores, same)
    if folds is None:
        if not 2 <= n_folds <= scores.size:
            raise ValueError(f"n_folds must lie in [2, {scores.size}], got {n_folds}")
        folds = np.repeat(np.arange(n_folds), [len(a) for a in np.array_split(np.arange(scores.size), n_folds)])
    folds = np.asarray(folds)
    if folds.shape != scores.shape:
        raise ValueError(f"folds must give one fold per pair, got shape {folds.shape} for {scores.size} pairs")
    ids = np.unique(folds)
    if ids.size < 2:
        raise ValueError("need at least two folds")
    accs, ths = [], []
    for k in ids:
        test = folds == k
        t = best_threshold(scores[~test], same[~test])
        ths.append(t)
        accs.append(accuracy(scores[test], same[test], t))
    accs_a = np.array(accs)
    return KFoldResult(accs_a, np.array(ths), float(accs_a.mean()), float(accs_a.std()))


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for "same iff score >= threshold", thresholds decreasing over the
    distinct scores, starting at (0, 0) for threshold +inf."""
    scores, same = _check(scores, same)
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC needs both genuine and impostor pairs")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))  # last index of each distinct score
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    return (np.concatenate([[0.0], fp / n_neg]), np.concatenate([[0.0], tp / n_pos]),
            np.concatenate([[np.inf], s[last]]))


@dataclass
class TarAtFar:
    far: float  # requested false accept rate
    tar: float  # true accept rate at the threshold
    threshold: float  # accept iff score > threshold
    achieved_far: float  # actual FAR at that threshold (≤ far)


def tar_at_far(scores: np.ndarray, same: np.ndarray, fars: tuple[float, ...] = (1e-3, 1e-4)) -> list[TarAtFar]:
    """TAR at the lowest threshold whose FAR over all impostor pairs does not exceed each target.

    With n impostor pairs at most floor(far·n) may be accepted: the threshold is the
    (floor(far·n) + 1)-th highest impostor score, accepting strictly above it. When far·n < 1
    (LFW's 3,000 impostor pairs at FAR 1e-4) that means zero false accepts; ``achieved_far`` says so.
    """
    scores, same = _check(scores, same)
    neg = np.sort(scores[~same])[::-1]
    pos = scores[same]
    if pos.size == 0 or neg.size == 0:
        raise ValueError("TAR@FAR needs both genuine and impostor pairs")
    out = []
    for far in fars:
        if not 0 < far <= 1:
            raise ValueError(f"FAR must lie in (0, 1], got {far}")
        allowed = math.floor(far * neg.size + 1e-9)
        t = float(neg[allowed]) if allowed < neg.size else -math.inf
        out.append(TarAtFar(float(far), float(np.mean(pos > t)), t, float(np.mean(neg > t))))
    return out


def verification_report(scores: np.ndarray, same: np.ndarray, folds: np.ndarray | None = None) -> dict:
    """The LFW protocol's numbers for scored pairs: k-fold accuracy over ``folds`` (threshold chosen on the
    other folds), TAR at FAR 1e-3 and 1e-4 over all pairs, and the ROC curve."""
    result = kfold_accuracy(scores, same, folds=folds)
    fpr, tpr, _ = roc_curve(scores, same)
    return {"accuracy": result.mean, "accuracy_std": result.std, "fold_accuracies": result.accuracies.tolist(),
            "tar_at_far": {f"{t.far:g}": t.tar for t in tar_at_far(scores, same)},
            "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()}, "pairs": int(same.size)}
