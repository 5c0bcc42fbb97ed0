"""The MTCNN cascade (Zhang et al., SPL 2016) computing what the reference implementation computes, batched.

The reference is facenet-pytorch 2.6.0 (``facenet_pytorch/models/utils/detect_face.py``), which follows the
authors' MATLAB ``detect_face.m``; with the published weights a user swapping it for ``facebench detect``
gets the same faces (``tests/mtcnn/test_parity.py`` checks it). Every step below is the reference's, in its
float32 arithmetic and pixel conventions:

1. Pyramid: scales m = 12 / min_face, m * factor, ... while min(H, W) * m * factor^k >= 12 (the running
   product, as the reference accumulates it); level k is the image resampled to int(H * s + 1) x
   int(W * s + 1) by area averaging (``F.interpolate(mode='area')``, i.e. adaptive average pooling: output
   row i averages input rows floor(i * H / h) to ceil((i + 1) * H / h), sum / rows / cols in float32).
   Pixels are normalised as (v - 127.5) * 0.0078125.
2. P-Net on each level. A cell (i, j) with face probability >= thresholds[0] gives the box
   floor((2j + 1) / s), floor((2i + 1) / s), floor((2j + 12) / s), floor((2i + 12) / s) (the authors'
   1-based pixel convention), its score and offsets. Cells whose last pooled window runs one pixel past an
   odd-sized level count too (the reference's ceil-mode pooling makes them), so each level is its own
   P-Net call rather than a region of a packed canvas, whose neighbouring pixels would change them.
3. NMS per image and level (IoU > nms[0], 0.5), then per image over all levels (IoU > nms[1], 0.7);
   IoU as torchvision computes it (no +1), greedy in descending score.
4. Calibration with the box width x2 - x1 (no +1 at this stage), then squaring about the centre to the
   longer side (the reference's ``rerec``: x1 + w/2 - l/2, x2 = x1 + l).
5. R-Net and O-Net crops: the box truncated to integers (toward zero), clipped to [1, W] x [1, H] and the
   1-based rows y..ey, columns x..ex resampled from the full image by area averaging to 24 / 48 px. A
   box that leaves the image is thus clipped and its in-image part stretched (the reference's choice);
   ``border='pad'`` instead zero-pads the part outside the image, as the authors' ``pad.m`` does (the
   authors then resample with bilinear ``imResample``; both borders here use the reference's area mean).
6. R-Net: probability > thresholds[1], NMS (IoU > nms[1]), calibration with width x2 - x1 + 1, squaring.
   O-Net: probability > thresholds[2]; landmarks x1 - 1 + p * (x2 - x1 + 1) (same for y) on the box
   before calibration; calibration (+1 width); NMS with the 'Min' overlap (intersection over the smaller
   area) > nms[2] in the +1 pixel convention (``nms_numpy`` in the reference, ``nms.m`` of the authors).

Boxes are therefore reported as the reference reports them: x1, y1 in the authors' 1-based convention and
x2, y2 as the last covered pixel (so the box covers 0-based pixels x1 - 1 .. x2 - 1, i.e. the continuous
[x1 - 1, x2] x [y1 - 1, y2]); landmarks are 0-based continuous coordinates.

What is ours is how it runs, not what it computes:

- Area resampling from a summed-area table (integral image): a window's sum is four look-ups of exact
  integers (uint8 sums fit the table's integer type), divided by rows then columns in float32, which
  gives ``F.interpolate(mode='area')``'s bits (tested), for the whole pyramid in one pass (row bands of
  the table, then one-dimensional gathers, into buffers kept between calls) and for all R-Net / O-Net
  crops of a batch at once instead of one resampling call per box. P-Net's pooling takes maxima of
  strided views in inference (``models.mtcnn.MaxPool2x2Ceil``: the same values, faster on a CPU).
- R-Net and O-Net run on channels-last crops, as P-Net on channels-last levels (the reference's layout
  there); the reference's R-Net / O-Net crops are channels-first, whose max-pooling is several times
  slower on a CPU. Their float32 results differ in the last bits (scores by ~1e-6), not in the faces.
- Per-level NMS of P-Net boxes on the cell grid: boxes of one level come from a regular grid, so only
  cells within a small radius can overlap by more than the threshold. The radius is derived for each
  layout from the exact 1-D overlaps of the floor()-ed boxes (IoU <= the 1-D IoU along either axis), and
  the IoUs within it are computed exactly, so greedy NMS needs a neighbour table, not a K x K matrix.
- NMS over levels and after R-Net / O-Net is batched over images (``boxes.nms`` with groups).
- Images of one size run the pyramid and P-Net together; a batch of mixed sizes runs one front per size
  and the later stages together (results do not depend on what else is in the batch).
- On CUDA the fixed-shape front (table, pyramid, P-Net) is replayed as one CUDA graph, and crops + R-Net,
  crops + O-Net as one graph each per power-of-two bucket of boxes (cuda_graphs.py): at batch 1 a GPU cascade is bound by
  host-side kernel launches, not arithmetic. On CUDA, box generation divides by the scale as the
  reference's kernel does there (a * (1 / s) in float32; CPU tensors divide).

Known departures from the reference, each where it cannot be followed: a box whose clipped crop is empty
(entirely outside the image) is dropped (the reference's crop loop skips it and then misaligns its
boxes and scores, or fails); ties in score may be broken differently (the reference's last NMS uses an
unstable sort); R-Net / O-Net (layout above) and batched calls round differently from the reference in
the last bits of float32 (see the parity test).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facebench.papers.mtcnn.boxes import calibrate, nms, pair_overlap, square, take
from facebench.papers.mtcnn.cuda_graphs import CaptureFailed, Captured
from facebench.papers.mtcnn.model import ONET_SIZE, PNET_SIZE, RNET_SIZE, load_published

PNET_STRIDE = 2
NORM_MEAN, NORM_SCALE = 127.5, 0.0078125  # (v - 127.5) * 0.0078125, the reference's normalisation
GRAPH_MIN_BOXES, GRAPH_MAX_BOXES = 64, 4096  # box buckets of the captured R-Net / O-Net graphs
MAX_GRID_RADIUS = 6  # beyond this the per-level NMS uses the general NMS (only for very low thresholds)
BORDERS = ("clip", "pad")

PAPER = {"min_face": 20, "scale_factor": 0.709, "thresholds": (0.6, 0.7, 0.7), "nms": (0.5, 0.7, 0.7)}
# Denser pyramid, smaller faces and lower thresholds: the usual settings for WIDER FACE precision-recall.
WIDER = {"min_face": 10, "scale_factor": 0.79, "thresholds": (0.5, 0.5, 0.3), "nms": (0.5, 0.7, 0.7)}
PRESETS = {"paper": PAPER, "wider": WIDER}


@dataclass
class Face:
    """One detection as the reference reports it: box (x1, y1, x2, y2) with x1, y1 1-based and x2, y2 the
    last covered pixel (the continuous box is [x1 - 1, x2] x [y1 - 1, y2]; not clipped, a face at the
    border may stick out), face score, landmarks (5, 2) as 0-based (x, y): left eye, right eye, nose,
    left and right mouth corner (image-left first)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 6),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]}


