"""CNN-6: shapes, parameter count from the layer sizes, gradients, and that it can fit a tiny batch."""

from __future__ import annotations

import pytest
import torch

from facebench.papers.wing.loss import wing_loss
from facebench.papers.wing.model import CNN6


def expected_params(num_landmarks: int, batch_norm: bool) -> int:
    """Counted by hand from the paper's layer sizes: 3x3 convs 3->32->64->128->256->512, each map
    halved by pooling (64 -> 2, so 512*2*2 = 2048 features), FC 2048->1024, output 1024->2L."""
    chans = [3, 32, 64, 128, 256, 512]
    total = 0
    for cin, cout in zip(chans[:-1], chans[1:]):
        total += 9 * cin * cout          # kernel
        total += 2 * cout if batch_norm else cout  # BN gamma+beta (conv bias dropped) or conv bias
    total += 2048 * 1024 + 1024          # FC 1024
    total += 1024 * 2 * num_landmarks + 2 * num_landmarks
    return total


@pytest.mark.parametrize("num_landmarks", [19, 68])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_output_shape_and_param_count(num_landmarks, batch_norm):
    model = CNN6(num_landmarks, batch_norm=batch_norm)
    out = model(torch.zeros(3, 3, 64, 64))
    assert out.shape == (3, 2 * num_landmarks)
    assert sum(p.numel() for p in model.parameters()) == expected_params(num_landmarks, batch_norm)


def test_param_count_written_out():
    # 68 points with BN: 864+64 + 18432+128 + 73728+256 + 294912+512 + 1179648+1024
    #                    + 2098176 + (139264 + 136) = 3807144
    assert expected_params(68, True) == 3_807_144
    assert sum(p.numel() for p in CNN6(68).parameters()) == 3_807_144


def test_initial_prediction_is_the_image_centre():
    model = CNN6(5).eval()
    out = model(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert torch.allclose(out, torch.full_like(out, 31.5), atol=0.5)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    model = CNN6(19, dropout=0.2)
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    loss = wing_loss(model(x), torch.rand(4, 38) * 63)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = CNN6(5)
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    target = 10 + torch.rand(4, 10) * 44
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = wing_loss(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_landmarks"):
        CNN6(0)
    with pytest.raises(ValueError, match="dropout"):
        CNN6(5, dropout=1.0)
    with pytest.raises(ValueError, match="64"):
        CNN6(5)(torch.zeros(1, 3, 128, 128))


def test_cnn7_is_six_blocks_from_64_channels_on_128_pixels():
    from facebench.papers.wing.model import CNN7

    model = CNN7(19)
    chans = [3, 64, 128, 256, 512, 512, 512]  # by hand: 9 k_in k_out + BN (2 k_out) per block, 128 -> 2
    want = sum(9 * a * b + 2 * b for a, b in zip(chans[:-1], chans[1:])) + 2048 * 1024 + 1024 + 1024 * 38 + 38
    assert sum(p.numel() for p in model.parameters()) == want
    out = model.eval()(torch.zeros(2, 3, 128, 128))
    assert out.shape == (2, 38) and torch.allclose(out, torch.full_like(out, 63.5), atol=0.5)
    narrow = CNN7(19, width=0.25)  # the CPU profile's: 16 .. 128 channels
    assert [m.out_channels for m in narrow.modules() if isinstance(m, torch.nn.Conv2d)] == [16, 32, 64, 128, 128, 128]
