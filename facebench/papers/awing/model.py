"""Stacked hourglass with CoordConv and boundary prediction, the Adaptive Wing network
(Wang, Bo, Fuxin, ICCV 2019: boundary prediction and CoordConv with boundary coordinates).

Layout as in the authors' released code (protossw512/AdaptiveWingLoss, core/models.py and
core/coord_conv.py, read for this module), which builds on FAN (Bulat & Tzimiropoulos 2017):

* stem: CoordConv 7x7 stride 2 (3 -> F/4), BN, ReLU, block (F/4 -> F/2), 2x2 average pool,
  block (F/2 -> F/2), block (F/2 -> F): input_size -> input_size / 4 (256 -> 64 heatmaps);
* per stack: a 1x1 CoordConv (F -> F), an hourglass of the given depth (4: 64 -> 4 px at the
  bottom; average pool down, nearest-neighbour up, a residual block on every branch), a block,
  1x1 conv + BN + ReLU, and a 1x1 head to L landmark heatmaps (+1 boundary heatmap);
* intermediate supervision: every stack's output is returned (and supervised); between stacks
  the next input is previous + conv1x1(features) + conv1x1(heatmaps) (Newell et al. 2016).

The residual block is FAN's hierarchical, parallel, multi-scale block: three pre-activated 3x3
convolutions of F/2, F/4, F/4 channels whose outputs are concatenated and added to the input
(a BN-ReLU-1x1 projection where the widths differ). F = 256 in the paper.

CoordConv (Liu et al. 2018): x and y coordinate channels in [-1, 1] (and, with ``with_r``, the
radius sqrt(x^2 + y^2) scaled to max 1; the released code uses it everywhere) are concatenated to
the input of a convolution. The boundary-aware variant (the paper's "CoordConv with boundary
coordinates") adds the coordinates ON the predicted boundary: x and y masked by
[clamp(boundary, 0, 1) > 0.05], two channels taken from the previous stack's boundary output, so
the first stack has none. The mask is a hard threshold, so
no gradient flows into the boundary head through it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BOUNDARY_THRESHOLD = 0.05  # released code: coordinates kept where the boundary map > 0.05


def coordinate_channels(n: int, h: int, w: int, with_r: bool, device: torch.device | None = None,
                        dtype: torch.dtype | None = None) -> torch.Tensor:
    """(n, 2 or 3, h, w): x ramp then y ramp, each from -1 (first pixel) to 1 (last), then radius."""
    def ramp(k: int) -> torch.Tensor:
        if k == 1:
            return torch.zeros(1, device=device, dtype=dtype)
        return torch.linspace(-1.0, 1.0, k, device=device, dtype=dtype)

    xs, ys = ramp(w), ramp(h)
    xx = xs.view(1, 1, 1, w).expand(n, 1, h, w)
    yy = ys.view(1, 1, h, 1).expand(n, 1, h, w)
    chans = [xx, yy]
    if with_r:
        rr = torch.sqrt(xx**2 + yy**2)
        chans.append(rr / rr.max().clamp_min(1e-12))
    return torch.cat(chans, dim=1)


class CoordConv2d(nn.Module):
    """Conv2d on [x, coordinates (x, y[, r])[, boundary-masked x, y]].

    ``with_boundary=True`` makes ``forward`` require a boundary heatmap (N, 1, H, W) at the
    input's resolution: its two extra channels are the x and y ramps where the boundary is on.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, with_r: bool = False, with_boundary: bool = False, bias: bool = True):
        super().__init__()
        self.with_r, self.with_boundary = with_r, with_boundary
        self.extra = 2 + int(with_r) + 2 * int(with_boundary)
        self.conv = nn.Conv2d(in_channels + self.extra, out_channels, kernel_size, stride, padding, bias=bias)

    def add_coords(self, x: torch.Tensor, boundary: torch.Tensor | None = None) -> torch.Tensor:
        n, _, h, w = x.shape
        coords = coordinate_channels(n, h, w, self.with_r, device=x.device, dtype=x.dtype)
        parts = [x, coords]
        if self.with_boundary:
            if boundary is None:
                raise ValueError("boundary-aware CoordConv2d needs the previous stack's boundary heatmap")
            if boundary.shape != (n, 1, h, w):
                raise ValueError(f"boundary must be {(n, 1, h, w)}, got {tuple(boundary.shape)}")
            on = (boundary.detach().clamp(0.0, 1.0) > BOUNDARY_THRESHOLD).to(x.dtype)
            parts.append(coords[:, :2] * on)
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor, boundary: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(self.add_coords(x, boundary))


