"""SphereFace residual network: shapes, depth bookkeeping, residual structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facebench.papers.cosface.model import UNITS_PER_DEPTH, SphereFaceNet


@pytest.mark.parametrize("depth", sorted(UNITS_PER_DEPTH))
def test_depth_counts_conv_layers(depth):
    with torch.device("meta"):  # structure only: skip allocating and initialising ~10^7 weights
        net = SphereFaceNet(depth)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == depth
    assert sum(m.stride == (2, 2) for m in convs) == 4
    assert sum(isinstance(m, nn.PReLU) for m in net.modules()) == depth


def test_sphereface20_forward_112x96():
    net = SphereFaceNet(20).eval()
    assert net.fc.in_features == 512 * 7 * 6
    with torch.no_grad():
        out = net(torch.randn(2, 3, 112, 96))
    assert out.shape == (2, 512) and torch.isfinite(out).all()


def test_112x112_input_and_custom_embedding():
    net = SphereFaceNet(4, embedding_dim=128, input_size=(112, 112)).eval()
    assert net.fc.in_features == 512 * 7 * 7
    with torch.no_grad():
        assert net(torch.randn(1, 3, 112, 112)).shape == (1, 128)


def test_residual_units_have_no_bias_and_stage_convs_do():
    with torch.device("meta"):
        net = SphereFaceNet(20)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            assert (m.bias is not None) == (m.stride == (2, 2))


def test_rejects_bad_depth_and_shape():
    with pytest.raises(ValueError, match="depth must be one of"):
        SphereFaceNet(18)
    with pytest.raises(ValueError, match="input_size"):
        SphereFaceNet(20, input_size=(96, 112))
    with pytest.raises(ValueError, match=r"expects \(N, 3, 112, 96\)"):
        SphereFaceNet(4)(torch.zeros(1, 3, 112, 112))
