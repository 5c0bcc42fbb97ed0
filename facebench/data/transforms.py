"""Geometric warps and photometric augmentation of prepared crops, batched in torch on the training device.

Why on the device: a GPU trains CNN-6 at tens of thousands of images/s, far more than a few CPU
cores can decode and warp one crop at a time. So Ray Data only streams raw uint8 crops (they are
stored raw in Parquet) and the whole batch is warped with one ``grid_sample`` where the model runs.

Geometry uses 0-based pixel centres throughout: resizing a crop of side S to side s maps
x -> (x + 0.5) * s / S - 0.5, and a horizontal flip maps x -> s - 1 - x. That is OpenCV's
``warpAffine`` convention, and ``grid_sample(align_corners=False)`` samples the same points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


# --- 2x3 affines on points (numpy, float64) -------------------------------------------------------
def resize_matrix(src_size: int, dst_size: int) -> np.ndarray:
    """2x3 affine taking pixel centres of a src_size square to a dst_size square."""
    s = dst_size / src_size
    return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]], dtype=np.float64)


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(L, 2) points through a 2x3 affine."""
    return points @ matrix[:, :2].T + matrix[:, 2]


# --- batched affines (torch) ----------------------------------------------------------------------
def _homogeneous(m: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) -> (N, 3, 3)."""
    last = torch.tensor([0.0, 0.0, 1.0], dtype=m.dtype, device=m.device).expand(m.shape[0], 1, 3)
    return torch.cat([m, last], dim=1)


def compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched affine a after b, both (N, 2, 3)."""
    return (_homogeneous(a) @ _homogeneous(b))[:, :2]


def transform_points(points: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """(N, L, 2) points through (N, 2, 3) affines."""
    return points @ matrices[:, :, :2].transpose(1, 2) + matrices[:, None, :, 2]


def invert_affine(m: torch.Tensor) -> torch.Tensor:
    """Inverse of (N, 2, 3) affines, in closed form (torch.linalg.inv would wait for the GPU to check)."""
    a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    det = a * d - b * c
    inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], 1) / det[:, None, None]
    return torch.cat([inv, -(inv @ m[:, :, 2:])], dim=2)


