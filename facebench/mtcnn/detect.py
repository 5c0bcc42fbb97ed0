"""The MTCNN cascade (Zhang et al., SPL 2016), batched over images and kept on the device.

The algorithm is the authors' (detect_face.m): an image pyramid with scales (12 / min_face) * factor^k
down to 12 px; P-Net on every scale; per-scale NMS (0.5), NMS over scales (0.7), box regression, squaring;
R-Net on 24x24 crops, threshold, NMS (0.7), regression, squaring; O-Net on 48x48 crops, threshold,
landmarks, regression, NMS (0.7, 'min'). Crops sticking out of the image are padded with black.

What is ours is how it runs, because per-scale network calls, per-box crop loops and host round trips are
what make common implementations slow:

- One canvas per image holds every pyramid level (shelf-packed, 2-px black gaps) and, when the pyramid
  starts below scale 1, the full-resolution image. P-Net runs once on the packed levels for the whole
  batch; a cell counts only if its 12x12 window lies inside one level, so the packing changes nothing.
  Images of different sizes share the largest one's layout but are each resized to their own level
  sizes, so a detection does not depend on what else is in the batch.
- Per-scale NMS of P-Net boxes is done on the cell grid: boxes of one scale all have the same size, so
  whether two overlap by more than the threshold depends only on their cell offset (IoU 0.5 -> the 8
  neighbours). Greedy NMS then needs each candidate's neighbour table, not a K x K matrix.
- All R-Net / O-Net crops of the batch come from one ``grid_sample`` over the canvases stacked as one tall
  image. Each crop reads the pyramid level whose scale is the smallest at least crop size / box size, so
  bilinear sampling never shrinks by more than 1 / factor (area-like quality, no aliasing from sampling a
  200-px face at 24 points).
- NMS over scales and after R-Net / O-Net is batched over images (``boxes.nms`` with groups). Host syncs
  are the unavoidable data-dependent sizes (candidate counts) and the NMS convergence checks.
- At batch 1 a GPU cascade is bound by host-side kernel launches (~600 per frame measured on an H100),
  not by arithmetic. On CUDA the fixed-shape front (pyramid + P-Net) is replayed as one CUDA graph, crops +
  R-Net and crops + O-Net as one graph each per power-of-two bucket of boxes, and the box code avoids
  launches that do nothing (one-matrix NMS for small sets, single-dispatch gathers).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from facebench.models.mtcnn import ONET_SIZE, PNET_SIZE, RNET_SIZE, load_published
from facebench.mtcnn.boxes import calibrate, nms, square, take

PNET_STRIDE = 2
GAP = 2  # black pixels around every canvas region: bilinear reads at a region's edge see black
PAD_VALUE = (0.0 - 127.5) / 128.0  # a black pixel, MTCNN's crop padding, after normalisation
GRAPH_MIN_BOXES, GRAPH_MAX_BOXES = 64, 4096  # box buckets of the captured R-Net / O-Net graphs

PAPER = {"min_face": 20, "scale_factor": 0.709, "thresholds": (0.6, 0.7, 0.7), "nms": (0.5, 0.7, 0.7)}
# Denser pyramid, smaller faces and lower thresholds: the usual settings for WIDER FACE precision-recall.
WIDER = {"min_face": 10, "scale_factor": 0.79, "thresholds": (0.5, 0.5, 0.3), "nms": (0.5, 0.7, 0.7)}
PRESETS = {"paper": PAPER, "wider": WIDER}


@dataclass
class Face:
    """One detection: box (x1, y1, x2, y2) in continuous pixels (the image is [0, W] x [0, H]; not clipped,
    a face at the border may stick out), face score, landmarks (5, 2) as (x, y): left eye, right eye, nose,
    left and right mouth corner (image-left first), placed as x1 + fraction * width like the authors'."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 6),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]}


@dataclass
class _Layout:
    """Where each pyramid level sits on the canvas, for one (H, W) batch size (the largest image's)."""

    height: int
    width: int
    scales: list[float]  # nominal pyramid scales
    levels: list[tuple[int, int, int, int]]  # (y, x, h, w) slot of each level
    full: tuple[int, int] | None  # (y, x) of the full-resolution copy, when the pyramid starts below 1
    canvas_h: int
    canvas_w: int
    pnet_h: int  # P-Net runs on canvas[:pnet_h, :pnet_w]
    pnet_w: int
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class _Batch:
    """One batch on the device: the canvas and, per image, its size and the true scale of every level
    (each image is resized to its own ceil(h * s) x ceil(w * s), so results do not depend on what else is
    in the batch)."""

    canvas: torch.Tensor  # (N, Hc, Wc, 3)
    img_h: torch.Tensor  # (N,)
    img_w: torch.Tensor
    level_h: torch.Tensor  # (N, L) pixel size of each level
    level_w: torch.Tensor
    src_sy: torch.Tensor  # (N, S) scale of each crop source (levels, then the full copy)
    src_sx: torch.Tensor
    src_ok: torch.Tensor  # (N, S) sources the image would have on its own
    uniform: bool  # all images of the batch have the same size