def pyramid_scales(height: int, width: int, min_face: float, factor: float) -> list[float]:
    """The reference's scales: m = 12 / min_face, then times ``factor`` while the running product
    min(H, W) * m * factor^k (accumulated step by step, as the reference does) is >= 12."""
    m = PNET_SIZE / min_face
    scales, s, side = [], m, min(height, width) * m
    while side >= PNET_SIZE:
        scales.append(s)
        s *= factor
        side *= factor
    return scales


def level_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """A pyramid level's pixel size, int(H * s + 1) x int(W * s + 1) as in the reference."""
    return int(height * scale + 1), int(width * scale + 1)


def pnet_cells(size: int) -> int:
    """P-Net's output length for an input length: conv 3, ceil-mode pool 2/2, conv 3, conv 3."""
    return math.ceil((size - 2) / 2) - 4


def cell_boxes(ii: torch.Tensor, jj: torch.Tensor, scale: torch.Tensor, inv_scale: torch.Tensor) -> torch.Tensor:
    """P-Net cells (row ii, column jj) to boxes as the reference's ``generateBoundingBox``: floor of
    (2j + 1, 2i + 1, 2j + 12, 2i + 12) / s in float32 (the authors' 1-based pixels). ``scale`` and
    ``inv_scale`` are float32(s) and float32(1) / float32(s) per cell: CPU tensors divide by the scale, while
    the reference's CUDA kernel, dividing by a Python scalar, multiplies by its float32 reciprocal."""
    xy = torch.stack((jj, ii), 1).float() * PNET_STRIDE
    corners = torch.cat((xy + 1, xy + PNET_SIZE), 1)
    if corners.device.type == "cuda":
        return (corners * inv_scale[:, None]).floor()
    return (corners / scale[:, None]).floor()


def area_windows(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive average pooling's window of each output index (what ``F.interpolate(mode='area')`` uses):
    start floor(i * src / dst), end ceil((i + 1) * src / dst)."""
    i = np.arange(dst, dtype=np.int64)
    return (i * src) // dst, ((i + 1) * src + dst - 1) // dst


def _level_boxes_1d(cells: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis, the start and end of every cell's box at ``scale`` (float32, as the cascade makes them)."""
    j = np.arange(cells, dtype=np.float32)
    s = np.float32(scale)
    return (np.floor((np.float32(PNET_STRIDE) * j + 1) / s), np.floor((np.float32(PNET_STRIDE) * j + PNET_SIZE) / s))


def grid_radius(scales: list[float], cells: list[tuple[int, int]], threshold: float) -> int | None:
    """The smallest cell radius r such that two same-level P-Net boxes more than r cells apart (in either
    axis) never overlap by IoU > ``threshold``; None if it exceeds MAX_GRID_RADIUS.

    For two rectangles IoU <= the 1-D IoU of their extents along either axis (the union's area is at least
    the 1-D union times the other axis' overlap), so the largest 1-D IoU at an offset of d cells, found
    exactly over the level's floor()-ed box edges, bounds every pair that far apart. A small margin covers
    the float32 rounding of the IoU itself."""
    radius = 1
    for s, (hc, wc) in zip(scales, cells):
        a, b = _level_boxes_1d(max(hc, wc), s)
        for d in range(1, len(a)):
            inter = np.clip(np.minimum(b[:-d], b[d:]) - np.maximum(a[:-d], a[d:]), 0, None)
            if not inter.any():
                break
            union = (b[:-d] - a[:-d]) + (b[d:] - a[d:]) - inter
            if (inter / union).max() > threshold - 1e-6:
                radius = max(radius, d)
    return radius if radius <= MAX_GRID_RADIUS else None


def _grid_offsets(radius: int) -> list[tuple[int, int]]:
    """Cell offsets (dy, dx) within ``radius`` (Chebyshev), without (0, 0)."""
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1) if (dy, dx) != (0, 0)]


