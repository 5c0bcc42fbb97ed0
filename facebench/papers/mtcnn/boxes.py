"""Box operations of the MTCNN cascade, in torch so they run where the detector runs (CPU or CUDA).

By default coordinates are continuous pixels: a box (x1, y1, x2, y2) covers [x1, x2) x [y1, y2), its width
is x2 - x1, and the whole W x H image is (0, 0, W, H). ``plus_one`` selects the MATLAB-style convention of
the authors' code (x1..x2 are inclusive pixel indices, the width is x2 - x1 + 1), which the reference
cascade uses in its R-Net / O-Net calibration and its last NMS. All functions take (K, 4) float tensors.

Non-maximum suppression is the exact greedy algorithm (highest score first, drop every remaining box that
overlaps a kept one by more than the threshold) but without a loop over boxes: with the boxes sorted by
score, "i is kept" is "no kept j before i overlaps i", a triangular system that a Jacobi iteration
(``keep <- valid & ~any(keep_j & overlaps(j, i))``) solves exactly; after t sweeps the first t boxes are
final, and in practice a handful of sweeps settle it because suppression chains are short. Groups (one
per image, or per image and scale) are padded side by side so one tensor op serves all of them.
"""

from __future__ import annotations

import torch

# Elements of one (groups, K, K) overlap block; bigger problems are cut into chunks or blocks.
NMS_BLOCK_ELEMENTS = 1 << 24
# Up to this many K x K elements (K <= 1024 boxes) all groups share one matrix (``_nms_one_matrix``).
NMS_ONE_MATRIX_ELEMENTS = 1 << 20


