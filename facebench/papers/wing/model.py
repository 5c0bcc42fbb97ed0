"""CNN-6 and CNN-7: the Wing loss paper's landmark regression networks (Feng et al., CVPR 2018, Sec. 3).

CNN-6, the plain network of the loss comparisons:

Input 64x64x3; five blocks of 3x3 convolution (32, 64, 128, 256, 512 channels) + ReLU + 2x2 max
pooling halve the map 64 -> 2; a fully connected layer of 1024 units with ReLU; an output layer
of 2L numbers. The outputs are landmark coordinates in pixels of the 64x64 input, as in the
author's released model (FengZhenhua/Wing-Loss demo.m rescales the raw outputs by image size /
input size; issue #6: "values between [1, 64]"), so the losses see pixel errors and Wing's
w=10, eps=2 keep their meaning. The author's model orders outputs x-block then y-block and
feeds [0, 1] images; ours are interleaved and [-1, 1], so its weights would not drop in as is.

Our choices where the sources we could read are silent (the paper's own text was not reachable
here; a third-party summary confirms 5 x conv/pool/ReLU + 2 FC, 64x64x3 in, 2L out): BatchNorm
after each convolution (``batch_norm=True``; False gives the plain conv/ReLU/pool stack),
optional dropout before the output layer, 'same' padding, the head initialised at the centre.

CNN-7, the second stage of the two-stage framework, is the CNN-6 stack on a 128x128x3 input with one
more conv block, so that six blocks halve the map 128 -> 2, and 64 kernels in the first layer. Ours where
the sources we could read are silent: the channels double from 64 and stop at 512 (64, 128, 256, 512, 512,
512), the same FC 1024 head as CNN-6. It sees the faces re-cropped from CNN-6's predictions (two_stage.py).

``PlainCNN`` is the stack at any input size and channel list.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SIZE = 64  # CNN-6
CHANNELS = (32, 64, 128, 256, 512)
CNN7_INPUT_SIZE = 128
CNN7_CHANNELS = (64, 128, 256, 512, 512, 512)
FC_UNITS = 1024


def conv_block(in_ch: int, out_ch: int, batch_norm: bool) -> nn.Sequential:
    """3x3 conv ('same' padding) [+ BN] + ReLU + 2x2 max pool, which halves the map."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
    return nn.Sequential(*layers)


class PlainCNN(nn.Module):
    """Images (N, 3, S, S), float32 scaled to [-1, 1] by the data pipeline
    (facebench.data.transforms.LandmarkBatchTransform, on the training device) -> coordinates (N, 2L) in input pixels,
    interleaved x0, y0, x1, y1, ... with 0-based pixel centres (so the image centre is (S - 1) / 2).
    """

    def __init__(self, num_landmarks: int, input_size: int, channels: tuple[int, ...], batch_norm: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        if num_landmarks < 1:
            raise ValueError(f"num_landmarks must be positive, got {num_landmarks}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_landmarks, self.input_size = num_landmarks, input_size
        chans = (3, *channels)
        self.features = nn.Sequential(*[conv_block(a, b, batch_norm) for a, b in zip(chans[:-1], chans[1:])])
        side = input_size // 2 ** len(channels)  # 2
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * side * side, FC_UNITS), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(FC_UNITS, 2 * num_landmarks)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # Start from "every landmark at the image centre": the first steps then see errors of
        # a face's size (tens of pixels), not of the raw output scale.
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.constant_(self.head.bias, (self.input_size - 1) / 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        if x.dim() != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"{type(self).__name__} expects (N, 3, {s}, {s}) images, got {tuple(x.shape)}")
        return self.head(self.drop(self.fc(self.features(x))))


class CNN6(PlainCNN):
    """The first stage, and the network of the loss comparisons: 64x64 in, 5 blocks of 32 to 512."""

    def __init__(self, num_landmarks: int, batch_norm: bool = True, dropout: float = 0.0):
        super().__init__(num_landmarks, INPUT_SIZE, CHANNELS, batch_norm, dropout)


class CNN7(PlainCNN):
    """The second stage of the two-stage framework: 128x128 in, 6 blocks of 64 to 512. ``width`` scales
    every block's channels (1: the paper's network, ~9 training images/s on 2 CPU cores; 0.25: ~100)."""

    def __init__(self, num_landmarks: int, batch_norm: bool = True, dropout: float = 0.0, width: float = 1.0):
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        channels = tuple(max(8, round(c * width)) for c in CNN7_CHANNELS)
        super().__init__(num_landmarks, CNN7_INPUT_SIZE, channels, batch_norm, dropout)
