"""The heatmap task's geometry: targets sit on the landmarks, and decoding maps back to input pixels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facebench.config import HeatmapExperimentConfig, Paths, load_params, resolve_experiment
from facebench.papers.awing.heatmaps import input_to_heatmap, render_gaussian_heatmaps
from facebench.papers.awing.task import HEATMAP_STRIDE, HeatmapTask, PointsFromHeatmaps


class _Oracle(nn.Module):
    """Stands in for a perfect hourglass: returns the Gaussians of known points (no network)."""

    def __init__(self, points: torch.Tensor, size: int):
        super().__init__()
        self.points, self.size = points, size

    def forward(self, images: torch.Tensor) -> dict:
        maps = render_gaussian_heatmaps(input_to_heatmap(self.points, HEATMAP_STRIDE), self.size // HEATMAP_STRIDE)
        return {"heatmaps": [torch.zeros_like(maps), maps], "boundary": None}


def test_decoding_a_perfect_heatmap_recovers_the_points_in_input_pixels():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(3, 19, 2, generator=g) * 48 + 8  # input pixels of a 64x64 input, away from the border
    out = PointsFromHeatmaps(_Oracle(points, 64))(torch.zeros(3, 3, 64, 64))
    assert out.shape == (3, 38)
    # The released code's quarter-pixel refinement: at most 0.25 heatmap px per axis, i.e. 1 input px.
    err = (out.view(3, 19, 2) - points).abs()
    assert err.max() <= 0.25 * HEATMAP_STRIDE + 1e-5
    assert err.mean() < 0.7  # uniform sub-pixel offsets: expected 0.125 heatmap px = 0.5 input px
    # The last stack is the one decoded (the first one here is all zeros).
    assert not torch.allclose(out, torch.zeros_like(out))


def _task(smoke_project, **flags) -> HeatmapTask:
    params = load_params(smoke_project / "params.yaml", profile="smoke")
    params.heatmap_experiments["aflw_hg_test"] = HeatmapExperimentConfig(
        paper="awing", task="heatmaps", dataset="aflw", model="hourglass", loss="awing", **flags)
    exp = resolve_experiment(params, "aflw_hg_test", augment=False)
    return HeatmapTask(exp, Paths(root=smoke_project))


def test_targets_peak_on_the_augmented_landmarks(smoke_project):
    task = _task(smoke_project)
    size = task.input_size
    crops = torch.randint(0, 255, (4, task.crop_size, task.crop_size, 3), dtype=torch.uint8)
    pts = torch.rand(4, task.num_landmarks, 2) * task.crop_size * 0.6 + task.crop_size * 0.2
    batch = task.add_targets(task.augment_batch({"image": crops, "landmarks": pts.reshape(4, -1), "norm": torch.ones(4)}))
    assert batch["image"].shape == (4, 3, size, size)
    assert batch["heatmaps"].shape == (4, task.num_landmarks, size // 4, size // 4)
    assert batch["boundary"].shape == (4, 1, size // 4, size // 4)
    # Without augmentation the landmarks are only rescaled crop -> input; the targets peak on them.
    expected = (pts + 0.5) * size / task.crop_size - 0.5
    torch.testing.assert_close(batch["landmarks"].view(4, -1, 2), expected, atol=1e-4, rtol=0)
    decoded = PointsFromHeatmaps(_Oracle(batch["landmarks"].view(4, -1, 2), size))(batch["image"])
    assert (decoded.view(4, -1, 2) - expected).abs().max() <= 0.25 * HEATMAP_STRIDE + 1e-5


def test_ablation_flags_reach_the_model_and_the_loss(smoke_project):
    full = _task(smoke_project)
    bare = _task(smoke_project, weight_map=False, boundary=False, coordconv=False)
    assert full.build_loss().use_weight_map and not bare.build_loss().use_weight_map
    x = torch.zeros(2, 3, full.input_size, full.input_size)
    assert full.build_model()(x)["boundary"] is not None
    assert bare.build_model()(x)["boundary"] is None
    n_full = sum(p.numel() for p in full.build_model().parameters())
    n_bare = sum(p.numel() for p in bare.build_model().parameters())
    assert n_bare < n_full  # no coordinate channels, no boundary output
    batch = bare.add_targets(bare.augment_batch({
        "image": torch.zeros(2, bare.crop_size, bare.crop_size, 3, dtype=torch.uint8),
        "landmarks": torch.full((2, 2 * bare.num_landmarks), 60.0), "norm": torch.ones(2)}))
    assert "heatmaps" in batch and "boundary" not in batch


@pytest.mark.gpu
def test_targets_on_cuda_match_the_cpu():
    from facebench.papers.awing.heatmaps import render_boundary_heatmap

    pts = torch.rand(8, 68, 2) * 12 + 2
    for fn in (lambda p: render_gaussian_heatmaps(p, 16), lambda p: render_boundary_heatmap(p, size=16)):
        torch.testing.assert_close(fn(pts.cuda()).cpu(), fn(pts), atol=1e-5, rtol=1e-5)
