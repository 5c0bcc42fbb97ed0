"""MTCNN's three networks, P-Net, R-Net and O-Net (Zhang et al., "Joint Face Detection and Alignment
using Multitask Cascaded Convolutional Networks", IEEE SPL 2016, Fig. 2).

The layer shapes and module names follow the authors' released Caffe model as converted to PyTorch state
dicts (``../shared/models/mtcnn-published``), so ``load_state_dict`` takes those files directly:

- P-Net (fully convolutional, 12x12 window, stride 2): conv 3x3x10, PReLU, max-pool 2/2, conv 3x3x16, PReLU,
  conv 3x3x32, PReLU, then 1x1 heads: face classification (2) and box regression (4).
- R-Net (24x24): conv 3x3x28, PReLU, pool 3/2, conv 3x3x48, PReLU, pool 3/2, conv 2x2x64, PReLU,
  fc 128, PReLU, heads 2 + 4.
- O-Net (48x48): conv 3x3x32, PReLU, pool 3/2, conv 3x3x64, PReLU, pool 3/2, conv 3x3x64, PReLU, pool 2/2,
  conv 2x2x128, PReLU, fc 256, PReLU, heads 2 + 4 + 10 (landmarks).

All pooling is Caffe's ceil mode. The heads give (non-face, face) logits; we return the face probability.

Conventions of the published weights, handled here so callers pass ordinary (N, 3, H, W) RGB images
normalised as (x - 127.5) / 128:

- The Caffe model was trained on transposed images (MATLAB's column-major arrays). The converted convolution
  kernels are already spatially transposed, so the convolutions run on the image as it is. Checked on the
  astronaut test image: with the image as it is and the flatten below, R-Net / O-Net score a face crop
  0.998 / 1.000 and four background crops <= 0.05, and O-Net's landmarks land on eyes, nose and mouth;
  transposing the input lowers the face scores (0.977 / 0.960) and scrambles the landmarks, and Caffe's
  own (C, H, W) flatten lets background through (R-Net 0.80-0.91).
- What the conversion leaves behind is the flatten order in front of the first fully connected layer: it
  expects the (N, C, H, W) map flattened as (N, W, H, C) (``_flatten_whc``).
- O-Net's landmark head gives five x then five y, as fractions of the box width/height; we return them as
  (N, 5, 2) (x, y) pairs in the order left eye, right eye, nose, left mouth corner, right mouth corner
  (image left first).
- Box offsets (dx1, dy1, dx2, dy2) are fractions of the box width/height added to (x1, y1, x2, y2).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

PNET_SIZE, RNET_SIZE, ONET_SIZE = 12, 24, 48


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, W*H*C): the order the published fully connected weights were trained with."""
    return x.permute(0, 3, 2, 1).flatten(1)


class MaxPool2x2Ceil(nn.MaxPool2d):
    """``nn.MaxPool2d(2, 2, ceil_mode=True)`` (P-Net's pooling). Without autograd (inference) it takes the
    maximum of strided views, pairs of rows then pairs of columns, an odd last row or column kept as it is
    (ceil mode's window there holds it alone): the same values (a maximum rounds nothing), about twice as
    fast on a CPU's channels-last maps as the pooling kernel, which also computes indices. With autograd it
    is the pooling layer itself, so training gradients are unchanged."""

    def __init__(self) -> None:
        super().__init__(2, 2, ceil_mode=True)

    @staticmethod
    def _pairs(first: torch.Tensor, second: torch.Tensor, dim: int) -> torch.Tensor:
        """Element-wise maximum of ``first`` (n rows along ``dim``) and ``second`` (n or n - 1 rows)."""
        if first.shape[dim] == second.shape[dim]:
            return torch.maximum(first, second)
        out = torch.empty_like(first)
        paired = second.shape[dim]
        torch.maximum(first.narrow(dim, 0, paired), second, out=out.narrow(dim, 0, paired))
        out.narrow(dim, paired, 1).copy_(first.narrow(dim, paired, 1))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() and x.requires_grad) or x.numel() < 1 << 15:  # small maps: the kernel is faster
            return super().forward(x)
        rows = self._pairs(x[..., 0::2, :], x[..., 1::2, :], -2)
        return self._pairs(rows[..., 0::2], rows[..., 1::2], -1)


