"""CNN-7, the second stage of the Wing loss paper's two-stage framework (Feng et al., CVPR 2018).

The CNN-6 stack (models/cnn6.py) on a 128x128x3 input with one more conv block, so that six blocks halve
the map 128 -> 2, and 64 kernels in the first layer. Ours where the sources we could read are silent: the
channels double from 64 and stop at 512 (64, 128, 256, 512, 512, 512), the same FC 1024 head as CNN-6.
It sees the faces re-cropped from CNN-6's predictions (data/two_stage.py).
"""

from __future__ import annotations

from facebench.models.cnn6 import PlainCNN

INPUT_SIZE = 128
CHANNELS = (64, 128, 256, 512, 512, 512)


class CNN7(PlainCNN):
    """The second stage of the two-stage framework: 128x128 in, 6 blocks of 64 to 512. ``width`` scales
    every block's channels (1: the paper's network, ~9 training images/s on 2 CPU cores; 0.25: ~100)."""

    def __init__(self, num_landmarks: int, batch_norm: bool = True, dropout: float = 0.0, width: float = 1.0):
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        channels = tuple(max(8, round(c * width)) for c in CHANNELS)
        super().__init__(num_landmarks, INPUT_SIZE, channels, batch_norm, dropout)
