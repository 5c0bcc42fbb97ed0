"""ResNet-50 regressor: the standard network's size, output shape and start at the image centre."""

from __future__ import annotations

import torch

from facebench.papers.wing.resnet50 import ResNet50Regressor

# torchvision's / the paper's ResNet-50 has 25,557,032 parameters with its 1000-class layer (2048 * 1000 + 1000).
BACKBONE = 25_557_032 - (2048 * 1000 + 1000)


def test_parameter_count_is_resnet50_with_a_coordinate_head():
    model = ResNet50Regressor(68)
    assert sum(p.numel() for p in model.parameters()) == BACKBONE + 2048 * 136 + 136


def test_output_and_initial_prediction():
    model = ResNet50Regressor(19).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 224, 224) * 2 - 1)
    assert out.shape == (2, 38)
    assert torch.allclose(out, torch.full_like(out, 111.5), atol=1.0)