class ConvBlock(nn.Module):
    """FAN's residual block: BN-ReLU-conv3x3 to out/2, then out/4, then out/4, concatenated, + skip."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        if out_ch % 4:
            raise ValueError(f"ConvBlock needs out_ch divisible by 4, got {out_ch}")
        half, quarter = out_ch // 2, out_ch // 4
        self.bn1, self.conv1 = nn.BatchNorm2d(in_ch), nn.Conv2d(in_ch, half, 3, padding=1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(half), nn.Conv2d(half, quarter, 3, padding=1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(quarter), nn.Conv2d(quarter, quarter, 3, padding=1, bias=False)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Sequential(
            nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True), nn.Conv2d(in_ch, out_ch, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = self.conv1(F.relu(self.bn1(x)))
        o2 = self.conv2(F.relu(self.bn2(o1)))
        o3 = self.conv3(F.relu(self.bn3(o2)))
        return torch.cat([o1, o2, o3], dim=1) + self.skip(x)


class Hourglass(nn.Module):
    """Recursive hourglass: skip block at this scale + (avg pool, block, inner, block, upsample x2)."""

    def __init__(self, depth: int, features: int):
        super().__init__()
        self.depth = depth
        self.skip = ConvBlock(features, features)
        self.down = ConvBlock(features, features)
        self.inner = Hourglass(depth - 1, features) if depth > 1 else ConvBlock(features, features)
        self.up = ConvBlock(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(F.avg_pool2d(x, 2, stride=2))))
        return self.skip(x) + F.interpolate(low, scale_factor=2, mode="nearest")


class AWingHourglass(nn.Module):
    """Images (N, 3, S, S) -> {"heatmaps": [(N, L, S/4, S/4)] per stack,
    "boundary": [(N, 1, S/4, S/4)] per stack, or None when ``boundary=False``}.

    Heatmap pixel i covers input pixels [4i, 4i + 4); decode with facebench.papers.awing.heatmaps.
    ``coordconv=False`` uses plain convolutions (no coordinate channels anywhere), which also
    drops the boundary-aware channels; the boundary head is then still predicted and supervised.
    """

    def __init__(self, num_landmarks: int, num_stacks: int = 4, features: int = 256, boundary: bool = True,
                 coordconv: bool = True, input_size: int = 256, depth: int = 4, with_r: bool = True):
        super().__init__()
        if num_landmarks < 1 or num_stacks < 1 or depth < 1:
            raise ValueError(f"num_landmarks, num_stacks and depth must be positive, got "
                             f"{num_landmarks}, {num_stacks}, {depth}")
        if features % 16:
            raise ValueError(f"features must be a multiple of 16 (stem uses features/4 in 4 groups), got {features}")
        heat = input_size // 4
        if input_size % 4 or heat % (2**depth):
            raise ValueError(f"input_size {input_size} must be 4 * a multiple of 2^depth = {2**depth}")
        self.num_landmarks, self.num_stacks, self.input_size = num_landmarks, num_stacks, input_size
        self.boundary, self.coordconv = boundary, coordconv
        out_ch = num_landmarks + int(boundary)
        f4, f2 = features // 4, features // 2

        if coordconv:
            self.stem_conv = CoordConv2d(3, f4, 7, stride=2, padding=3, with_r=with_r)
        else:
            self.stem_conv = nn.Conv2d(3, f4, 7, stride=2, padding=3)
        self.stem = nn.ModuleDict({
            "bn": nn.BatchNorm2d(f4), "block1": ConvBlock(f4, f2), "block2": ConvBlock(f2, f2),
            "block3": ConvBlock(f2, features)})

        self.stack_in = nn.ModuleList()
        for i in range(num_stacks):
            if coordconv:
                self.stack_in.append(CoordConv2d(features, features, 1, with_r=with_r,
                                                 with_boundary=boundary and i > 0))
            else:
                self.stack_in.append(nn.Identity())
        self.hourglasses = nn.ModuleList(Hourglass(depth, features) for _ in range(num_stacks))
        self.top = nn.ModuleList(ConvBlock(features, features) for _ in range(num_stacks))
        self.last = nn.ModuleList(nn.Sequential(nn.Conv2d(features, features, 1), nn.BatchNorm2d(features),
                                                nn.ReLU(inplace=True)) for _ in range(num_stacks))
        self.heads = nn.ModuleList(nn.Conv2d(features, out_ch, 1) for _ in range(num_stacks))
        self.remap_features = nn.ModuleList(nn.Conv2d(features, features, 1) for _ in range(num_stacks - 1))
        self.remap_heatmaps = nn.ModuleList(nn.Conv2d(out_ch, features, 1) for _ in range(num_stacks - 1))

    def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor] | None]:
        if x.dim() != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(f"AWingHourglass expects (N, 3, {self.input_size}, {self.input_size}) images, "
                             f"got {tuple(x.shape)}")
        x = F.relu(self.stem["bn"](self.stem_conv(x)))
        x = F.avg_pool2d(self.stem["block1"](x), 2, stride=2)
        x = self.stem["block3"](self.stem["block2"](x))

        heatmaps: list[torch.Tensor] = []
        boundaries: list[torch.Tensor] = []
        prev_boundary: torch.Tensor | None = None
        for i in range(self.num_stacks):
            if self.coordconv:
                y = self.stack_in[i](x, prev_boundary if self.stack_in[i].with_boundary else None)
            else:
                y = x
            y = self.last[i](self.top[i](self.hourglasses[i](y)))
            out = self.heads[i](y)
            heatmaps.append(out[:, : self.num_landmarks])
            if self.boundary:
                prev_boundary = out[:, self.num_landmarks:]
                boundaries.append(prev_boundary)
            if i < self.num_stacks - 1:
                x = x + self.remap_features[i](y) + self.remap_heatmaps[i](out)
        return {"heatmaps": heatmaps, "boundary": boundaries if self.boundary else None}
