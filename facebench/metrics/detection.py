"""Face-detection average precision as the official WIDER FACE evaluation kit computes it (datasets.md §5).

The kit is ``eval_tools`` of the WIDER FACE release (Shuo Yang, 2015: ``wider_eval.m``, ``read_pred.m``,
``norm_score.m``, ``evaluation.m``, ``boxoverlap.m``, ``plot/VOCap.m``); each rule below is what its code
does, in its order of operations, so that the same detections give the kit's number:

1. Detections of each image are sorted by score, descending (``read_pred.m``; MATLAB's sort is stable).
2. Scores are normalised once over the whole set (``norm_score.m``): (s - min) / (max - min) with min and
   max over every detection of every image, starting from realmax('single') and realmin('single'), so a
   set whose scores are all equal gives 0/0 = NaN scores, which no threshold counts (the kit's result).
3. Overlap is IoU with the +1 pixel convention (``boxoverlap.m``): a box x, y, w, h spans pixels x..x + w,
   widths and heights are x2 - x1 + 1; IoU >= 0.5 matches (``evaluation.m``: ``IoU_thresh = 0.5``).
4. Per image (``image_evaluation``), detections in score order each take the ground-truth face of highest
   IoU (the first on ties). At IoU >= 0.5 to a face outside the subset's keep list the detection is
   ignored (neither proposal nor hit); to a kept face not yet found it is a hit; to a kept face already
   found it stays a proposal without a hit. Below 0.5 it is a proposal (a false positive).
5. Images without ground-truth faces, or without detections, are skipped: their detections count
   nowhere, while the kept faces of every image count towards recall (``count_face``).
6. 1,000 score thresholds 1 - t / 1000, t = 1..1000 (``thresh_num``): at each, an image contributes the
   proposals and hits among its detections down to the last one scoring >= the threshold; precision and
   recall are the sums over images divided by the proposals and by the kept faces (``dataset_pr_info``).
7. AP is ``VOCap`` of that curve: recall framed by 0 and 1, precision by 0 and 0, the precision envelope
   from the right (MATLAB's max ignores a NaN precision, i.e. a threshold with no proposal), and the area
   over the steps where recall changes.

The kit's keep lists (``wider_{easy,medium,hard}_val.mat``) are ``ImageTruth.counts``; synthetic scenes have
none and use an approximation by face height (``papers/mtcnn/evaluate.py``), labelled so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IOU_THRESHOLD = 0.5  # evaluation.m: IoU_thresh
THRESHOLDS = 1000  # evaluation.m: thresh_num
SINGLE_REALMIN, SINGLE_REALMAX = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)


@dataclass
class ImageDetections:
    boxes: np.ndarray            # (k, 4) x1, y1, w, h (WIDER's submission format)
    scores: np.ndarray           # (k,)


@dataclass
class ImageTruth:
    boxes: np.ndarray            # (n, 4) x1, y1, w, h
    counts: np.ndarray           # (n,) bool: the face is in the subset's keep list (False: ignored)


def iou_xywh(a: np.ndarray, b: np.ndarray, plus_one: bool = False) -> np.ndarray:
    """(k, n) IoU of boxes a (k, 4) and b (n, 4), both x, y, w, h. Continuous (x2 = x + w, width w) by
    default; ``plus_one`` is the kit's convention (x2 = x + w spans w + 1 pixels, ``boxoverlap.m``), where
    a non-positive intersection width or height gives 0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    one = 1.0 if plus_one else 0.0
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]) + one
    h = np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]) + one
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = ((a[:, 2] + one) * (a[:, 3] + one))[:, None] + ((b[:, 2] + one) * (b[:, 3] + one))[None] - inter
    return np.where((w > 0) & (h > 0) & (union > 0), inter / np.where(union > 0, union, 1.0), 0.0)


