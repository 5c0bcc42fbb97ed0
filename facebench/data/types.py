"""Plain records passed between the format readers, preparation and PDB.

Every reader returns a ``ReadResult``: the faces it could read and, for every input it had to
skip, a ``Quarantined`` entry naming the file and the reason. Nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class RawFace:
    """One annotated face as read from an official dataset layout.

    Coordinates are 0-based pixel centres of the original image (readers convert the
    formats' 1-based MATLAB conventions at load).
    """

    source: str  # path of the image relative to the dataset root, e.g. "helen/trainset/1_1.jpg"
    image_path: Path  # absolute path of the image file
    landmarks: np.ndarray  # (L, 2) float32, x then y
    visible: np.ndarray  # (L,) bool; all True where the format has no visibility
    bbox: np.ndarray | None  # (4,) float32 face box x, y, w, h in image pixels, None if the format has none
    split: str  # the reader's split name, e.g. "train", "common", "challenging", "test"
    face_index: int = 0  # index of the face within the image (sample_id suffix)


@dataclass
class Quarantined:
    """An input that could not be used, with the file (and record) and why."""

    source: str  # file path relative to the dataset root (plus "#record" where useful)
    reason: str


@dataclass
class ReadResult:
    faces: list[RawFace] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