def take(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t[index]`` along dim 0 via index_select: same result, but it avoids the advanced-indexing kernel,
    which on CPU costs milliseconds (thread-pool overhead) for a few thousand elements."""
    if index.dim() == 1:  # the common case, one dispatch instead of three
        return t.index_select(0, index)
    return t.index_select(0, index.reshape(-1)).reshape(*index.shape, *t.shape[1:])


def box_area(boxes: torch.Tensor, plus_one: bool = False) -> torch.Tensor:
    """Width * height; ``plus_one`` counts both edge pixels ((x2 - x1 + 1) * (y2 - y1 + 1)), the convention
    of the authors' MATLAB code and of the reference's last NMS."""
    one = 1 if plus_one else 0
    return (boxes[..., 2] - boxes[..., 0] + one).clamp(min=0) * (boxes[..., 3] - boxes[..., 1] + one).clamp(min=0)


def pair_overlap(a: torch.Tensor, b: torch.Tensor, mode: str = "union", plus_one: bool = False) -> torch.Tensor:
    """Overlap of boxes a (..., 4) and b (..., 4) paired element by element (broadcasting).

    ``mode='union'`` is IoU; ``'min'`` divides the intersection by the smaller area, which MTCNN's last
    stage uses to drop a small box lying inside a bigger one even when their IoU is low. The float32
    arithmetic is torchvision's NMS kernel's (inter / (area_a + area_b - inter)); ``plus_one`` adds 1 to
    every width and height (the reference's ``nms_numpy`` and the authors' ``nms.m``).
    """
    one = 1 if plus_one else 0
    w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0]) + one).clamp(min=0)
    h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1]) + one).clamp(min=0)
    inter = w * h
    area_a, area_b = box_area(a, plus_one), box_area(b, plus_one)
    if mode == "union":
        denom = area_a + area_b - inter
    elif mode == "min":
        denom = torch.minimum(area_a, area_b)
    else:
        raise ValueError(f"overlap mode must be 'union' or 'min', got {mode!r}")
    return inter / denom.clamp(min=torch.finfo(inter.dtype).tiny)


def box_overlap(a: torch.Tensor, b: torch.Tensor, mode: str = "union", plus_one: bool = False) -> torch.Tensor:
    """Pairwise overlap (..., N, M) of boxes a (..., N, 4) and b (..., M, 4); see ``pair_overlap``."""
    return pair_overlap(a[..., :, None, :], b[..., None, :, :], mode, plus_one)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union (N, M)."""
    return box_overlap(a, b, "union")


def _greedy_keep(suppress: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Solve keep[i] = valid[i] & ~any_j(keep[j] & suppress[j, i]) for a strictly upper triangular
    ``suppress`` (..., K, K) by Jacobi sweeps; exact greedy NMS in score order."""
    keep = valid.clone()
    while True:
        new = valid & ~(suppress & keep.unsqueeze(-1)).any(-2)
        if torch.equal(new, keep):
            return keep
        keep = new


def _nms_padded(boxes: torch.Tensor, valid: torch.Tensor, threshold: float, mode: str, plus_one: bool
                ) -> torch.Tensor:
    """Greedy NMS for (G, K, 4) score-sorted groups padded to K; returns the (G, K) keep mask."""
    k = boxes.shape[1]
    upper = torch.ones(k, k, dtype=torch.bool, device=boxes.device).triu_(1)
    suppress = (box_overlap(boxes, boxes, mode, plus_one) > threshold) & upper
    return _greedy_keep(suppress, valid)


def _nms_blocks(boxes: torch.Tensor, threshold: float, mode: str, plus_one: bool, block: int) -> torch.Tensor:
    """Greedy NMS of one long score-sorted group in blocks of ``block`` boxes: each block is first
    cleared against the boxes kept so far, then solved on its own. Memory O(block * kept)."""
    keep = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    kept = boxes[:0]
    for start in range(0, len(boxes), block):
        b = boxes[start:start + block]
        valid = torch.ones(len(b), dtype=torch.bool, device=boxes.device)
        if len(kept):
            valid = ~(box_overlap(kept, b, mode, plus_one) > threshold).any(0)
        k = _nms_padded(b[None], valid[None], threshold, mode, plus_one)[0]
        keep[start:start + block] = k
        kept = torch.cat((kept, take(b, k.nonzero().squeeze(1))))
    return keep


def _nms_one_matrix(boxes: torch.Tensor, order: torch.Tensor, threshold: float, mode: str, plus_one: bool,
                    groups: torch.Tensor | None) -> torch.Tensor:
    """Greedy NMS of all groups in one (K, K) system: a pair counts only within a group. For the few
    hundred boxes of one frame this is ~20 tensor ops against ~60 for the padded-groups path, which is
    what a single-image call on a GPU pays for (each op is a kernel launch, not arithmetic)."""
    b = take(boxes, order).float()
    suppress = (box_overlap(b, b, mode, plus_one) > threshold).triu_(1)
    if groups is not None:
        g = take(groups, order)
        suppress &= g[:, None] == g[None, :]
    keep = _greedy_keep(suppress, torch.ones(len(b), dtype=torch.bool, device=boxes.device))
    return take(order, keep.nonzero().squeeze(1))  # already in score order (ties: input order)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union",
        groups: torch.Tensor | None = None, plus_one: bool = False) -> torch.Tensor:
    """Greedy non-maximum suppression; indices of the kept boxes, highest score first.

    A box is dropped when it overlaps a higher-scoring kept box of the same group by more than
    ``threshold`` (``mode`` 'union' = IoU or 'min', ``plus_one`` the +1 pixel convention, see
    ``pair_overlap``). Equal scores keep the input order. ``groups`` (K,) integer labels run independent
    suppressions in one call (batched NMS).
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    if n * n <= NMS_ONE_MATRIX_ELEMENTS:  # one score-ordered K x K system, other groups masked out
        return _nms_one_matrix(boxes, order, threshold, mode, plus_one, groups)
    if groups is None:
        groups = torch.zeros(n, dtype=torch.long, device=boxes.device)
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    # Biggest groups first so that chunks pad groups of similar size; within a group, by score.
    rank = torch.empty_like(counts)
    rank[torch.argsort(counts, descending=True, stable=True)] = torch.arange(len(counts), device=boxes.device)
    order = take(order, torch.argsort(take(rank, take(inverse, order)), stable=True))
    sizes = torch.sort(counts, descending=True).values
    starts = torch.cumsum(sizes, 0) - sizes
    g_sorted = take(rank, take(inverse, order))
    pos = torch.arange(n, device=boxes.device) - take(starts, g_sorted)
    sorted_boxes = take(boxes, order).float()
    keep = torch.zeros(n, dtype=torch.bool, device=boxes.device)

    sizes_host, starts_host = torch.stack((sizes, starts)).tolist()  # one device-to-host copy
    g0 = 0
    while g0 < len(sizes_host):
        kmax = sizes_host[g0]
        if kmax * kmax > NMS_BLOCK_ELEMENTS:  # one long group: blocks within it
            sl = slice(starts_host[g0], starts_host[g0] + kmax)
            keep[sl] = _nms_blocks(sorted_boxes[sl], threshold, mode, plus_one, max(1, NMS_BLOCK_ELEMENTS // kmax))
            g0 += 1
            continue
        g1 = min(len(sizes_host), g0 + max(1, NMS_BLOCK_ELEMENTS // (kmax * kmax)))
        sel = slice(starts_host[g0], starts_host[g1 - 1] + sizes_host[g1 - 1])
        padded = sorted_boxes.new_zeros(g1 - g0, kmax, 4)
        valid = torch.zeros(g1 - g0, kmax, dtype=torch.bool, device=boxes.device)
        gi, pi = g_sorted[sel] - g0, pos[sel]
        padded[gi, pi] = sorted_boxes[sel]
        valid[gi, pi] = True
        keep[sel] = _nms_padded(padded, valid, threshold, mode, plus_one)[gi, pi]
        g0 = g1
    kept = take(order, keep.nonzero().squeeze(1))
    return take(kept, torch.argsort(take(scores, kept), descending=True, stable=True))


def calibrate(boxes: torch.Tensor, offsets: torch.Tensor, plus_one: bool = False) -> torch.Tensor:
    """Apply MTCNN's box regression: (x1, y1, x2, y2) + (dx1, dy1, dx2, dy2) * (w, h, w, h).

    w = x2 - x1 (the reference after P-Net) or, with ``plus_one``, x2 - x1 + 1 (the reference's ``bbreg``
    after R-Net and O-Net, the authors' convention); same for h."""
    one = 1 if plus_one else 0
    w = boxes[:, 2] - boxes[:, 0] + one
    h = boxes[:, 3] - boxes[:, 1] + one
    return boxes + offsets * torch.stack((w, h, w, h), dim=1)


def square(boxes: torch.Tensor) -> torch.Tensor:
    """The square with the box's centre and its longer side, the shape R-Net and O-Net see; in the
    reference's float arithmetic (``rerec``): x1 + w * 0.5 - l * 0.5, y1 + h * 0.5 - l * 0.5, then + l."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack((x1, y1, x1 + side, y1 + side), dim=1)


def clip_boxes(boxes: torch.Tensor, width: float | torch.Tensor, height: float | torch.Tensor) -> torch.Tensor:
    """Boxes cut to the image [0, width] x [0, height] (per-box tensors allowed)."""
    x = boxes[:, 0::2].clamp(min=0)
    y = boxes[:, 1::2].clamp(min=0)
    x = torch.minimum(x, torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device).reshape(-1, 1))
    y = torch.minimum(y, torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device).reshape(-1, 1))
    return torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)


def crop_padding(boxes: torch.Tensor, width: float | torch.Tensor,
                 height: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a crop of ``boxes`` reads the image and how far it sticks out of it.

    Returns (clipped boxes, padding (K, 4) = left, top, right, bottom, >= 0). The authors' MTCNN code fills
    the part of a crop outside the image with black (zeros) rather than shifting or stretching the box (the
    cascade's ``border='pad'``; its default follows the reference and stretches), so a face at the
    border keeps its position inside the crop; a crop loop copies the clipped region to
    [left, top, size - right, size - bottom] of a black canvas (in box pixels).
    """
    clipped = clip_boxes(boxes, width, height)
    pad = torch.stack((clipped[:, 0] - boxes[:, 0], clipped[:, 1] - boxes[:, 1],
                       boxes[:, 2] - clipped[:, 2], boxes[:, 3] - clipped[:, 3]), dim=1)
    return clipped, pad.clamp(min=0)