def _even(v: int) -> int:
    return v + (v & 1)


def pyramid_scales(height: int, width: int, min_face: float, factor: float) -> list[float]:
    """The paper's scales: 12 / min_face, times factor until the shorter side drops under 12 px."""
    scales, s = [], PNET_SIZE / min_face
    while min(height, width) * s >= PNET_SIZE:
        scales.append(s)
        s *= factor
    return scales


def _skyline_pack(sizes: list[tuple[int, int]], limit: int) -> list[tuple[int, int]] | None:
    """Bottom-left skyline packing of (h, w) rectangles (each with a GAP on its right and bottom, sizes
    rounded up to even) into a strip ``limit`` wide; (y, x) per rectangle, or None if one does not fit."""
    sky = [(0, limit, 0)]  # segments (x, width, top y)
    places = []
    for h, w in sizes:
        rw, rh = _even(w + GAP), _even(h + GAP)
        best: tuple[int, int] | None = None
        for i, (x, _, _) in enumerate(sky):
            if x + rw > limit:
                break
            y, j = 0, i
            while j < len(sky) and sky[j][0] < x + rw:
                y = max(y, sky[j][2])
                j += 1
            if best is None or y < best[0]:
                best = (y, x)
        if best is None:
            return None
        y, x = best
        places.append(best)
        new = []
        for sx, sw, sy in sky:  # cut the covered span out of the skyline, then add the new top
            if sx < x:
                new.append((sx, min(sw, x - sx), sy))
            if sx + sw > x + rw:
                start = max(sx, x + rw)
                new.append((start, sx + sw - start, sy))
        new.append((x, rw, y + rh))
        new.sort()
        sky = []
        for seg in new:  # merge neighbours at the same height
            if sky and sky[-1][2] == seg[2] and sky[-1][0] + sky[-1][1] == seg[0]:
                sky[-1] = (sky[-1][0], sky[-1][1] + seg[1], seg[2])
            else:
                sky.append(seg)
    return places


