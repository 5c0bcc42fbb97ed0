"""Box operations: overlaps, greedy NMS (exactness, both modes, groups, chunked paths), calibration, squaring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import facebench.papers.mtcnn.boxes as B
from facebench.papers.mtcnn.boxes import box_overlap, calibrate, clip_boxes, crop_padding, iou, nms, square


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def greedy_reference(boxes: np.ndarray, scores: np.ndarray, thr: float, mode: str) -> list[int]:
    """The textbook loop, one box at a time."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        ov = box_overlap(torch.tensor(boxes[[i]]), torch.tensor(boxes[kept]), mode)[0] if kept else torch.zeros(0)
        if not bool((ov > thr).any()):
            kept.append(i)
    return kept


def test_iou_hand_computed():
    a = t([[0, 0, 10, 10]])
    b = t([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 10]])
    # 25 / (100 + 100 - 25); identical; disjoint; half inside
    assert torch.allclose(iou(a, b), t([[25 / 175, 1.0, 0.0, 0.5]]))


def test_min_overlap_hand_computed():
    big, small = t([[0, 0, 20, 20]]), t([[2, 2, 8, 8]])
    assert box_overlap(big, small, "union").item() == pytest.approx(36 / 400)
    assert box_overlap(big, small, "min").item() == pytest.approx(1.0)
    assert box_overlap(t([[0, 0, 10, 10]]), t([[5, 5, 15, 15]]), "min").item() == pytest.approx(0.25)
    with pytest.raises(ValueError):
        box_overlap(big, small, "max")


def test_nms_is_greedy_not_fast_nms():
    # B overlaps A (IoU 0.667) and goes; C overlaps only B (0.667) and A by 0.43, so greedy keeps C
    # (its suppressor was itself suppressed); a one-pass "fast NMS" would wrongly drop it.
    boxes = t([[0, 0, 10, 10], [2, 0, 12, 10], [4, 0, 14, 10]])
    scores = t([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]


def test_nms_orders_by_score_and_threshold_is_strict():
    boxes = t([[20, 20, 30, 30], [0, 0, 10, 10], [0, 0, 12, 10]])  # IoU(1, 2) = 100/120
    scores = t([0.5, 0.7, 0.9])
    assert nms(boxes, scores, 0.5).tolist() == [2, 0]
    assert nms(boxes, scores, 100 / 120).tolist() == [2, 1, 0]  # equal to the threshold: kept


def test_nms_min_mode_drops_box_inside_box():
    boxes = t([[0, 0, 20, 20], [2, 2, 8, 8]])
    scores = t([0.9, 0.95])
    assert nms(boxes, scores, 0.7, "union").tolist() == [1, 0]
    assert nms(boxes, scores, 0.7, "min").tolist() == [1]


def test_nms_groups_are_independent():
    boxes = t([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [1, 1, 11, 11]])
    scores = t([0.9, 0.8, 0.7, 0.95])
    assert nms(boxes, scores, 0.5, groups=torch.tensor([0, 0, 1, 1])).tolist() == [3, 0]
    assert nms(boxes, scores, 0.5).tolist() == [3]


def test_nms_ties_keep_input_order():
    boxes = t([[0, 0, 10, 10], [1, 0, 11, 10]])
    assert nms(boxes, t([1.0, 1.0]), 0.5).tolist() == [0]


def test_nms_empty():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


@pytest.mark.parametrize("mode", ["union", "min"])
@pytest.mark.parametrize("block_elements,one_matrix", [(1 << 24, 1 << 20),  # all groups in one matrix
                                                       (1 << 24, 0), (40, 0), (3000, 0)])  # padded groups:
def test_nms_matches_loop_on_random_clusters(mode, block_elements, one_matrix, monkeypatch):  # one block;
    monkeypatch.setattr(B, "NMS_BLOCK_ELEMENTS", block_elements)  # blocked single group; chunks
    monkeypatch.setattr(B, "NMS_ONE_MATRIX_ELEMENTS", one_matrix)
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 200, (6, 2))
    xy = centres[rng.integers(0, 6, 150)] + rng.normal(0, 6, (150, 2))
    wh = rng.uniform(10, 30, (150, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = np.round(rng.uniform(0, 1, 150), 2).astype(np.float32)  # rounded: ties happen
    groups = rng.integers(0, 4, 150)
    got = nms(torch.tensor(boxes), torch.tensor(scores), 0.4, mode, torch.tensor(groups))
    want: list[int] = []
    for g in range(4):
        idx = np.flatnonzero(groups == g)
        want += [int(idx[k]) for k in greedy_reference(boxes[idx], scores[idx], 0.4, mode)]
    assert sorted(got.tolist()) == sorted(want)
    assert np.all(np.diff(scores[got.numpy()]) <= 0)


def test_calibrate_hand_computed():
    boxes = t([[10, 20, 30, 60]])  # w 20, h 40
    out = calibrate(boxes, t([[0.1, -0.1, 0.2, 0.05]]))
    assert torch.allclose(out, t([[12, 16, 34, 62]]))


def test_square_keeps_centre_and_longer_side():
    assert torch.allclose(square(t([[10, 20, 30, 60]])), t([[0, 20, 40, 60]]))
    assert torch.allclose(square(t([[0, 0, 8, 4]])), t([[0, -2, 8, 6]]))


def test_clip_and_crop_padding():
    boxes = t([[-5, 10, 25, 50], [2, 3, 4, 5]])
    assert torch.allclose(clip_boxes(boxes, 20, 40), t([[0, 10, 20, 40], [2, 3, 4, 5]]))
    clipped, pad = crop_padding(boxes, 20, 40)
    assert torch.allclose(clipped, t([[0, 10, 20, 40], [2, 3, 4, 5]]))
    assert torch.allclose(pad, t([[5, 0, 5, 10], [0, 0, 0, 0]]))
    # per-box image sizes
    assert torch.allclose(clip_boxes(boxes, t([10, 3]), t([40, 4])), t([[0, 10, 10, 40], [2, 3, 3, 4]]))
