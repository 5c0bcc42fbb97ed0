"""Face-detection average precision, as WIDER FACE scores it (datasets.md §5).

Detections of the whole set are taken in descending score. Each is matched to the ground-truth face
of its image with the highest IoU; at IoU ≥ 0.5 it is a true positive if that face counts and is
still unmatched, a false positive if that face was already taken, and *ignored* (neither) if that
face is outside the subset's keep list. Below 0.5 it is a false positive. AP is the area under the
precision envelope (VOC all-point interpolation) with recall over the faces that count.
IoU is continuous (x2 = x1 + w), without the eval kit's +1 pixel convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ImageDetections:
    boxes: np.ndarray            # (k, 4) x1, y1, w, h
    scores: np.ndarray           # (k,)


@dataclass
class ImageTruth:
    boxes: np.ndarray            # (n, 4) x1, y1, w, h
    counts: np.ndarray           # (n,) bool: the face is in the subset (False: ignored)


def iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(k, n) IoU of boxes a (k, 4) and b (n, 4), both x, y, w, h."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def average_precision(detections: list[ImageDetections], truths: list[ImageTruth], iou_threshold: float = 0.5
                      ) -> dict[str, float | np.ndarray]:
    """AP over a set of images (lists aligned by image); also the precision/recall curve."""
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection lists for {len(truths)} images")
    positives = int(sum(int(np.count_nonzero(t.counts)) for t in truths))
    if positives == 0:
        raise ValueError("no ground-truth face counts in this subset: AP is undefined")
    flat = [(float(s), i, j) for i, d in enumerate(detections) for j, s in enumerate(np.asarray(d.scores).reshape(-1))]
    flat.sort(key=lambda x: (-x[0], x[1], x[2]))  # ties: image order, then detection order
    taken = [np.zeros(len(t.counts), dtype=bool) for t in truths]
    overlaps = [iou_xywh(d.boxes, t.boxes) if len(t.boxes) else np.zeros((len(d.scores), 0))
                for d, t in zip(detections, truths)]
    tp, fp = [], []
    for _, i, j in flat:
        row = overlaps[i][j]
        if row.size and row.max() >= iou_threshold:
            g = int(row.argmax())
            if not truths[i].counts[g]:
                continue  # matched to an ignored face: neither
            if taken[i][g]:
                tp.append(0), fp.append(1)
            else:
                taken[i][g] = True
                tp.append(1), fp.append(0)
        else:
            tp.append(0), fp.append(1)
    ctp, cfp = np.cumsum(tp, dtype=np.float64), np.cumsum(fp, dtype=np.float64)
    recall = ctp / positives
    precision = np.divide(ctp, ctp + cfp, out=np.zeros_like(ctp), where=(ctp + cfp) > 0)
    # all-point interpolation: precision envelope, area over recall steps
    r = np.concatenate([[0.0], recall, [recall[-1] if recall.size else 0.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    for k in range(len(p) - 2, -1, -1):
        p[k] = max(p[k], p[k + 1])
    steps = np.nonzero(r[1:] != r[:-1])[0]
    ap = float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))
    return {"ap": ap, "precision": precision, "recall": recall, "positives": positives}
