"""Stacked hourglass with CoordConv and boundary head: shapes, coordinate channels, gradients (tiny configs)."""

from __future__ import annotations

import pytest
import torch

from facebench.papers.awing.loss import make_heatmap_loss, stacked_loss
from facebench.papers.awing.model import AWingHourglass, CoordConv2d, coordinate_channels


def tiny(**kw) -> AWingHourglass:
    torch.manual_seed(0)
    cfg = dict(num_landmarks=5, num_stacks=2, features=32, input_size=64, depth=2)
    cfg.update(kw)
    return AWingHourglass(**cfg)


@pytest.mark.parametrize("stacks", [1, 2])
def test_output_shapes_and_one_output_per_stack(stacks):
    model = tiny(num_stacks=stacks)
    out = model(torch.randn(2, 3, 64, 64))
    assert len(out["heatmaps"]) == stacks and len(out["boundary"]) == stacks
    assert all(h.shape == (2, 5, 16, 16) for h in out["heatmaps"])
    assert all(b.shape == (2, 1, 16, 16) for b in out["boundary"])


def test_no_boundary_and_no_coordconv():
    model = tiny(boundary=False, coordconv=False)
    out = model(torch.randn(1, 3, 64, 64))
    assert out["boundary"] is None
    assert [h.shape for h in out["heatmaps"]] == [(1, 5, 16, 16)] * 2
    assert not any(isinstance(m, CoordConv2d) for m in model.modules())


def test_depth_four_hourglass_runs_at_64():
    model = tiny(num_stacks=1, depth=4)  # 16 -> 8 -> 4 -> 2 -> 1 at the bottom
    assert model(torch.randn(2, 3, 64, 64))["heatmaps"][0].shape == (2, 5, 16, 16)  # BN needs N > 1 at 1x1


def test_coordinate_channels_are_ramps():
    c = coordinate_channels(2, 4, 5, with_r=True)
    assert c.shape == (2, 3, 4, 5)
    x_ramp = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
    y_ramp = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0])
    assert torch.allclose(c[:, 0], x_ramp.expand(2, 4, 5))  # x varies along columns only
    assert torch.allclose(c[:, 1], y_ramp[:, None].expand(2, 4, 5))  # y along rows only
    r = torch.sqrt(c[:, 0] ** 2 + c[:, 1] ** 2)
    assert torch.allclose(c[:, 2], r / r.max())
    assert c[:, 2].max().item() == pytest.approx(1.0)


def test_coordconv_concatenates_coordinates_and_boundary_coordinates():
    conv = CoordConv2d(3, 4, 1, with_r=False, with_boundary=True)
    x = torch.randn(1, 3, 4, 4)
    boundary = torch.zeros(1, 1, 4, 4)
    boundary[0, 0, 1, 2] = 0.9  # on
    boundary[0, 0, 3, 0] = 0.04  # below the 0.05 threshold: off
    boundary[0, 0, 0, 0] = 3.0  # clamped to 1: on
    z = conv.add_coords(x, boundary)
    assert z.shape == (1, 3 + 2 + 2, 4, 4)
    assert torch.equal(z[:, :3], x)
    ramps = coordinate_channels(1, 4, 4, with_r=False)
    assert torch.equal(z[:, 3:5], ramps)
    on = torch.zeros(1, 1, 4, 4)
    on[0, 0, 1, 2] = on[0, 0, 0, 0] = 1
    assert torch.equal(z[:, 5:7], ramps * on)
    assert conv(x, boundary).shape == (1, 4, 4, 4)
    assert conv.conv.in_channels == 7
    with pytest.raises(ValueError, match="boundary"):
        conv(x)


def test_first_stack_has_no_boundary_channels_later_ones_do():
    model = tiny(num_stacks=3)
    assert [m.with_boundary for m in model.stack_in] == [False, True, True]
    assert model.stem_conv.with_r and model.stem_conv.conv.in_channels == 3 + 3


def test_gradients_reach_every_parameter():
    model = tiny()
    x = torch.randn(2, 3, 64, 64)
    target = torch.rand(2, 6, 16, 16)
    out = model(x)
    preds = [torch.cat([h, b], dim=1) for h, b in zip(out["heatmaps"], out["boundary"])]
    loss = stacked_loss(make_heatmap_loss("awing", use_weight_map=True), preds, target)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0


def test_bad_configs_are_refused():
    with pytest.raises(ValueError):
        AWingHourglass(5, features=40)
    with pytest.raises(ValueError):
        AWingHourglass(5, input_size=100)
    with pytest.raises(ValueError, match="expects"):
        tiny()(torch.randn(1, 3, 32, 32))