def warp_crops(images: torch.Tensor, matrices: torch.Tensor, out_size: int) -> torch.Tensor:
    """Warp uint8 crops (N, H, W, 3) by affines mapping crop pixels to output pixels -> float (N, 3, s, s) in 0..255.

    Bilinear, border pixels replicated (OpenCV's BORDER_REPLICATE), so a rotated face never gets
    black corners that the network could learn the rotation from.
    """
    n, h, w, _ = images.shape
    x = images.permute(0, 3, 1, 2).float()
    inverse = invert_affine(matrices.to(torch.float32))  # output -> crop pixels
    centres = torch.arange(out_size, dtype=torch.float32, device=images.device)
    gy, gx = torch.meshgrid(centres, centres, indexing="ij")
    grid = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(1, -1, 3)  # (1, s*s, 3)
    src = grid @ inverse.transpose(1, 2)  # (N, s*s, 2) crop pixel coordinates
    scale = torch.tensor([2.0 / w, 2.0 / h], device=images.device)
    norm = (src + 0.5) * scale - 1.0  # pixel centre x -> (2x + 1) / W - 1, as align_corners=False reads it
    return F.grid_sample(x, norm.reshape(n, out_size, out_size, 2), mode="bilinear", padding_mode="border",
                         align_corners=False)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int | None = None) -> torch.Tensor:
    """Per-sample Gaussian blur of (N, C, H, W); sigma (N,), 0 leaves a sample unchanged.

    One grouped separable convolution for the whole batch; edges reflect like OpenCV's default.
    """
    n, c, h, w = x.shape
    if radius is None:  # from the data: costs a device sync, so training passes the largest sigma's radius
        radius = int(math.ceil(3.0 * float(sigma.max())))
    if radius == 0:
        return x
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    safe = sigma.clamp(min=1e-6)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None] / safe) ** 2)
    kernel = torch.where(sigma[:, None] > 0, kernel, (offsets[None] == 0).float())
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, k)
    y = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=n * c)
    y = F.conv2d(y, kernel[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


BLUR_SIGMA = (0.5, 1.5)
BLUR_RADIUS = int(math.ceil(3 * BLUR_SIGMA[1]))


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


def random_similarity(n: int, size: int, augment: Augment, device: torch.device,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, 2, 3) random rotations (degrees), scales (relative) and shifts (fraction of size) about the centre."""
    def uniform(lo: float, hi: float, shape: tuple[int, ...] = (n,)) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=generator, device=device)

    angle = torch.deg2rad(uniform(-augment.max_rotation, augment.max_rotation))
    scale = 1.0 + uniform(-augment.max_scale, augment.max_scale)
    shift = uniform(-augment.max_shift, augment.max_shift, (n, 2)) * size
    c = (size - 1) / 2.0
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    # rotate by +angle (counter-clockwise on screen, as cv2.getRotationMatrix2D) about (c, c)
    row0 = torch.stack([cos, sin, c - cos * c - sin * c + shift[:, 0]], dim=1)
    row1 = torch.stack([-sin, cos, c + sin * c - cos * c + shift[:, 1]], dim=1)
    return torch.stack([row0, row1], dim=1)


class LandmarkBatchTransform:
    """Raw crops and landmarks -> network tensors, on whatever device the batch is on.

    Input: images uint8 (N, H, W, 3) RGB, landmarks float (N, 2L) in crop pixels, norm (N,).
    Output: image float32 (N, 3, s, s) in [-1, 1]; landmarks float32 (N, 2L) in input pixels;
    norm float32 (N,) in input pixels. With ``augment`` None it only resizes (the test-time path).
    """

    def __init__(self, input_size: int, flip_permutation: list[int] | None, augment: Augment | None,
                 generator: torch.Generator | None = None):
        self.input_size = input_size
        self.flip = list(flip_permutation) if flip_permutation is not None else None
        self.augment = augment
        self.generator = generator

    def __call__(self, images: torch.Tensor, landmarks: torch.Tensor,
                 norm: torch.Tensor) -> dict[str, torch.Tensor]:
        n, h, _, _ = images.shape
        s, device, a = self.input_size, images.device, self.augment
        base = torch.as_tensor(resize_matrix(h, s), dtype=torch.float32, device=device).expand(n, 2, 3)
        matrices = base
        points = landmarks.float().reshape(n, -1, 2)
        flipped = torch.zeros(n, dtype=torch.bool, device=device)
        if a is not None:
            matrices = compose(random_similarity(n, s, a, device, self.generator), base)
            if self.flip is not None:
                flipped = self._rand(n, device=device) < a.flip_prob
                mirror = torch.tensor([[-1.0, 0.0, s - 1.0], [0.0, 1.0, 0.0]], device=device).expand(n, 2, 3)
                matrices = torch.where(flipped[:, None, None], compose(mirror, matrices), matrices)
        x = warp_crops(images, matrices, s)
        points = transform_points(points, matrices)
        if self.flip is not None:  # no `if flipped.any()`: that would wait for the device every batch
            points = torch.where(flipped[:, None, None], points[:, self.flip], points)
        if a is not None:
            x = self._photometric(x)
        det = matrices[:, 0, 0] * matrices[:, 1, 1] - matrices[:, 0, 1] * matrices[:, 1, 0]
        scale = torch.sqrt(torch.abs(det))
        return {"image": x / 127.5 - 1.0, "landmarks": points.reshape(n, -1),
                "norm": norm.float() * scale}

    def _rand(self, *shape: int, device: torch.device) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=device)

    def _photometric(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel gain, per-sample brightness shift, and a Gaussian blur on a random subset."""
        a, n, d = self.augment, x.shape[0], x.device
        gain = 1.0 + a.colour * (2.0 * self._rand(n, 3, 1, 1, device=d) - 1.0)
        bias = a.colour * 64.0 * (2.0 * self._rand(n, 1, 1, 1, device=d) - 1.0)
        x = x * gain + bias
        blurred = self._rand(n, device=d) < a.blur_prob
        lo, hi = BLUR_SIGMA
        sigma = torch.where(blurred, lo + (hi - lo) * self._rand(n, device=d), torch.zeros(n, device=d))
        return gaussian_blur(x, sigma, radius=BLUR_RADIUS).clamp(0.0, 255.0)
