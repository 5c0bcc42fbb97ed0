"""Pose-based data balancing (PDB; Feng et al., CVPR 2018), after the author's pdb.m (datasets.md §6).

Rare head poses are under-represented in training sets; PDB repeats each training sample so that
every pose bin ends up with about as many occurrences as the most populated one. The duplicates are
made different later by the online augmentation.

Steps: one-shot Procrustes of every shape onto the mean raw shape, PCA of the aligned shapes, |b| =
magnitude of each shape's coefficient on the pose component, a K-bin histogram of |b| with edges
anchored at 0, then r_j = round(M / n_j) total occurrences for each member of bin j.

Where this port differs from pdb.m, on purpose:
- Procrustes never reflects (pdb.m uses MATLAB's default ``'Reflection', 'best'``): a mirrored face
  is a different face with relabelled points, not the same shape seen differently.
- Each sample falls in exactly one bin: bins are [e_j, e_{j+1}) and the last is closed. pdb.m
  tests both ends inclusively, so a value exactly on an inner edge is counted (and repeated) twice.
- M is the largest count of these same anchored bins. pdb.m takes M from MATLAB ``hist`` over
  [min|b|, max|b|], which on odd data can make r_j round to 0 and drop samples; here r_j >= 1.
- round() is MATLAB's (halves away from zero), not numpy's round-half-to-even.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PdbResult:
    indices: np.ndarray      # (T,) int64 new training list; each sample i appears repeats[bin[i]] times
    copy: np.ndarray         # (T,) int16 0 for the first occurrence of a sample, k for its k-th duplicate
    pose: np.ndarray         # (N,) float64 |b|, magnitude of the coefficient on the pose component
    bins: np.ndarray         # (N,) int64 bin of each sample
    edges: np.ndarray        # (K+1,) bin edges, 0 .. max|b|
    hist_before: np.ndarray  # (K,) samples per bin
    hist_after: np.ndarray   # (K,) occurrences per bin after duplication
    repeats: np.ndarray      # (K,) total occurrences r_j per member of bin j (0 for an empty bin)
    component: int | None    # index of the principal component used as pose (None: pose given directly)

    def manifest(self) -> dict:
        """JSON-ready summary for the preparation manifest."""
        return {"component": self.component, "edges": self.edges.tolist(),
                "hist_before": self.hist_before.tolist(), "hist_after": self.hist_after.tolist(),
                "repeats": self.repeats.tolist(), "total_before": int(self.hist_before.sum()),
                "total_after": int(self.hist_after.sum())}


def procrustes_align(shape: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``shape`` (L, 2) moved onto ``reference`` by the best translation, rotation and uniform scale.

    Reflections are excluded: when the best orthogonal map has determinant -1, the closest proper
    rotation is taken instead (the sign of the smallest singular direction is flipped).
    """
    mu_s, mu_r = shape.mean(axis=0), reference.mean(axis=0)
    a, b = shape - mu_s, reference - mu_r
    u, sing, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    flip = np.array([1.0, d])
    rotation = (u * flip) @ vt
    norm = (a * a).sum()
    scale = (sing * flip).sum() / norm if norm > 0 else 1.0
    return scale * a @ rotation + mu_r


def pose_coefficients(shapes: np.ndarray, component: int) -> np.ndarray:
    """|b|: magnitude of each aligned shape's projection on principal component ``component``."""
    reference = shapes.mean(axis=0)
    aligned = np.stack([procrustes_align(s, reference) for s in shapes])
    flat = aligned.reshape(len(shapes), -1)
    centred = flat - flat.mean(axis=0)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    if component >= len(vt):
        raise ValueError(f"pose component {component} does not exist: only {len(vt)} principal components")
    if sing[component] <= 1e-9 * np.linalg.norm(flat):  # no real variation: rounding noise is not pose
        return np.zeros(len(shapes))
    return np.abs(centred @ vt[component])


def pdb_resample(shapes: np.ndarray, num_bins: int = 9, component: int | None = None) -> PdbResult:
    """Balance ``shapes`` (N, L, 2) over pose; returns the duplicated index list and the histograms.

    ``component`` defaults to 1 (the 2nd PC) for the 19-point AFLW markup and to 0 otherwise, as
    the author chose them by eye (Wing-Loss issue #7). Output order: each sample's occurrences are
    adjacent, samples in input order (training shuffles anyway; this keeps the list stable).
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    if shapes.ndim != 3 or shapes.shape[-1] != 2 or len(shapes) < 2:
        raise ValueError(f"shapes must be (N >= 2, L, 2), got {shapes.shape}")
    if not np.isfinite(shapes).all():
        raise ValueError("shapes contain non-finite coordinates")
    if component is None:
        component = 1 if shapes.shape[1] == 19 else 0
    return balance(pose_coefficients(shapes, component), num_bins, component)


def balance(pose: np.ndarray, num_bins: int, component: int | None = None) -> PdbResult:
    """Histogram the pose magnitudes |b| and repeat each sample of bin j r_j = round(M / n_j) times."""
    pose = np.asarray(pose, dtype=np.float64)
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    top = float(pose.max())
    edges = np.linspace(0.0, top, num_bins + 1)
    if top > 0:
        bins = np.clip(np.searchsorted(edges, pose, side="right") - 1, 0, num_bins - 1)
    else:  # every shape identical up to similarity: one bin holds them all
        bins = np.zeros(len(pose), dtype=np.int64)
    hist = np.bincount(bins, minlength=num_bins)
    repeats = np.zeros(num_bins, dtype=np.int64)
    filled = hist > 0
    repeats[filled] = np.floor(hist.max() / hist[filled] + 0.5).astype(np.int64)
    per_sample = repeats[bins]
    indices = np.repeat(np.arange(len(pose), dtype=np.int64), per_sample)
    starts = np.repeat(np.cumsum(per_sample) - per_sample, per_sample)
    copy = (np.arange(len(indices)) - starts).astype(np.int16)
    return PdbResult(indices=indices, copy=copy, pose=pose, bins=bins.astype(np.int64), edges=edges,
                     hist_before=hist, hist_after=hist * repeats, repeats=repeats, component=component)
