"""Decoding, geometric warps and photometric augmentation of prepared crops.

These run inside Ray Data ``map_batches`` tasks (CPU), off the training loop's critical path.
Geometry uses 0-based pixel centres throughout: resizing a crop of side S to side s maps
x -> (x + 0.5) * s / S - 0.5, and a horizontal flip maps x -> s - 1 - x.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> HxWx3 uint8 RGB. Raises ValueError if the bytes are not an image."""
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ValueError("image bytes could not be decoded")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def resize_matrix(src_size: int, dst_size: int) -> np.ndarray:
    """2x3 affine taking pixel centres of a src_size square to a dst_size square."""
    s = dst_size / src_size
    return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]], dtype=np.float64)


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Affine a after b (both 2x3)."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(L, 2) points through a 2x3 affine."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def random_similarity(rng: np.random.Generator, size: int, max_rotation: float, max_scale: float,
                      max_shift: float) -> np.ndarray:
    """Random rotation (degrees), scale (relative) and shift (fraction of size) about the crop centre."""
    angle = rng.uniform(-max_rotation, max_rotation)
    scale = 1.0 + rng.uniform(-max_scale, max_scale)
    centre = ((size - 1) / 2.0, (size - 1) / 2.0)
    m = cv2.getRotationMatrix2D(centre, angle, scale)
    m[:, 2] += rng.uniform(-max_shift, max_shift, size=2) * size
    return m


@dataclass(frozen=True)
class Augment:
    """Augmentation ranges. Defaults follow the common Wing-loss reproductions (datasets.md §6):
    rotation up to 30 degrees, box jitter of a few percent, 50% flip, colour and blur changes."""

    max_rotation: float = 30.0
    max_scale: float = 0.05
    max_shift: float = 0.05
    flip_prob: float = 0.5
    colour: float = 0.2
    blur_prob: float = 0.2


class LandmarkBatchTransform:
    """Ray Data batch function: prepared rows -> network tensors.

    Input columns: image (encoded crop), landmarks (flat x,y in crop pixels), norm.
    Output: image float32 (N, 3, s, s) in [-1, 1]; landmarks float32 (N, 2L) in input pixels;
    norm float32 (N,) in input pixels.
    """

    def __init__(self, input_size: int, flip_permutation: list[int] | None, augment: Augment | None,
                 seed: int | None = None):
        self.input_size = input_size
        self.flip = np.asarray(flip_permutation) if flip_permutation is not None else None
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["image"])
        s = self.input_size
        images = np.empty((n, 3, s, s), dtype=np.float32)
        num_coords = len(batch["landmarks"][0])
        points_out = np.empty((n, num_coords), dtype=np.float32)
        norms = np.empty(n, dtype=np.float32)
        for i in range(n):
            img = decode_image(batch["image"][i])
            pts = np.asarray(batch["landmarks"][i], dtype=np.float64).reshape(-1, 2)
            crop = img.shape[0]
            m = resize_matrix(crop, s)
            if self.augment is not None:
                m = compose(random_similarity(self.rng, s, self.augment.max_rotation,
                                              self.augment.max_scale, self.augment.max_shift), m)
            scale = np.sqrt(abs(np.linalg.det(m[:, :2])))
            warped = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            pts = apply_affine(pts, m)
            if self.augment is not None and self.flip is not None and self.rng.random() < self.augment.flip_prob:
                warped = warped[:, ::-1]
                pts = pts[self.flip]
                pts[:, 0] = s - 1 - pts[:, 0]
            x = warped.astype(np.float32)
            if self.augment is not None:
                x = self._photometric(x)
            images[i] = (x.transpose(2, 0, 1) / 127.5) - 1.0
            points_out[i] = pts.reshape(-1)
            norms[i] = float(batch["norm"][i]) * scale
        return {"image": images, "landmarks": points_out, "norm": norms}

    def _photometric(self, x: np.ndarray) -> np.ndarray:
        a = self.augment
        gain = 1.0 + self.rng.uniform(-a.colour, a.colour, size=3)
        bias = self.rng.uniform(-a.colour, a.colour) * 64.0
        x = x * gain + bias
        if self.rng.random() < a.blur_prob:
            x = cv2.GaussianBlur(x, (0, 0), sigmaX=self.rng.uniform(0.5, 1.5))
        return np.clip(x, 0.0, 255.0)
