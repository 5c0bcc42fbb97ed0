"""ResNet-50 as a landmark coordinate regressor, the Wing loss paper's deeper baseline (He et al., CVPR 2016).

The standard 50-layer bottleneck network (stem 7x7/2 conv + 3x3/2 max pool, stages of 3, 4, 6, 3
bottlenecks of widths 64, 128, 256, 512 with expansion 4, global average pooling) with the classifier
replaced by a linear layer of 2L coordinates in pixels of the 224x224 input, interleaved x0, y0, ...,
started at the image centre like CNN-6. Written here (torchvision does not install beside this torch);
no ImageNet weights are loaded (no downloads at run time): the paper fine-tunes a pre-trained model,
so ours trains from scratch and is expected to need more epochs for the same error.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SIZE = 224
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride of the first)
EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand, each with BN; identity or projected shortcut."""

    def __init__(self, in_ch: int, width: int, stride: int):
        super().__init__()
        out_ch = width * EXPANSION
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet50Regressor(nn.Module):
    """Images (N, 3, 224, 224) in [-1, 1] -> coordinates (N, 2L) in input pixels."""

    def __init__(self, num_landmarks: int):
        super().__init__()
        if num_landmarks < 1:
            raise ValueError(f"num_landmarks must be positive, got {num_landmarks}")
        self.num_landmarks, self.input_size = num_landmarks, INPUT_SIZE
        layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
                                   nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1)]
        in_ch = 64
        for width, blocks, stride in STAGES:
            for i in range(blocks):
                layers.append(Bottleneck(in_ch, width, stride if i == 0 else 1))
                in_ch = width * EXPANSION
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(in_ch, 2 * num_landmarks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # each residual branch starts as zero, so the network starts near identity
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.body[-1].weight)
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.constant_(self.head.bias, (INPUT_SIZE - 1) / 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"ResNet50Regressor expects (N, 3, {INPUT_SIZE}, {INPUT_SIZE}) images, got {tuple(x.shape)}")
        return self.head(self.features(x))
