"""The residual CNN of SphereFace (Liu et al., CVPR 2017, Table 2), also CosFace's 64-layer trunk.

Four stages of 64/128/256/512 channels. Each starts with a 3x3 stride-2 convolution + PReLU that
halves the map, followed by residual units of two 3x3 stride-1 convolutions + PReLU added back to
their input (no BatchNorm anywhere). After the last stage a fully connected layer maps the
512·7·6 map (112x96 input) to the 512-d face embedding, which is the output: the classification
head (facebench.papers.cosface.loss) sits on top.

Units per stage by depth (depth = number of conv layers = 4 + 2·units):
4: 0/0/0/0 and 10: 0/1/2/0 (the paper's Table 2; public PyTorch ports use the same lists);
20: 1/2/4/1, 36: 2/4/8/2, 64: 3/8/16/3 (the released generator, wy1iu/sphereface
train/code/make_spherenet.py). CosFace (Wang et al. 2018) trains the 64-layer network with LMCL.

Details from the released prototxt (train/code/sphereface_model.prototxt): PReLU is per channel;
the stride-2 convolutions have learnt biases and xavier weights; the residual convolutions have
Gaussian(0, 0.01) weights and a bias frozen at 0 (lr_mult 0), i.e. no bias, which is what we build.
Inputs are aligned crops with pixels (x − 127.5)/128.
"""

from __future__ import annotations

import torch
from torch import nn

STAGE_CHANNELS = (64, 128, 256, 512)
UNITS_PER_DEPTH: dict[int, tuple[int, int, int, int]] = {
    4: (0, 0, 0, 0),
    10: (0, 1, 2, 0),
    20: (1, 2, 4, 1),
    36: (2, 4, 8, 2),
    64: (3, 8, 16, 3),
}
INPUT_SIZES = ((112, 96), (112, 112))  # (H, W): SphereFace/CosFace crops, InsightFace crops


class ResidualUnit(nn.Module):
    """x + PReLU(conv(PReLU(conv(x)))), both 3x3, stride 1, no bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.act1 = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.act2 = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act2(self.conv2(self.act1(self.conv1(x))))


def make_stage(in_ch: int, out_ch: int, units: int) -> nn.Sequential:
    """3x3 stride-2 conv (with bias) + PReLU, then ``units`` residual units."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1), nn.PReLU(out_ch),
                         *[ResidualUnit(out_ch) for _ in range(units)])


class SphereFaceNet(nn.Module):
    """Aligned face crops (N, 3, H, W), (H, W) in ``INPUT_SIZES`` -> embeddings (N, embedding_dim)."""

    def __init__(self, depth: int = 20, embedding_dim: int = 512, input_size: tuple[int, int] = (112, 96)):
        super().__init__()
        if depth not in UNITS_PER_DEPTH:
            raise ValueError(f"SphereFace depth must be one of {sorted(UNITS_PER_DEPTH)}, got {depth}")
        input_size = tuple(input_size)
        if input_size not in INPUT_SIZES:
            raise ValueError(f"input_size (H, W) must be one of {INPUT_SIZES}, got {input_size}")
        self.depth, self.embedding_dim, self.input_size = depth, embedding_dim, input_size
        chans = (3, *STAGE_CHANNELS)
        self.stages = nn.Sequential(*[make_stage(a, b, u) for a, b, u in
                                      zip(chans[:-1], chans[1:], UNITS_PER_DEPTH[depth])])
        h, w = input_size
        for _ in STAGE_CHANNELS:  # each stride-2 conv with padding 1: n -> ceil(n / 2)
            h, w = (h + 1) // 2, (w + 1) // 2
        self.fc = nn.Linear(STAGE_CHANNELS[-1] * h * w, embedding_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m.stride == (2, 2):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
                else:
                    nn.init.normal_(m.weight, std=0.01)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != self.input_size:
            raise ValueError(f"SphereFaceNet expects (N, 3, {self.input_size[0]}, {self.input_size[1]}) "
                             f"images, got {tuple(x.shape)}")
        return self.fc(torch.flatten(self.stages(x), 1))
