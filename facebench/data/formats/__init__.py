"""Readers of the official on-disk dataset formats (one module per format), and the checks they share.

A reader quarantines single bad inputs (see ``facebench.data.types.Quarantined``) and raises
``DatasetFormatError`` only when the dataset as a whole cannot be used.
"""

from __future__ import annotations

import numpy as np

# A landmark may sit outside the image (faces cut by the border), but not by more than this
# fraction of the image size: beyond that the annotation belongs to another image or is garbage.
MAX_OUTSIDE = 0.5


class DatasetFormatError(ValueError):
    """The dataset root or a required index file is missing or not in the expected format.

    The message names the path and what was expected, so a wrong ``root:`` in params.yaml is
    obvious from the error alone.
    """


def landmark_problem(points: np.ndarray, size: tuple[int, int]) -> str | None:
    """Why these 0-based (L, 2) landmarks cannot belong to an image of this (height, width), or None."""
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        return f"point {k} has a non-finite coordinate ({points[k, 0]}, {points[k, 1]}); expected finite numbers"
    h, w = size
    lo = -MAX_OUTSIDE * np.array([w, h])
    hi = (1 + MAX_OUTSIDE) * np.array([w, h]) - 1
    out = ((points < lo) | (points > hi)).any(axis=1)
    if out.any():
        k = int(np.flatnonzero(out)[0])
        return (f"point {k} at ({points[k, 0]:.1f}, {points[k, 1]:.1f}) lies more than "
                f"{MAX_OUTSIDE:.0%} of the image size outside the {w}x{h} image")
    return None
