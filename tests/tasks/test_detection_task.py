"""The MTCNN stage task's mirroring keeps box offsets and the five points on their pixels."""

from __future__ import annotations

import torch

from facebench.papers.mtcnn.task import FLIP_POINTS, DetectionTask


def _task() -> DetectionTask:
    task = DetectionTask.__new__(DetectionTask)  # augment_batch needs no files
    return task


def test_mirroring_moves_points_with_their_pixels_and_swaps_left_and_right():
    size, n = 48, 64
    points = torch.tensor([[10, 12], [36, 11], [24, 26], [14, 37], [33, 38]])  # pixel columns, rows
    image = torch.zeros(n, size, size, 3, dtype=torch.uint8)
    for k, (c, r) in enumerate(points):
        image[:, r, c] = 50 * (k + 1)
    fractions = (points.double() + 0.5) / size
    landmark = torch.cat([fractions[:, 0], fractions[:, 1]]).float().repeat(n, 1)
    box = torch.tensor([[0.2, 0.1, 0.05, -0.1]]).repeat(n, 1)  # face x1 0.2, x2 1.05 of the crop
    torch.manual_seed(0)
    out = _task().augment_batch({"image": image, "kind": torch.zeros(n, dtype=torch.long), "box_target": box,
                                 "landmark_target": landmark})
    pixels = torch.round(out["image"] * 128 + 127.5).to(torch.uint8).permute(0, 2, 3, 1)
    flipped = out["box_target"][:, 0] != box[:, 0]
    assert 0 < int(flipped.sum()) < n  # about half
    for i in range(n):
        for k in range(5):
            x, y = out["landmark_target"][i, k].item(), out["landmark_target"][i, 5 + k].item()
            c, r = int(x * size - 0.5 + 1e-4), int(y * size - 0.5 + 1e-4)
            source = FLIP_POINTS[k] if flipped[i] else k  # a mirrored face's image-left eye was its right eye
            assert pixels[i, r, c, 0].item() == 50 * (source + 1)
    # hand-computed: mirrored face spans 1 - 1.05 = -0.05 to 1 - 0.2 = 0.8 of the crop
    assert out["box_target"][flipped][0].tolist() == torch.tensor([-0.05, 0.1, -0.2, -0.1]).tolist()