@dataclass
class _Layout:
    """The pyramid of one image size (H, W), with its device tables."""

    height: int
    width: int
    scales: list[float]
    sizes: list[tuple[int, int]]  # level pixel sizes
    cells: list[tuple[int, int]]  # P-Net output size per level
    radius: int | None  # per-level NMS neighbourhood (None: general NMS)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    pixels: list[int] = field(default_factory=list)  # where each level starts in the flat pyramid (L + 1 offsets)
    starts: dict[int, torch.Tensor] = field(default_factory=dict)  # batch size -> (L + 1,) flat P-Net map starts


@dataclass
class _Sources:
    """Where crops read: the summed-area tables of all images of a call as (pixels, 3), and per image its
    first pixel, row stride (W + 1) and size."""

    table: torch.Tensor
    base: torch.Tensor
    stride: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor


def _run(net: torch.nn.Module, chunks) -> tuple[torch.Tensor, ...]:
    """``net`` on each chunk, its outputs concatenated (no copy when there is one chunk)."""
    outs = [net(c) for c in chunks]
    return tuple(outs[0]) if len(outs) == 1 else tuple(torch.cat(o) for o in zip(*outs))


class MTCNNDetector:
    """Face detection + 5 landmarks with the three-stage cascade; ``detect`` takes a list of RGB uint8 images.

    ``thresholds`` are the P-Net / R-Net / O-Net face-probability cut-offs, ``nms`` the overlap thresholds of
    per-level NMS (P-Net), of NMS over levels and after R-Net (``nms[1]``, 0.7 as the authors and the
    reference) and after O-Net (``nms[2]``, 'Min' overlap). ``weights_dir=None`` loads the published
    weights from the default location. ``border`` is 'clip' (the reference: a box leaving the image is
    clipped and its in-image part stretched to the crop) or 'pad' (the authors: the outside is black).
    ``pnet_pixels`` / ``rnet_batch`` / ``onet_batch`` cap the work per network call (memory, not results;
    512 is the reference's chunk). ``cuda_graphs`` (CUDA only) replays the front and crops + R-Net / O-Net
    as captured graphs when all images of a batch have one size (same results; far fewer host-side
    launches). Setting ``detector.cuda_graphs = True`` on a CPU detector runs the same static-buffer code
    without graphs (for tests).
    """

    def __init__(self, weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
                 min_face: float = 20, scale_factor: float = 0.709,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 nms: tuple[float, float, float] = (0.5, 0.7, 0.7), border: str = "clip",
                 pnet_pixels: int = 1 << 22, rnet_batch: int = 512, onet_batch: int = 512,
                 cuda_graphs: bool = True,
                 nets: "tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module] | None" = None):
        if min_face < 1 or not 0 < scale_factor < 1:
            raise ValueError(f"need min_face >= 1 and 0 < scale_factor < 1, got {min_face}, {scale_factor}")
        if border not in BORDERS:
            raise ValueError(f"MTCNN border must be one of {BORDERS}, got {border!r}")
        self.device = torch.device(device)
        if nets is not None:  # networks in hand (training: a cascade whose later stages are not trained yet)
            self.pnet, self.rnet, self.onet = (n.to(self.device).eval() for n in nets)
        else:
            if weights_dir is None:
                from facebench.papers.mtcnn import default_weights_dir

                weights_dir = default_weights_dir()
            self.pnet, self.rnet, self.onet = load_published(weights_dir, self.device)
        self.min_face = float(min_face)
        self.scale_factor = float(scale_factor)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.nms_thresholds = tuple(float(t) for t in nms)
        self.border = border
        self.pnet_pixels, self.rnet_batch, self.onet_batch = pnet_pixels, rnet_batch, onet_batch
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        # Mining with a barely trained P-Net (early epochs, tiny profiles) passes nearly every window; a cap
        # on P-Net's candidates per image, best first (None: no cap, the paper's cascade), bounds the NMS
        # that follows. Per image, so that a batch proposes what each of its images would alone.
        self.max_candidates: int | None = None
        self._graphs: dict[tuple, Captured] = {}
        self._layouts: dict[tuple[int, int], _Layout] = {}
        self._constants: dict[tuple, torch.Tensor] = {}
        self._buffers: dict[tuple, torch.Tensor] = {}  # large work tensors, reused between calls on a CPU
        # Reused between calls (profiled on an H100: pinning a 640x480 frame per call cost 0.9 ms of a 13 ms
        # frame, and each small host->device copy is a stream synchronisation).
        self._pinned: dict[tuple[int, ...], torch.Tensor] = {}
        self._pinned_copied: torch.cuda.Event | None = None

    @classmethod
    def preset(cls, name: str, weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
               **overrides) -> "MTCNNDetector":
        """``'paper'`` (the authors' defaults) or ``'wider'`` (min face 10, factor 0.79, thresholds 0.5/0.5/0.3)."""
        if name not in PRESETS:
            raise ValueError(f"unknown MTCNN preset {name!r}; choose from {sorted(PRESETS)}")
        kwargs = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(weights_dir, device, **kwargs)

    @classmethod
    def wider(cls, weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
              **overrides) -> "MTCNNDetector":
        """The WIDER FACE evaluation preset (see ``WIDER``)."""
        return cls.preset("wider", weights_dir, device, **overrides)

    # ------------------------------------------------------------------ public API

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Faces per image, highest score first."""
        if not images:
            return []
        rows = self.detect_arrays(images)
        out: list[list[Face]] = [[] for _ in images]
        for r in rows:
            out[int(r[0])].append(Face(r[1:5].copy(), float(r[5]), r[6:16].reshape(5, 2).copy()))
        return out

    def detect_arrays(self, images: list[np.ndarray]) -> np.ndarray:
        """All detections as one (K, 16) float64 array: image index, x1, y1, x2, y2, score, 5 (x, y);
        one device-to-host copy for the whole batch."""
        if not images:
            return np.zeros((0, 16))
        groups = self._to_device(images)
        with torch.inference_mode():
            det = self._cascade(groups)
        return det.double().cpu().numpy()

    def proposals(self, images: list[np.ndarray], stage: int) -> list[np.ndarray]:
        """Per image, the (K, 4) boxes x1, y1, x2, y2 that pass P-Net (``stage`` 1) or P-Net and R-Net (2),
        after their NMS, calibration and squaring: what the next stage sees, so its training mines hard
        examples from them (the paper's R-Net and O-Net training data)."""
        if stage not in (1, 2):
            raise ValueError(f"proposals come from stage 1 (P-Net) or 2 (R-Net), not {stage}")
        out = [np.zeros((0, 4)) for _ in images]
        if not images:
            return out
        with torch.inference_mode():
            fronts = []
            for idx, batch in self._to_device(images):
                lay = self._layout(batch.shape[1], batch.shape[2])
                fronts.append((idx, lay, *self._front(batch, lay)))
            boxes, img = self._stage1([(idx, lay, prob, reg) for idx, lay, _, prob, reg in fronts])
            if stage == 2 and len(boxes):
                boxes, img = self._stage2(self._sources([(idx, table) for idx, _, table, _, _ in fronts]), boxes, img)
        boxes, img = boxes.double().cpu().numpy(), img.cpu().numpy()
        return [boxes[img == i] for i in range(len(images))]

    # ------------------------------------------------------------------ input and tables

    def _to_device(self, images: list[np.ndarray]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Checked RGB uint8 images grouped by size: [(image indices, (n, H, W, 3) uint8 on the device)]."""
        fixed = []
        for im in images:
            im = np.asarray(im)
            if im.ndim == 2:
                im = np.repeat(im[:, :, None], 3, axis=2)
            if im.ndim != 3 or im.shape[2] not in (3, 4):
                raise ValueError(f"expected an RGB image (H, W, 3), got shape {im.shape}")
            if im.dtype != np.uint8:
                raise ValueError(f"expected uint8 pixels, got {im.dtype}")
            fixed.append(im[:, :, :3])
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(fixed):
            by_size.setdefault(im.shape[:2], []).append(i)
        out = []
        for members in by_size.values():
            if len(members) == 1:
                host = torch.from_numpy(np.ascontiguousarray(fixed[members[0]])[None])
            else:
                host = torch.from_numpy(np.stack([fixed[i] for i in members]))
            if len(by_size) == 1:  # the usual case: images 0..n-1, an index tensor made once
                idx = self._constant(("images", len(members)), lambda: torch.arange(len(members)))
            else:
                idx = torch.tensor(members, device=self.device)
            out.append((idx, self._upload(host)))
        return out

    def _upload(self, host: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cuda":
            return host
        pinned = self._pinned.get(tuple(host.shape))
        if pinned is None:
            if len(self._pinned) > 8:
                self._pinned.clear()
            pinned = self._pinned[tuple(host.shape)] = torch.empty(host.shape, dtype=torch.uint8).pin_memory()
        elif self._pinned_copied is not None:
            self._pinned_copied.synchronize()  # the previous call's copy out of the buffer is done
        pinned.copy_(host)
        t = pinned.to(self.device, non_blocking=True)
        self._pinned_copied = torch.cuda.Event()
        self._pinned_copied.record()
        return t

    def _layout(self, height: int, width: int) -> _Layout:
        key = (height, width)
        lay = self._layouts.get(key)
        if lay is not None:
            return lay
        scales = pyramid_scales(height, width, self.min_face, self.scale_factor)
        sizes = [level_size(height, width, s) for s in scales]
        cells = [(pnet_cells(h), pnet_cells(w)) for h, w in sizes]
        lay = _Layout(height, width, scales, sizes, cells, grid_radius(scales, cells, self.nms_thresholds[0]))

        def dev(values, dtype=torch.long) -> torch.Tensor:
            return torch.as_tensor(np.asarray(values), dtype=dtype).to(self.device)

        # The whole pyramid in one pass (_pyramid): the table rows that bound each level row's window
        # (top0 / top1, all levels' rows one after the other), then for every level value (pixel, channel)
        # the entries of those row differences that bound its column window (left0 / left1), and the
        # window's rows and columns.
        tops, lefts, rows, cols = ([], []), ([], []), [], []
        channel, row = np.arange(3), 0
        for h, w in sizes:
            r0, r1 = area_windows(height, h)
            c0, c1 = area_windows(width, w)
            line = (row + np.arange(h))[:, None, None] * ((width + 1) * 3)
            for k, (r, c) in enumerate(((r0, c0), (r1, c1))):
                tops[k].append(r)
                lefts[k].append((line + c[None, :, None] * 3 + channel).reshape(-1))
            rows.append(np.repeat(r1 - r0, w * 3))
            cols.append(np.tile(np.repeat(c1 - c0, 3), h))
            row += h
        lay.pixels = np.cumsum([0] + [h * w for h, w in sizes]).tolist()
        scale32 = np.array(scales, dtype=np.float32)
        lay.tensors = {"cells_h": dev([c[0] for c in cells]), "cells_w": dev([c[1] for c in cells]),
                       "scale": dev(scale32, torch.float32), "inv_scale": dev(np.float32(1) / scale32, torch.float32)}
        if sizes:
            for k in (0, 1):
                lay.tensors[f"top{k}"] = dev(np.concatenate(tops[k]))
                lay.tensors[f"left{k}"] = dev(np.concatenate(lefts[k]), torch.int32)  # half the bytes to stream
            lay.tensors["rows"] = dev(np.concatenate(rows), torch.float32)
            lay.tensors["cols"] = dev(np.concatenate(cols), torch.float32)
        if len(self._layouts) > 16:
            self._layouts.clear()
        self._layouts[key] = lay
        return lay

    def _level_starts(self, lay: _Layout, n: int) -> torch.Tensor:
        """(L + 1,) offsets of each level's (n, h', w') map in the front's flat outputs."""
        t = lay.starts.get(n)
        if t is None:
            counts = [0] + [n * hc * wc for hc, wc in lay.cells]
            t = lay.starts[n] = torch.tensor(np.cumsum(counts), dtype=torch.long, device=self.device)
        return t

    def _constant(self, key: tuple, make) -> torch.Tensor:
        """A small tensor on the device, made once (each fresh one is a host-to-device copy)."""
        t = self._constants.get(key)
        if t is None:
            t = self._constants[key] = make().to(self.device)
        return t

    # ------------------------------------------------------------------ stages

    def _cascade(self, groups: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        if self.cuda_graphs and len(groups) == 1:
            try:
                return self._stages(groups, graphed=True)
            except CaptureFailed as err:  # a capture this torch/driver refuses: run eagerly from now on
                warnings.warn(f"MTCNN: CUDA graph capture failed ({err.__cause__}); running the cascade eagerly")
                self.cuda_graphs = False
                self._graphs.clear()
        return self._stages(groups, graphed=False)

    def _stages(self, groups: list[tuple[torch.Tensor, torch.Tensor]], graphed: bool) -> torch.Tensor:
        empty = torch.zeros(0, 16, device=self.device)
        fronts, front_key, src = [], None, None
        for idx, batch in groups:
            lay = self._layout(batch.shape[1], batch.shape[2])
            if graphed:  # one group: its table is the front graph's static output
                entry = self._front_graphed(batch, lay)
                front_key = tuple(entry.inputs[0].shape)
                table, prob, reg = entry.outputs
                src = entry.sources = entry.sources or self._sources([(idx, table)])
                src.table = table.reshape(-1, 3)  # the same memory on CUDA; a fresh tensor per CPU replay
            else:
                table, prob, reg = self._front(batch, lay)
            fronts.append((idx, lay, table, prob, reg))
        boxes, img = self._stage1([(idx, lay, prob, reg) for idx, lay, _, prob, reg in fronts])
        if len(boxes) == 0:
            return empty
        src = src or self._sources([(idx, table) for idx, _, table, _, _ in fronts])
        boxes, img = self._stage2(src, boxes, img, front_key)
        if len(boxes) == 0:
            return empty
        boxes, scores, landmarks, img = self._stage3(src, boxes, img, front_key)
        order = torch.argsort(img, stable=True)  # nms gives score order; group by image keeping it
        return take(torch.cat((img[:, None].float(), boxes, scores[:, None], landmarks.flatten(1)), dim=1), order)

    def _front(self, batch: torch.Tensor, lay: _Layout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Summed-area table, and P-Net's face probabilities (flat, level after level, each (n, h', w')) and
        offsets (flat, 4): fixed shapes, no host sync."""
        table = self._summed_area(batch)
        if not lay.sizes:
            return table, table.new_zeros(0, dtype=torch.float32), table.new_zeros(0, 4, dtype=torch.float32)
        pyramid = self._pyramid(table, lay, self._buffer)
        probs, regs = [], []
        for (h, w), start in zip(lay.sizes, lay.pixels):
            level = pyramid[:, 3 * start:3 * (start + h * w)].view(-1, h, w, 3).permute(0, 3, 1, 2)  # channels-last
            per_call = max(1, self.pnet_pixels // (h * w))  # bounds activation memory
            prob, reg = _run(self.pnet, level.split(per_call))
            probs.append(prob.reshape(-1))
            regs.append(reg.permute(0, 2, 3, 1).reshape(-1, 4))
        return table, torch.cat(probs), torch.cat(regs)

    def _summed_area(self, batch: torch.Tensor) -> torch.Tensor:
        """(n, H + 1, W + 1, 3) integral image: entry (r, c) sums pixels above r and left of c. int32 while
        255 * H * W fits it (exact), else int64. Off CUDA graphs the buffer is kept per shape (its zero first
        row and column stay; the rest is overwritten)."""
        n, h, w, c = batch.shape
        dtype = torch.int32 if 255 * (h + 1) * (w + 1) < 2 ** 31 else torch.int64
        fresh = ("table", n, h, w) not in self._buffers
        table = self._buffer(("table", n, h, w), (n, h + 1, w + 1, c), dtype)
        if fresh or self.device.type == "cuda":
            table.zero_()
        inner = table[:, 1:, 1:]
        torch.cumsum(batch, 1, dtype=dtype, out=inner)
        torch.cumsum(inner, 2, out=inner)
        return table

    def _buffer(self, key: tuple, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """An uninitialised tensor kept for reuse on a CPU: a fresh multi-megabyte allocation is fresh pages,
        whose first touch costs more than the arithmetic (measured: the pyramid took twice as long inside
        the cascade as alone). On CUDA a new one each time (a CUDA graph owns its own memory)."""
        if self.device.type == "cuda":
            return torch.empty(shape, dtype=dtype, device=self.device)
        key = key + (shape, dtype)
        t = self._buffers.get(key)
        if t is None:
            if len(self._buffers) > 32:
                self._buffers.clear()
            t = self._buffers[key] = torch.empty(shape, dtype=dtype)
        return t

    @staticmethod
    def _pyramid(table: torch.Tensor, lay: _Layout, buffer) -> torch.Tensor:
        """Every pyramid level, flat: (n, 3 * pixels of all levels) as (pixel, channel), normalised. Each value
        is the mean of its area window (``area_windows``): its sum from four table entries (exact integers;
        first the differences of the table rows that bound each level row's window, then of the entries
        that bound each column window), divided by the window's rows then its columns in float32, as
        adaptive average pooling divides. Whole-row and one-dimensional gathers, image by image: the fast
        kinds of gather on a CPU."""
        t = lay.tensors
        out = buffer(("pyramid",), (table.shape[0], len(t["rows"])))
        lines = table.shape[2] * table.shape[3]
        bands = [buffer(("bands", k), (len(t["top0"]), lines), table.dtype) for k in (0, 1)]
        sums = [buffer(("sums", k), (len(t["rows"]),), table.dtype) for k in (0, 1)]
        for i, image in enumerate(table):
            image = image.view(-1, lines)
            torch.index_select(image, 0, t["top1"], out=bands[1])
            torch.index_select(image, 0, t["top0"], out=bands[0])
            flat = bands[1].sub_(bands[0]).view(-1)
            torch.index_select(flat, 0, t["left1"], out=sums[1])
            torch.index_select(flat, 0, t["left0"], out=sums[0])
            torch.div(sums[1].sub_(sums[0]), t["rows"], out=out[i])
        return out.div_(t["cols"]).sub_(NORM_MEAN).mul_(NORM_SCALE)

    def _front_graphed(self, batch: torch.Tensor, lay: _Layout) -> Captured:
        """``_front`` as one captured graph per batch shape, replayed on ``batch``: the table, the pyramid
        and P-Net are ~100 kernel launches whose shapes never change, which at batch 1 cost more host time
        than GPU time. Its ``outputs`` are (table, prob, reg)."""
        key = ("front", tuple(batch.shape))
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= 32:  # many batch shapes: start again (a box graph reads its front's table)
                self._graphs.clear()
            entry = self._graphs[key] = Captured(lambda static: self._front(static, lay), (batch.clone(),),
                                                  self.device)
        else:
            entry.inputs[0].copy_(batch)
        entry.replay()
        return entry

    def _sources(self, fronts: list[tuple[torch.Tensor, torch.Tensor]]) -> _Sources:
        """The crop sources of a call: one flat (rows, 3) view of the tables (no copy for a single size)."""
        n_images = sum(len(idx) for idx, _ in fronts)
        base = torch.zeros(n_images, dtype=torch.long, device=self.device)
        stride, height, width = torch.zeros_like(base), torch.zeros_like(base), torch.zeros_like(base)
        flats, offset = [], 0
        for idx, table in fronts:
            n, h1, w1, _ = table.shape
            base[idx] = offset + torch.arange(n, device=self.device) * (h1 * w1)
            stride[idx], height[idx], width[idx] = w1, h1 - 1, w1 - 1
            flats.append(table.reshape(-1, 3))
            offset += n * h1 * w1
        if len(flats) > 1 and len({f.dtype for f in flats}) > 1:
            flats = [f.long() for f in flats]
        return _Sources(flats[0] if len(flats) == 1 else torch.cat(flats), base, stride, height, width)

    def _stage1(self, fronts: list[tuple[torch.Tensor, _Layout, torch.Tensor, torch.Tensor]]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net's candidates of every group: boxes, per-level NMS, NMS over levels per image, calibration
        (width without +1) and squaring. Returns (boxes (K, 4), image index (K,))."""
        parts = [self._pnet_candidates(*f) for f in fronts]
        parts = [p for p in parts if len(p[0])]
        if not parts:
            return torch.zeros(0, 4, device=self.device), torch.zeros(0, dtype=torch.long, device=self.device)
        boxes, score, offsets, img = (torch.cat(v) for v in zip(*parts))
        k = nms(boxes, score, self.nms_thresholds[1], "union", groups=img)
        return square(calibrate(take(boxes, k), take(offsets, k))), take(img, k)

    def _pnet_candidates(self, idx: torch.Tensor, lay: _Layout, prob: torch.Tensor, reg: torch.Tensor
                         ) -> tuple[torch.Tensor, ...]:
        """One group's P-Net boxes after per-level NMS, ordered by level, then score (the order the
        reference's per-level NMS hands them on): boxes, scores, offsets, image indices."""
        n = len(idx)
        flat = (prob >= self.thresholds[0]).nonzero().squeeze(1)  # one host sync
        if len(flat) == 0:
            z = torch.zeros(0, device=self.device)
            return z.view(0, 4), z, z.view(0, 4), idx[:0]
        starts = self._level_starts(lay, n)
        lvl = torch.searchsorted(starts, flat, right=True) - 1
        hc, wc = take(lay.tensors["cells_h"], lvl), take(lay.tensors["cells_w"], lvl)
        rem = flat - take(starts, lvl)
        ni = torch.div(rem, hc * wc, rounding_mode="floor")
        if self.max_candidates is not None and len(flat) > self.max_candidates:
            keep = _best_per_group(take(prob, flat), ni, n, self.max_candidates)
            flat, lvl, hc, wc, rem, ni = (take(t, keep) for t in (flat, lvl, hc, wc, rem, ni))
        cell = rem - ni * hc * wc
        ii = torch.div(cell, wc, rounding_mode="floor")
        jj = cell - ii * wc
        score = take(prob, flat)
        offsets = take(reg, flat)
        boxes = cell_boxes(ii, jj, take(lay.tensors["scale"], lvl), take(lay.tensors["inv_scale"], lvl))
        group = ni * len(lay.scales) + lvl
        if lay.radius is None:
            keep = torch.zeros(len(flat), dtype=torch.bool, device=self.device)
            keep[nms(boxes, score, self.nms_thresholds[0], "union", groups=group)] = True
        else:
            keep = self._grid_nms(flat, boxes, score, ii, jj, hc, wc, lay.radius)
        kept = keep.nonzero().squeeze(1)
        by_score = take(kept, torch.argsort(take(score, kept), descending=True, stable=True))
        order = take(by_score, torch.argsort(take(lvl, by_score), stable=True))
        return take(boxes, order), take(score, order), take(offsets, order), take(idx, take(ni, order))

    def _grid_nms(self, flat: torch.Tensor, boxes: torch.Tensor, score: torch.Tensor, ii: torch.Tensor,
                  jj: torch.Tensor, hc: torch.Tensor, wc: torch.Tensor, radius: int) -> torch.Tensor:
        """Greedy per-level NMS of P-Net candidates through their grid neighbours (see module docstring).

        ``flat`` are the candidates' sorted flat indices into the level maps; a neighbour (dy, dx) of a cell
        is found by binary search for its flat index (bounds-checked, so a row's end does not wrap). Greedy
        order is score descending, ties to the earlier cell (the reference's input order), so a neighbour
        suppresses a cell when their IoU > the threshold and the neighbour comes first.
        """
        k = len(flat)
        offsets = self._constant(("grid", radius), lambda: torch.tensor(_grid_offsets(radius), dtype=torch.long))
        dy, dx = offsets[:, 0], offsets[:, 1]
        first = (dy < 0) | ((dy == 0) & (dx < 0))
        inside = ((ii[:, None] + dy >= 0) & (ii[:, None] + dy < hc[:, None]) & (jj[:, None] + dx >= 0)
                  & (jj[:, None] + dx < wc[:, None]))
        target = flat[:, None] + dy * wc[:, None] + dx
        nb = torch.searchsorted(flat, target).clamp(max=k - 1)
        found = inside & (take(flat, nb) == target)
        overlap = pair_overlap(boxes[:, None, :], take(boxes, nb), "union")
        nb_score = take(score, nb)
        s = score[:, None]
        wins = found & (overlap > self.nms_thresholds[0]) & ((nb_score > s) | ((nb_score == s) & first))
        keep = torch.ones(k, dtype=torch.bool, device=self.device)
        while True:  # the greedy result is the unique fixed point; test for it every 4 rounds (each test syncs)
            for _ in range(3):
                keep = ~(take(keep, nb) & wins).any(1)
            new = ~(take(keep, nb) & wins).any(1)
            if torch.equal(new, keep):
                return keep
            keep = new

    def _crops(self, src: _Sources, boxes: torch.Tensor, img: torch.Tensor, size: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, 3, size, size) normalised crops of ``boxes`` (channels-last) and which are non-empty.

        As the reference: the box truncated toward zero, x..ex, y..ey 1-based; 'clip' clamps them to the
        image and resamples that region, 'pad' keeps the whole box and counts pixels outside as 0. Each
        output pixel averages its area window (``area_windows`` of the region's size), read as four
        look-ups in the summed-area table."""
        x, y, ex, ey = boxes.trunc().long().unbind(1)
        h_img, w_img = take(src.height, img), take(src.width, img)
        if self.border == "clip":
            x, y = x.clamp(min=1), y.clamp(min=1)
            ex, ey = torch.minimum(ex, w_img), torch.minimum(ey, h_img)
        hc, wc = ey - y + 1, ex - x + 1
        valid = (hc > 0) & (wc > 0)
        hc, wc = hc.clamp(min=1), wc.clamp(min=1)
        t = self._constant(("steps", size), lambda: torch.arange(size))
        r0 = (y - 1)[:, None] + torch.div(t * hc[:, None], size, rounding_mode="floor")
        r1 = (y - 1)[:, None] + torch.div((t + 1) * hc[:, None] + size - 1, size, rounding_mode="floor")
        c0 = (x - 1)[:, None] + torch.div(t * wc[:, None], size, rounding_mode="floor")
        c1 = (x - 1)[:, None] + torch.div((t + 1) * wc[:, None] + size - 1, size, rounding_mode="floor")
        kh, kw = (r1 - r0).float()[:, :, None, None], (c1 - c0).float()[:, None, :, None]
        rows = [v.clamp(min=0).minimum(h_img[:, None]) * src.stride.index_select(0, img)[:, None] for v in (r0, r1)]
        cols = [v.clamp(min=0).minimum(w_img[:, None]) for v in (c0, c1)]
        base = take(src.base, img)[:, None, None]

        def at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return take(src.table, (base + r[:, :, None] + c[:, None, :]).view(-1))

        sums = at(rows[1], cols[1]).sub_(at(rows[0], cols[1])).sub_(at(rows[1], cols[0])).add_(at(rows[0], cols[0]))
        crops = sums.view(len(boxes), size, size, 3).float().div_(kh).div_(kw).sub_(NORM_MEAN).mul_(NORM_SCALE)
        return crops.permute(0, 3, 1, 2), valid

    def _net_on_crops(self, src: _Sources, boxes: torch.Tensor, img: torch.Tensor, stage: int,
                      front_key: tuple | None) -> tuple[torch.Tensor, ...]:
        """R-Net (stage 2) or O-Net (stage 3) outputs for the crops of ``boxes``, the probability of an empty
        crop set to -1. With a graphed front (so the tables are static tensors), crops + network are one
        captured graph per power-of-two bucket of boxes: the boxes are copied into the bucket's static
        buffer, and rows past len(boxes) hold harmless leftovers whose outputs are cut off."""
        size, net, chunk = (RNET_SIZE, self.rnet, self.rnet_batch) if stage == 2 else (ONET_SIZE, self.onet, self.onet_batch)

        def crops_net(bx: torch.Tensor, ix: torch.Tensor) -> tuple[torch.Tensor, ...]:
            crops, valid = self._crops(src, bx, ix, size)  # a graphed front's src: the one its entry keeps
            out = _run(net, crops.split(chunk))
            return (torch.where(valid, out[0], -1.0),) + tuple(out[1:])

        k = len(boxes)
        if front_key is None or k > GRAPH_MAX_BOXES:
            return crops_net(boxes, img)
        bucket = max(GRAPH_MIN_BOXES, 1 << (k - 1).bit_length())
        key = (stage, bucket, front_key)
        entry = self._graphs.get(key)
        if entry is None:
            static_boxes = boxes.new_zeros(bucket, 4)
            static_boxes[:, 2:] = PNET_SIZE
            static_img = img.new_zeros(bucket)
            static_boxes[:k], static_img[:k] = boxes, img
            entry = self._graphs[key] = Captured(crops_net, (static_boxes, static_img), self.device)
        else:
            entry.inputs[0][:k] = boxes
            entry.inputs[1][:k] = img
        return tuple(o[:k] for o in entry.replay())

    def _stage2(self, src: _Sources, boxes: torch.Tensor, img: torch.Tensor, front_key: tuple | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        prob, reg = self._net_on_crops(src, boxes, img, 2, front_key)
        keep = (prob > self.thresholds[1]).nonzero().squeeze(1)
        boxes, prob, reg, img = (take(v, keep) for v in (boxes, prob, reg, img))
        k = nms(boxes, prob, self.nms_thresholds[1], "union", groups=img)
        return square(calibrate(take(boxes, k), take(reg, k), plus_one=True)), take(img, k)

    def _stage3(self, src: _Sources, boxes: torch.Tensor, img: torch.Tensor, front_key: tuple | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        prob, reg, lms = self._net_on_crops(src, boxes, img, 3, front_key)
        keep = (prob > self.thresholds[2]).nonzero().squeeze(1)
        boxes, prob, reg, lms, img = (take(v, keep) for v in (boxes, prob, reg, lms, img))
        wh = (boxes[:, 2:] - boxes[:, :2] + 1)[:, None, :]
        landmarks = wh * lms + boxes[:, None, :2] - 1
        boxes = calibrate(boxes, reg, plus_one=True)
        k = nms(boxes, prob, self.nms_thresholds[2], "min", groups=img, plus_one=True)
        return take(boxes, k), take(prob, k), take(landmarks, k), take(img, k)


def _best_per_group(score: torch.Tensor, group: torch.Tensor, groups: int, k: int) -> torch.Tensor:
    """Indices (ascending) of the ``k`` best scores of each group (ties to the earlier index)."""
    order = torch.argsort(score, descending=True, stable=True)
    order = take(order, torch.argsort(take(group, order), stable=True))  # by group, best first within it
    counts = torch.bincount(group, minlength=groups)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order), device=score.device) - take(first, take(group, order))
    return take(order, (rank < k).nonzero().squeeze(1)).sort().values
