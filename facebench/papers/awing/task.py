"""Heatmap-regression landmarks (Adaptive Wing paper): targets, the step and the prediction.

The data, the augmentation and the evaluation are those of coordinate regression
(``LandmarkTask``): the same Parquet crops, warped on the training device, and NME computed in the
prepared crop's pixels, so heatmap rows stand beside the Wing rows in one table. What changes:

* targets: after augmentation, a Gaussian per landmark (sigma in heatmap pixels) and one boundary
  map of the dataset's facial curves, rendered on the device at input_size / 4;
* the network: the stacked hourglass (``papers/awing/model.py``) with CoordConv and the boundary
  head, each switchable for the paper's ablation; every stack is supervised;
* the loss: a per-pixel loss (MSE, L1, Wing or Adaptive Wing) with or without the weighted loss
  map, on the landmark heatmaps and on the boundary map, the two means added, the boundary's times
  ``boundary_weight`` (our choice: the authors' release has no training code; the default 1 weighs the
  one boundary map like all L landmark maps together, 1/L like one of them: the claims study tries both);
* prediction: the last stack's heatmaps, argmax with the released code's quarter-pixel shift,
  mapped back to input pixels. No test-time flip: we could not confirm that the paper uses one.
"""

from __future__ import annotations

import torch
from torch import nn

from facebench.config import HeatmapSettings, Paths, ResolvedExperiment
from facebench.papers.awing.heatmaps import (
    decode_heatmaps, heatmap_to_input, input_to_heatmap, render_boundary_heatmap, render_gaussian_heatmaps,
)
from facebench.papers.awing.loss import make_heatmap_loss, stacked_loss
from facebench.papers.wing.task import LandmarkTask, ScaledLoss
from facebench.train.task import Description

HEATMAP_STRIDE = 4  # the hourglass stem halves twice: input 256 -> heatmaps 64

# params.yaml loss key -> per-pixel loss of papers/awing/loss.py. The "hm_" keys keep the heatmap
# losses apart from the coordinate losses of the same name (whose parameters are in pixels).
HEATMAP_LOSSES = {"hm_mse": "mse", "hm_l1": "l1", "hm_wing": "wing", "awing": "awing"}


def variant(settings: HeatmapSettings) -> str:
    """The ablation axes a run turned off ("no weight map, no boundary"; "" for the full model)."""
    return ", ".join(f"no {name}" for name, on in (("weight map", settings.weight_map),
                                                   ("boundary", settings.boundary),
                                                   ("CoordConv", settings.coordconv)) if not on)


class HeatmapTask(LandmarkTask):
    def __init__(self, exp: ResolvedExperiment, paths: Paths):
        if exp.heatmap is None:
            raise ValueError(f"{exp.key}: a heatmap experiment needs the profile's `heatmaps` settings")
        if exp.loss not in HEATMAP_LOSSES:
            raise ValueError(f"{exp.key}: loss {exp.loss!r} is not a heatmap loss; use one of {sorted(HEATMAP_LOSSES)}")
        super().__init__(exp, paths, input_size=exp.heatmap.input_size)
        self.settings = exp.heatmap
        self.heatmap_size = self.input_size // HEATMAP_STRIDE

    def describe(self) -> Description:
        off = variant(self.settings)
        return Description(label="Hourglass" + (f", {off}" if off else ""), variant=off,
                           params={"heatmap": self.settings.model_dump(mode="json")})

    def build_model(self) -> nn.Module:
        from facebench.papers.awing.model import AWingHourglass

        s = self.settings
        return AWingHourglass(self.num_landmarks, num_stacks=s.stacks, features=s.features, boundary=s.boundary,
                              coordconv=s.coordconv, input_size=s.input_size, depth=s.depth)

    def build_loss(self) -> nn.Module:
        params = dict(self.exp.loss_params)
        weight = float(params.pop("weight", 1.0))
        loss = make_heatmap_loss(HEATMAP_LOSSES[self.exp.loss], use_weight_map=self.settings.weight_map, **params)
        return ScaledLoss(loss, weight) if weight != 1.0 else loss

    def add_targets(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Network input with landmarks in input pixels -> the same plus Gaussian and boundary maps."""
        out = dict(batch)
        points = input_to_heatmap(out["landmarks"].view(len(out["landmarks"]), -1, 2), stride=HEATMAP_STRIDE)
        out["heatmaps"] = render_gaussian_heatmaps(points, self.heatmap_size, sigma=self.settings.sigma)
        if self.settings.boundary:
            out["boundary"] = render_boundary_heatmap(points, size=self.heatmap_size, sigma=self.settings.sigma)
        return out

    def training_step(self, model: nn.Module, loss_fn: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(batch["image"])
        loss = stacked_loss(loss_fn, [h.float() for h in out["heatmaps"]], batch["heatmaps"])
        if out["boundary"] is not None:
            boundary = stacked_loss(loss_fn, [b.float() for b in out["boundary"]], batch["boundary"])
            weight = self.settings.boundary_weight
            loss = loss + (boundary if weight == 1.0 else weight * boundary)
        return loss

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return PointsFromHeatmaps(model)(images)

    def inference_model(self, model: nn.Module) -> nn.Module:
        return PointsFromHeatmaps(model)


class PointsFromHeatmaps(nn.Module):
    """Hourglass + decoding: images -> (N, 2L) coordinates in input pixels, like the regression models,
    so a logged heatmap model is used the same way as CNN-6."""

    def __init__(self, hourglass: nn.Module):
        super().__init__()
        self.hourglass = hourglass

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        heatmaps = self.hourglass(images)["heatmaps"][-1].float()
        points = heatmap_to_input(decode_heatmaps(heatmaps, refine="quarter"), stride=HEATMAP_STRIDE)
        return points.reshape(images.shape[0], -1)