def normalise_scores(scores: list[np.ndarray]) -> list[np.ndarray]:
    """``norm_score.m``: every image's scores mapped by one min-max over the whole set (rule 2)."""
    top, bottom = SINGLE_REALMIN, SINGLE_REALMAX
    for s in scores:
        if len(s):
            top, bottom = max(top, float(np.max(s))), min(bottom, float(np.min(s)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return [(np.asarray(s, dtype=np.float64) - bottom) / (top - bottom) for s in scores]


def image_evaluation(boxes: np.ndarray, truth: ImageTruth, iou_threshold: float = IOU_THRESHOLD
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Rule 4 for one image's detections (already in score order): per detection, whether it is a
    proposal (not matched to an ignored face) and the number of kept faces found so far."""
    overlap = iou_xywh(boxes, truth.boxes, plus_one=True)
    best = overlap.argmax(1)  # the first face on ties, as MATLAB's max
    matched = overlap[np.arange(len(boxes)), best] >= iou_threshold
    kept = np.asarray(truth.counts, dtype=bool)[best]
    proposal = ~(matched & ~kept)
    hit = np.zeros(len(boxes), dtype=bool)
    candidates = np.flatnonzero(matched & kept)
    _, first = np.unique(best[candidates], return_index=True)  # a face is found by its first match only
    hit[candidates[first]] = True
    return proposal, np.cumsum(hit)


def threshold_counts(scores: np.ndarray, proposal: np.ndarray, found: np.ndarray,
                     thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image_pr_info``: at each threshold, proposals and hits among the detections down to the last one
    scoring >= it. With scores in descending order that last one is the count of scores >= the threshold
    (a binary search); a NaN score passes no threshold, so NaN scores are looked at one by one."""
    if np.isnan(scores).any():
        ok = scores[None, :] >= thresholds[:, None]
        count = np.where(ok.any(1), len(scores) - np.argmax(ok[:, ::-1], axis=1), 0)
    else:
        count = np.searchsorted(-scores, -thresholds, side="right")
    last = np.maximum(count - 1, 0)
    proposals = np.where(count > 0, np.cumsum(proposal)[last], 0)
    hits = np.where(count > 0, found[last], 0)
    return proposals, hits


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """``VOCap.m``: area under the precision envelope over the recall steps (rule 7)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = np.fmax(mpre[i], mpre[i + 1])  # fmax: a NaN precision yields to its neighbour, as max in MATLAB
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


def average_precision(detections: list[ImageDetections], truths: list[ImageTruth],
                      iou_threshold: float = IOU_THRESHOLD, thresholds: int = THRESHOLDS
                      ) -> dict[str, float | np.ndarray]:
    """The kit's AP over a set of images (lists aligned by image), and its precision / recall at each of
    its score thresholds (``thresholds`` descending). Raises ValueError when no face counts (the kit would
    divide by zero)."""
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection lists for {len(truths)} images")
    positives = int(sum(int(np.count_nonzero(t.counts)) for t in truths))
    if positives == 0:
        raise ValueError("no ground-truth face counts in this subset: AP is undefined")
    order = [np.argsort(-np.asarray(d.scores, dtype=np.float64).reshape(-1), kind="stable") for d in detections]
    scores = normalise_scores([np.asarray(d.scores, dtype=np.float64).reshape(-1)[o] for d, o in zip(detections, order)])
    levels = 1.0 - np.arange(1, thresholds + 1) / thresholds
    proposals, hits = np.zeros(thresholds), np.zeros(thresholds)
    for d, o, s, t in zip(detections, order, scores, truths):
        if len(t.boxes) == 0 or len(s) == 0:  # rule 5
            continue
        proposal, found = image_evaluation(np.asarray(d.boxes, dtype=np.float64).reshape(-1, 4)[o], t, iou_threshold)
        p, h = threshold_counts(s, proposal, found, levels)
        proposals += p
        hits += h
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = hits / proposals
    recall = hits / positives
    return {"ap": voc_ap(recall, precision), "precision": precision, "recall": recall, "positives": positives,
            "thresholds": levels}