def _make_layout(height: int, width: int, min_face: float, factor: float) -> _Layout:
    """Pack the pyramid levels into the smallest canvas found over a range of strip widths (skyline
    packing, ~90% of the area used vs ~75% for simple shelves: P-Net's cost is this area). Offsets are
    even so that P-Net's stride-2 cells line up with every level's own grid."""
    scales = pyramid_scales(height, width, min_face, factor)
    sizes = [(math.ceil(height * s), math.ceil(width * s)) for s in scales]
    levels: list[tuple[int, int, int, int]] = []
    pnet_h = pnet_w = 0
    if sizes:
        first = _even(sizes[0][1] + GAP)
        best: tuple[int, list[tuple[int, int]], int, int] | None = None
        for limit in range(first, 3 * first + 1, max(2, _even(first // 48))):
            places = _skyline_pack(sizes, limit)
            if places is None:
                continue
            ph = max(y + _even(h + GAP) for (y, _), (h, _) in zip(places, sizes))
            pw = max(x + _even(w + GAP) for (_, x), (_, w) in zip(places, sizes))
            if best is None or ph * pw < best[0]:
                best = (ph * pw, places, ph, pw)
        assert best is not None
        _, places, ph, pw = best
        levels = [(GAP + y, GAP + x, h, w) for (y, x), (h, w) in zip(places, sizes)]
        pnet_h, pnet_w = GAP + ph, GAP + pw
    full = None
    canvas_h, canvas_w = pnet_h, pnet_w
    if not scales or scales[0] < 1:  # pyramid starts below full resolution: keep a full copy to crop from
        full = (_even(max(pnet_h, GAP)), GAP)
        canvas_h = full[0] + height + GAP
        canvas_w = max(pnet_w, width + 2 * GAP)
    return _Layout(height, width, scales, levels, full, canvas_h, canvas_w, pnet_h, pnet_w)


def _grid_offsets(threshold: float, mode: str) -> list[tuple[int, int]]:
    """Cell offsets (dy, dx) at which two same-scale P-Net boxes (12 px, stride 2) overlap > threshold."""
    out = []
    cells = PNET_SIZE // PNET_STRIDE
    for dy in range(-cells + 1, cells):
        for dx in range(-cells + 1, cells):
            if dy == dx == 0:
                continue
            inter = (PNET_SIZE - PNET_STRIDE * abs(dy)) * (PNET_SIZE - PNET_STRIDE * abs(dx))
            area = PNET_SIZE * PNET_SIZE
            overlap = inter / (2 * area - inter) if mode == "union" else inter / area
            if overlap > threshold:
                out.append((dy, dx))
    return out


class _NoNewHostTensors(TorchDispatchMode):
    """Raises where code would make a tensor from host data (a literal, an index list): inside a CUDA graph
    capture that is a pageable host-to-device copy, which the capture refuses. The CPU stand-in for a
    capture runs under this, so the tests catch it without a GPU."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.lift_fresh.default:
            raise RuntimeError("a tensor made from host data inside a captured MTCNN step")
        return func(*args, **(kwargs or {}))


class _CaptureFailed(Exception):
    """A CUDA graph capture raised (the cause is chained)."""


class _Captured:
    """``fn(*inputs)`` captured once as a CUDA graph; ``replay()`` reruns it on the inputs' current contents
    and returns the same output tensors. Off CUDA there is no graph and ``replay()`` calls ``fn`` again:
    the tests use that to check the static-buffer logic (bucket padding, output slicing) on a CPU."""

    def __init__(self, fn, inputs: tuple[torch.Tensor, ...], device: torch.device):
        self.fn, self.inputs, self.graph = fn, inputs, None
        if device.type == "cuda":
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm-up outside the graph: cuDNN plans, cached constants
                fn(*inputs)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(self.graph):
                    self.outputs = fn(*inputs)
            except RuntimeError as err:
                raise _CaptureFailed() from err
        else:
            fn(*inputs)  # the warm-up, as on CUDA: caches fill here, not under the stand-in capture
            self.outputs = None

    def replay(self):
        if self.graph is None:
            with _NoNewHostTensors():
                self.outputs = self.fn(*self.inputs)
        else:
            self.graph.replay()
        return self.outputs


def _run(net: torch.nn.Module, chunks) -> tuple[torch.Tensor, ...]:
    """``net`` on each chunk, its outputs concatenated (no copy when there is one chunk)."""
    outs = [net(c) for c in chunks]
    return tuple(outs[0]) if len(outs) == 1 else tuple(torch.cat(o) for o in zip(*outs))


class MTCNNDetector:
    """Face detection + 5 landmarks with the three-stage cascade; ``detect`` takes a list of RGB uint8 images.

    ``thresholds`` are the P-Net / R-Net / O-Net face-probability cut-offs, ``nms`` the overlap thresholds of
    per-scale NMS (P-Net) and of the R-Net and O-Net stages (NMS over scales uses ``nms[1]``, as the
    authors do with 0.7). ``weights_dir=None`` loads the published weights from the default location.
    ``pnet_pixels`` / ``rnet_batch`` / ``onet_batch`` cap the work per network call (memory, not results).
    ``cuda_graphs`` (CUDA only) replays the pyramid + P-Net, and crops + R-Net / O-Net, as captured graphs
    when all images of a batch have one size (same results; far fewer host-side launches, see
    ``_front_graphed`` and ``_net_on_crops``). Setting ``detector.cuda_graphs = True`` on a CPU detector
    runs the same static-buffer code without graphs (for tests).
    ``resize`` builds the pyramid with antialiased bilinear (default; fast uint8 path on CPU) or with
    area averaging (what most Python ports use; several times slower on CPU). Borderline detections
    differ between the two (e.g. a 0.87 vs no false positive on the astronaut's collar), clear faces do not.
    """

    def __init__(self, weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
                 min_face: float = 20, scale_factor: float = 0.709,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 nms: tuple[float, float, float] = (0.5, 0.7, 0.7),
                 resize: str = "antialias", pnet_pixels: int = 1 << 23, rnet_batch: int = 4096,
                 onet_batch: int = 1024, cuda_graphs: bool = True,
                 nets: "tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module] | None" = None):
        if min_face < 1 or not 0 < scale_factor < 1:
            raise ValueError(f"need min_face >= 1 and 0 < scale_factor < 1, got {min_face}, {scale_factor}")
        self.device = torch.device(device)
        if nets is not None:  # networks in hand (training: a cascade whose later stages are not trained yet)
            self.pnet, self.rnet, self.onet = (n.to(self.device).eval() for n in nets)
        else:
            if weights_dir is None:
                from facebench.mtcnn import default_weights_dir

                weights_dir = default_weights_dir()
            self.pnet, self.rnet, self.onet = load_published(weights_dir, self.device)
        self.min_face = float(min_face)
        self.scale_factor = float(scale_factor)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.nms_thresholds = tuple(float(t) for t in nms)
        if resize not in ("antialias", "area"):
            raise ValueError(f"resize must be 'antialias' or 'area', got {resize!r}")
        self.resize = resize
        self.pnet_pixels, self.rnet_batch, self.onet_batch = pnet_pixels, rnet_batch, onet_batch
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        # Mining with a barely trained P-Net (early epochs, tiny profiles) passes nearly every window; a cap
        # on P-Net's candidates per call (None: no cap, the paper's cascade) bounds the NMS that follows.
        self.max_candidates: int | None = None
        self._graphs: dict[tuple, _Captured] = {}
        offsets = _grid_offsets(self.nms_thresholds[0], "union")
        self._offsets = torch.tensor(offsets, dtype=torch.long, device=self.device).reshape(-1, 2)
        # Greedy order is (score desc, raster index asc): a neighbour earlier in raster order wins ties.
        self._offset_first = (self._offsets[:, 0] < 0) | ((self._offsets[:, 0] == 0) & (self._offsets[:, 1] < 0))
        self._layouts: dict[tuple[int, int], _Layout] = {}
        self._canvas_buffer: torch.Tensor | None = None  # one detect() at a time per detector
        # Reused between calls (profiled on an H100: pinning a 640x480 frame per call cost 0.9 ms of a 13 ms
        # frame, and each small host->device copy of the geometry tables is a stream synchronisation).
        self._pinned: torch.Tensor | None = None
        self._pinned_copied: torch.cuda.Event | None = None
        self._geometry: dict[tuple, tuple[torch.Tensor, ...]] = {}
        self._constants: dict[tuple[float, ...], torch.Tensor] = {}

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
        batch, sizes = self._to_batch(images)
        with torch.inference_mode():
            det = self._cascade(batch, sizes)
        return det.double().cpu().numpy()

    def proposals(self, images: list[np.ndarray], stage: int) -> list[np.ndarray]:
        """Per image, the (K, 4) boxes x1, y1, x2, y2 that pass P-Net (``stage`` 1) or P-Net and R-Net (2),
        after their NMS and box calibration: what the next stage sees, so its training mines hard
        examples from them (the paper's R-Net and O-Net training data)."""
        if stage not in (1, 2):
            raise ValueError(f"proposals come from stage 1 (P-Net) or 2 (R-Net), not {stage}")
        out = [np.zeros((0, 4)) for _ in images]
        if not images:
            return out
        batch, sizes = self._to_batch(images)
        with torch.inference_mode():
            lay = self._layout(batch.shape[1], batch.shape[2])
            if not lay.levels:
                return out
            b, prob, reg = self._front(batch, sizes, lay)
            boxes, idx = self._stage1(b, lay, prob, reg)
            if stage == 2 and len(boxes):
                boxes, idx = self._stage2(b, lay, boxes, idx)
        boxes, idx = boxes.double().cpu().numpy(), idx.cpu().numpy()
        return [boxes[idx == i] for i in range(len(images))]

    # ------------------------------------------------------------------ input and canvas

    def _to_batch(self, images: list[np.ndarray]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Stack (pad to the largest with black) as uint8 (N, H, W, 3) on the device."""
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
        sizes = [(im.shape[0], im.shape[1]) for im in fixed]
        hmax, wmax = max(h for h, _ in sizes), max(w for _, w in sizes)
        if all(s == (hmax, wmax) for s in sizes):
            host = np.stack(fixed)
        else:
            host = np.zeros((len(fixed), hmax, wmax, 3), np.uint8)
            for i, im in enumerate(fixed):
                host[i, :im.shape[0], :im.shape[1]] = im
        t = torch.from_numpy(host)
        if self.device.type == "cuda":
            if self._pinned is None or self._pinned.shape != t.shape:
                self._pinned = torch.empty(t.shape, dtype=torch.uint8).pin_memory()
            elif self._pinned_copied is not None:
                self._pinned_copied.synchronize()  # the previous call's copy out of the buffer is done
            self._pinned.copy_(t)
            t = self._pinned.to(self.device, non_blocking=True)
            self._pinned_copied = torch.cuda.Event()
            self._pinned_copied.record()
        return t, sizes

    def _layout(self, height: int, width: int) -> _Layout:
        key = (height, width)
        lay = self._layouts.get(key)
        if lay is not None:
            return lay
        lay = _make_layout(height, width, self.min_face, self.scale_factor)
        # P-Net output map: which level each cell's full 12x12 window lies in (-1: none).
        ho = math.ceil((lay.pnet_h - 4) / 2) - 3 if lay.pnet_h else 0
        wo = math.ceil((lay.pnet_w - 4) / 2) - 3 if lay.pnet_w else 0
        cell_level = np.full((max(ho, 0), max(wo, 0)), -1, np.int64)
        for li, (y, x, h, w) in enumerate(lay.levels):
            i0, i1 = y // PNET_STRIDE, (y + h - PNET_SIZE) // PNET_STRIDE + 1
            j0, j1 = x // PNET_STRIDE, (x + w - PNET_SIZE) // PNET_STRIDE + 1
            cell_level[i0:i1, j0:j1] = li
        origins = [(y, x) for y, x, _, _ in lay.levels] + ([lay.full] if lay.full is not None else [])
        oy, ox = (torch.tensor(v, dtype=torch.float32, device=self.device).reshape(-1) for v in zip(*origins))
        lay.tensors = {"cell_level": torch.from_numpy(cell_level).to(self.device), "src_oy": oy, "src_ox": ox}
        if len(self._layouts) > 16:
            self._layouts.clear()
        self._layouts[key] = lay
        return lay

    def _prepare(self, batch: torch.Tensor, sizes: list[tuple[int, int]], lay: _Layout) -> _Batch:
        """Canvas and per-image level geometry. Levels are antialiased bilinear resizes (a proper low-pass
        filter when shrinking) or area averages; on CPU the former runs in uint8, which has a fast
        vectorised path. Channels-last storage (N, Hc, Wc, 3) makes the batch one tall image for
        ``grid_sample`` (``_flat``) and is what the CPU convolutions run fastest on."""
        n = batch.shape[0]
        uniform = all(sz == (lay.height, lay.width) for sz in sizes)
        shape = (n, lay.canvas_h, lay.canvas_w, 3)
        canvas = self._canvas_buffer
        if canvas is None or canvas.shape != shape:  # reuse: a fresh CPU buffer costs page faults each call
            canvas = self._canvas_buffer = torch.empty(shape, device=self.device)
        canvas.zero_()  # raw pixel values, black
        src = batch.permute(0, 3, 1, 2)  # (N, 3, H, W) uint8, channels-last in memory
        if self.device.type != "cpu" or self.resize == "area":
            src = src.float()
        if lay.full is not None:
            y, x = lay.full
            canvas[:, y:y + lay.height, x:x + lay.width] = batch
        dims = np.array([[[math.ceil(h * s), math.ceil(w * s)] for s in lay.scales] for h, w in sizes])
        for li, (y, x, _, _) in enumerate(lay.levels):
            if uniform:
                h, w = dims[0, li]
                canvas[:, y:y + h, x:x + w] = self._resize(src, h, w)
                continue
            for i, (ih, iw) in enumerate(sizes):
                h, w = dims[i, li]
                canvas[i:i + 1, y:y + h, x:x + w] = self._resize(src[i:i + 1, :, :ih, :iw], h, w)
        canvas.sub_(127.5).mul_(1.0 / 128.0)

        return _Batch(canvas, *self._batch_geometry(sizes, lay, dims), uniform)

    def _batch_geometry(self, sizes: list[tuple[int, int]], lay: _Layout, dims: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Per-image sizes and level scales on the device, made once per (image sizes, layout)."""
        key = (tuple(sizes), lay.height, lay.width)
        cached = self._geometry.get(key)
        if cached is not None:
            return cached
        n = len(sizes)
        hw = np.array(sizes, dtype=np.float64)
        level_ok = np.minimum(dims[..., 0], dims[..., 1]) >= PNET_SIZE  # as pyramid_scales would stop
        src_sy, src_sx, src_ok = dims[..., 0] / hw[:, :1], dims[..., 1] / hw[:, 1:], level_ok
        if lay.full is not None:
            ones = np.ones((n, 1))
            src_sy, src_sx = np.concatenate([src_sy, ones], 1), np.concatenate([src_sx, ones], 1)
            src_ok = np.concatenate([src_ok, ones > 0], 1)

        def dev(a: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype).to(self.device)

        geometry = (dev(hw[:, 0]), dev(hw[:, 1]), dev(dims[..., 0], torch.long), dev(dims[..., 1], torch.long),
                    dev(src_sy), dev(src_sx), dev(src_ok, torch.bool))
        if len(self._geometry) > 16:
            self._geometry.clear()
        self._geometry[key] = geometry
        return geometry

    def _resize(self, src: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(N, 3, H, W) -> (N, h, w, 3)."""
        if self.resize == "area" and h <= src.shape[2] and w <= src.shape[3]:
            out = F.interpolate(src, size=(int(h), int(w)), mode="area")
        else:
            out = F.interpolate(src, size=(int(h), int(w)), mode="bilinear", align_corners=False, antialias=True)
        return out.permute(0, 2, 3, 1)

    def _constant(self, values: tuple[float, ...]) -> torch.Tensor:
        """A small float tensor on the device, made once (each fresh one is a host-to-device copy)."""
        t = self._constants.get(values)
        if t is None:
            t = self._constants[values] = torch.tensor(values, dtype=torch.float32, device=self.device)
        return t

    @staticmethod
    def _flat(canvas: torch.Tensor) -> torch.Tensor:
        """The canvases stacked vertically as one (1, 3, N*Hc, Wc) image (a view, no copy)."""
        n, ch, cw, _ = canvas.shape
        return canvas.view(1, n * ch, cw, 3).permute(0, 3, 1, 2)

    # ------------------------------------------------------------------ stages

    def _cascade(self, batch: torch.Tensor, sizes: list[tuple[int, int]]) -> torch.Tensor:
        empty = torch.zeros(0, 16, device=self.device)
        lay = self._layout(batch.shape[1], batch.shape[2])
        if not lay.levels:
            return empty
        if self.cuda_graphs and all(sz == (lay.height, lay.width) for sz in sizes):
            try:
                return self._stages(batch, sizes, lay, self._front_graphed(batch, sizes, lay))
            except _CaptureFailed as err:  # a capture this torch/driver refuses: run eagerly from now on
                warnings.warn(f"MTCNN: CUDA graph capture failed ({err.__cause__}); running the cascade eagerly")
                self.cuda_graphs = False
                self._graphs.clear()
        return self._stages(batch, sizes, lay, None)

    def _stages(self, batch: torch.Tensor, sizes: list[tuple[int, int]], lay: _Layout,
                front: "_Captured | None") -> torch.Tensor:
        empty = torch.zeros(0, 16, device=self.device)
        b, prob, reg = front.outputs if front is not None else self._front(batch, sizes, lay)
        boxes, idx = self._stage1(b, lay, prob, reg)
        if len(boxes) == 0:
            return empty
        boxes, idx = self._stage2(b, lay, boxes, idx, front)
        if len(boxes) == 0:
            return empty
        boxes, scores, landmarks, idx = self._stage3(b, lay, boxes, idx, front)
        order = torch.argsort(idx, stable=True)  # nms gives score order; group by image keeping it
        return take(torch.cat((idx[:, None].float(), boxes, scores[:, None], landmarks.flatten(1)), dim=1), order)

    def _front(self, batch: torch.Tensor, sizes: list[tuple[int, int]], lay: _Layout
               ) -> tuple[_Batch, torch.Tensor, torch.Tensor]:
        """Canvas and P-Net's probability and regression maps: fixed shapes, no host sync."""
        b = self._prepare(batch, sizes, lay)
        x = b.canvas[:, :lay.pnet_h, :lay.pnet_w].permute(0, 3, 1, 2)
        per_call = max(1, self.pnet_pixels // (lay.pnet_h * lay.pnet_w))  # bounds activation memory
        prob, reg = _run(self.pnet, [c.contiguous(memory_format=torch.channels_last) for c in x.split(per_call)])
        return b, prob, reg

    def _front_graphed(self, batch: torch.Tensor, sizes: list[tuple[int, int]], lay: _Layout) -> "_Captured":
        """``_front`` as one captured graph per batch shape, replayed on ``batch``: the pyramid's resizes
        and P-Net are ~80 kernel launches whose shapes never change, which at batch 1 cost more host time
        than GPU time. Its ``outputs`` are (batch, prob, reg)."""
        key = ("front", tuple(batch.shape))
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= 32:  # many batch shapes: start again (a box graph reads its front's canvas)
                self._graphs.clear()
            cuda = self.device.type == "cuda"

            def front(static: torch.Tensor) -> tuple[_Batch, torch.Tensor, torch.Tensor]:
                if cuda:
                    self._canvas_buffer = None  # the graph's canvas comes from its own memory pool
                return self._front(static, sizes, lay)

            entry = self._capture(key, front, batch.clone())
            if cuda:
                self._canvas_buffer = None
        else:
            entry.inputs[0].copy_(batch)
        entry.replay()
        return entry

    def _net_on_crops(self, b: _Batch, lay: _Layout, boxes: torch.Tensor, idx: torch.Tensor, stage: int,
                      front: "_Captured | None") -> tuple[torch.Tensor, ...]:
        """R-Net (stage 2) or O-Net (stage 3) outputs for the crops of ``boxes``. With a graphed ``front``
        (so the canvas is a static tensor), crops + network are one captured graph per
        power-of-two bucket of boxes (~100 launches each): the boxes are copied into the bucket's static
        buffer, and rows past len(boxes) hold harmless leftovers whose outputs are cut off."""
        size, net, chunk = (RNET_SIZE, self.rnet, self.rnet_batch) if stage == 2 else (ONET_SIZE, self.onet, self.onet_batch)
        k = len(boxes)
        if front is None or k > GRAPH_MAX_BOXES:
            return _run(net, self._crops(b, lay, boxes, idx, size).split(chunk))
        bucket = max(GRAPH_MIN_BOXES, 1 << (k - 1).bit_length())
        key = (stage, bucket, tuple(front.inputs[0].shape))
        entry = self._graphs.get(key)
        if entry is None:
            static_boxes = boxes.new_tensor([0.0, 0.0, PNET_SIZE, PNET_SIZE]).repeat(bucket, 1)
            static_idx = idx.new_zeros(bucket)
            static_boxes[:k], static_idx[:k] = boxes, idx

            def crops_net(bx: torch.Tensor, ix: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return _run(net, self._crops(front.outputs[0], lay, bx, ix, size).split(chunk))

            entry = self._capture(key, crops_net, static_boxes, static_idx)
        else:
            entry.inputs[0][:k] = boxes
            entry.inputs[1][:k] = idx
        return tuple(o[:k] for o in entry.replay())

    def _capture(self, key: tuple, fn, *inputs: torch.Tensor) -> "_Captured":
        entry = self._graphs[key] = _Captured(fn, inputs, self.device)
        return entry

    def _stage1(self, b: _Batch, lay: _Layout, prob: torch.Tensor, reg: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        cell_level = lay.tensors["cell_level"]
        if cell_level.shape != prob.shape[1:]:
            raise RuntimeError(f"P-Net map {tuple(prob.shape[1:])} != layout {tuple(cell_level.shape)}")
        # Flat (image, row, col) indices: single-index gathers are much faster than 3-index ones on CPU.
        cells = cell_level.numel()
        wo = cell_level.shape[1]
        flat = ((prob >= self.thresholds[0]) & (cell_level >= 0)).view(-1).nonzero().squeeze(1)
        ni = torch.div(flat, cells, rounding_mode="floor")
        cell = flat - ni * cells
        lvl = take(cell_level.view(-1), cell)
        ii = torch.div(cell, wo, rounding_mode="floor")
        ly = ii * PNET_STRIDE - take(lay.tensors["src_oy"], lvl).long()
        lx = (cell - ii * wo) * PNET_STRIDE - take(lay.tensors["src_ox"], lvl).long()
        at = ni * b.src_sx.shape[1] + lvl  # (image, level) in the flattened per-image tables
        if not b.uniform:  # window inside this image's own level (a smaller image fills part of a slot)
            li = ni * b.level_h.shape[1] + lvl
            fits = (ly + PNET_SIZE <= take(b.level_h.view(-1), li)) & (lx + PNET_SIZE <= take(b.level_w.view(-1), li))
            sel = fits.nonzero().squeeze(1)  # one host sync
            flat, ni, ly, lx, at = (take(v, sel) for v in (flat, ni, ly, lx, at))
        if len(flat) == 0:
            return torch.zeros(0, 4, device=self.device), ni
        score = take(prob.reshape(-1), flat)
        if self.max_candidates is not None and len(flat) > self.max_candidates:  # the best-scored windows only
            top = torch.topk(score, self.max_candidates, sorted=False).indices.sort().values
            flat, ni, ly, lx, at, score = (take(v, top) for v in (flat, ni, ly, lx, at, score))
        offsets = take(reg.permute(0, 2, 3, 1).reshape(-1, 4), flat)  # reshape is a view: reg is channels-last
        sx, sy = take(b.src_sx.view(-1), at), take(b.src_sy.view(-1), at)
        x1, y1 = lx / sx, ly / sy
        boxes = torch.stack((x1, y1, x1 + PNET_SIZE / sx, y1 + PNET_SIZE / sy), dim=1)

        keep = self._grid_nms(flat, score, prob.shape).nonzero().squeeze(1)
        boxes, score, offsets, ni = (take(v, keep) for v in (boxes, score, offsets, ni))
        k = nms(boxes, score, self.nms_thresholds[1], "union", groups=ni)
        return square(calibrate(take(boxes, k), take(offsets, k))), take(ni, k)

    def _grid_nms(self, flat: torch.Tensor, score: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Greedy per-scale NMS of P-Net candidates via their grid neighbours (see module docstring).

        ``flat`` are the candidates' sorted flat indices into the (N, H', W') map; neighbours are found by
        binary search in it. Cells of different levels are >= 7 cells apart on the packed map, so they are
        never neighbours; the bounds check keeps a row's end from wrapping onto the next row or image.
        """
        _, ho, wo = shape
        k = len(flat)
        if len(self._offsets) == 0:  # threshold so high that no two same-scale boxes exceed it
            return torch.ones(k, dtype=torch.bool, device=self.device)
        dy, dx = self._offsets[:, 0], self._offsets[:, 1]
        row = torch.div(flat, wo, rounding_mode="floor")
        ii, jj = row % ho, flat % wo
        inside = ((ii[:, None] + dy >= 0) & (ii[:, None] + dy < ho) & (jj[:, None] + dx >= 0)
                  & (jj[:, None] + dx < wo))
        target = flat[:, None] + dy * wo + dx
        nb = torch.searchsorted(flat, target).clamp(max=k - 1)
        found = inside & (take(flat, nb) == target)
        nb_score = take(score, nb)
        s = score[:, None]
        wins = found & ((nb_score > s) | ((nb_score == s) & self._offset_first))
        keep = torch.ones(k, dtype=torch.bool, device=self.device)
        while True:  # the greedy result is the unique fixed point; test for it every 4 rounds (each test syncs)
            for _ in range(3):
                keep = ~(take(keep, nb) & wins).any(1)
            new = ~(take(keep, nb) & wins).any(1)
            if torch.equal(new, keep):
                return keep
            keep = new

    def _crops(self, b: _Batch, lay: _Layout, boxes: torch.Tensor, idx: torch.Tensor, size: int) -> torch.Tensor:
        """(K, 3, size, size) crops of ``boxes`` from one grid_sample over the stacked canvases."""
        n, ch, cw, _ = b.canvas.shape
        k = len(boxes)
        side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
        need = size / side
        src_s = take(torch.minimum(b.src_sx, b.src_sy), idx)  # (K, S)
        src_ok = take(b.src_ok, idx)
        ok = (src_s >= need[:, None] * 0.999) & src_ok
        src = torch.where(ok, src_s, torch.inf).argmin(1)
        src = torch.where(ok.any(1), src, torch.where(src_ok, src_s, -1.0).argmax(1))
        at = idx * b.src_sx.shape[1] + src
        scale = torch.stack((take(b.src_sx.view(-1), at), take(b.src_sy.view(-1), at)), 1)  # (K, 2) x, y
        origin = torch.stack((take(lay.tensors["src_ox"], src), take(lay.tensors["src_oy"], src) + idx * ch), 1)
        # Each crop is an axis-aligned affine map of the output grid (affine_grid's cells sit at
        # (i + 0.5) / size of the box, as the crop's pixel centres) into the flat canvas' [-1, 1] frame.
        extent = self._constant((cw, n * ch))
        wh = boxes[:, 2:] - boxes[:, :2]
        shift = (2.0 / extent) * ((boxes[:, :2] + wh / 2) * scale + origin) - 1.0
        theta = torch.cat((torch.diag_embed(wh * scale / extent), shift[:, :, None]), dim=2)  # (K, 2, 3)
        grid = F.affine_grid(theta, [k, 3, size, size], align_corners=False)
        out = F.grid_sample(self._flat(b.canvas), grid.view(1, k * size, size, 2), mode="bilinear",
                            padding_mode="border", align_corners=False)
        out = out.view(3, k, size, size).transpose(0, 1)
        # Pixels outside the image are MTCNN's black padding (the canvas only has a GAP of black).
        steps = (torch.arange(size, device=self.device, dtype=torch.float32) + 0.5) / size
        xy = boxes[:, :2, None] + steps * wh[:, :, None]  # (K, 2, size) image coordinates
        limit = torch.stack((take(b.img_w, idx), take(b.img_h, idx)), 1)
        ok = (xy >= 0) & (xy < limit[:, :, None])
        inside = ok[:, None, 1, :, None] & ok[:, None, 0, None, :]
        return torch.where(inside, out, PAD_VALUE).contiguous(memory_format=torch.channels_last)

    def _stage2(self, b: _Batch, lay: _Layout, boxes: torch.Tensor, idx: torch.Tensor,
                front: "_Captured | None" = None) -> tuple[torch.Tensor, torch.Tensor]:
        prob, reg = self._net_on_crops(b, lay, boxes, idx, 2, front)
        keep = (prob > self.thresholds[1]).nonzero().squeeze(1)
        boxes, prob, reg, idx = (take(v, keep) for v in (boxes, prob, reg, idx))
        k = nms(boxes, prob, self.nms_thresholds[1], "union", groups=idx)
        return square(calibrate(take(boxes, k), take(reg, k))), take(idx, k)

    def _stage3(self, b: _Batch, lay: _Layout, boxes: torch.Tensor, idx: torch.Tensor,
                front: "_Captured | None" = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        prob, reg, lms = self._net_on_crops(b, lay, boxes, idx, 3, front)
        keep = (prob > self.thresholds[2]).nonzero().squeeze(1)
        boxes, prob, reg, lms, idx = (take(v, keep) for v in (boxes, prob, reg, lms, idx))
        wh = (boxes[:, 2:] - boxes[:, :2])[:, None, :]
        landmarks = boxes[:, None, :2] + lms * wh
        boxes = calibrate(boxes, reg)
        k = nms(boxes, prob, self.nms_thresholds[2], "min", groups=idx)
        return take(boxes, k), take(prob, k), take(landmarks, k), take(idx, k)