class PNet(nn.Module):
    """Proposal network: any (N, 3, H, W) with H, W >= 12 -> (face prob (N, H', W'), offsets (N, 4, H', W')).

    Output cell (i, j) sees the 12x12 input window whose top-left corner is (2i, 2j).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = MaxPool2x2Ceil()
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.prelu1(self.conv1(x)))
        return self.prelu3(self.conv3(self.prelu2(self.conv2(x))))

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(non-face, face) logits (N, 2, H', W') and offsets; training wants logits, not probabilities."""
        h = self.features(x)
        return self.conv4_1(h), self.conv4_2(h)

    def forward(self, x: torch.Tensor, logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Face probability and offsets; ``logits=True`` gives the raw heads (training goes through forward,
        so DDP sees the call)."""
        cls, reg = self.logits(x)
        return (cls, reg) if logits else (torch.softmax(cls, dim=1)[:, 1], reg)


class RNet(nn.Module):
    """Refinement network: (N, 3, 24, 24) -> (face prob (N,), offsets (N, 4))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(64 * 3 * 3, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        h = self.prelu4(self.dense4(_flatten_whc(x)))
        return self.dense5_1(h), self.dense5_2(h)

    def forward(self, x: torch.Tensor, logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Face probability and offsets; ``logits=True`` gives the raw heads (training goes through forward,
        so DDP sees the call)."""
        cls, reg = self.logits(x)
        return (cls, reg) if logits else (torch.softmax(cls, dim=1)[:, 1], reg)


class ONet(nn.Module):
    """Output network: (N, 3, 48, 48) -> (face prob (N,), offsets (N, 4), landmarks (N, 5, 2) in box fractions).

    ``dropout`` only acts in training (the authors' model has dropout 0.25 before the fc layer's output).
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(128 * 3 * 3, 256)
        self.drop5 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw heads: (N, 2) logits, (N, 4) offsets, (N, 10) landmarks as x1..x5, y1..y5."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        h = self.drop5(self.prelu5(self.dense5(_flatten_whc(x))))
        return self.dense6_1(h), self.dense6_2(h), self.dense6_3(h)

    def forward(self, x: torch.Tensor, logits: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Face probability, offsets, landmarks (N, 5, 2); ``logits=True`` gives the raw heads."""
        cls, reg, lm = self.logits(x)
        if logits:
            return cls, reg, lm
        landmarks = torch.stack((lm[:, :5], lm[:, 5:]), dim=-1)
        return torch.softmax(cls, dim=1)[:, 1], reg, landmarks


def load_published(weights_dir: str | Path, device: str | torch.device = "cpu") -> tuple[PNet, RNet, ONet]:
    """The authors' weights from ``{pnet,rnet,onet}.pt`` in ``weights_dir``, in eval mode on ``device``."""
    weights_dir = Path(weights_dir)
    nets = (PNet(), RNet(), ONet())
    for name, net in zip(("pnet", "rnet", "onet"), nets):
        path = weights_dir / f"{name}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"MTCNN weights not found: {path}")
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        net.to(device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
    return nets  # type: ignore[return-value]


def load_trained(weights: list[str | Path]) -> tuple[PNet, RNet, ONet]:
    """P-Net, R-Net, O-Net with the first ``len(weights)`` loaded from those state dicts (facebench's
    ``models/<stage>/model.pt``, in cascade order); the rest stay untrained (only the trained prefix runs)."""
    nets = (PNet(), RNet(), ONet())
    for net, path in zip(nets, weights):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: MTCNN stage not trained (run its `facebench train` first)")
        net.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return nets
