"""The cascade's evaluation: official keep lists (by the faces' annotation-file index) replace the
face-height subsets; a hand-computed AP and landmark error."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facebench.data.formats.wider import Scene
from facebench.papers.mtcnn.evaluate import evaluate_cascade


class FixedDetections:
    """Stands in for the cascade: the same rows (image, x1, y1, x2, y2, score, 5 points) for a batch."""

    def __init__(self, rows: np.ndarray):
        self.rows = rows

    def detect_arrays(self, images):
        return self.rows


def test_keep_lists_decide_which_faces_count_and_ap_is_hand_computed(tmp_path):
    path = tmp_path / "0--Parade" / "a.jpg"
    path.parent.mkdir()
    cv2.imwrite(str(path), np.zeros((120, 120, 3), np.uint8))
    boxes = np.array([[10.0, 10, 30, 30], [50, 50, 90, 90], [5, 80, 20, 95]])  # annotation faces 0, 2, 3
    points = np.full((3, 5, 2), np.nan)
    points[0] = [[14, 16], [26, 16], [20, 20], [15, 25], [25, 25]]
    scene = Scene(path, "0--Parade/a.jpg", boxes, points, np.array([0, 2, 3]))
    shifted = points[0] + [2.0, 0.0]  # every point 2 px off
    rows = np.array([[0, 10, 10, 30, 30, 0.9, *shifted.reshape(-1)],
                     [0, 50, 50, 90, 90, 0.8, *np.zeros(10)],
                     [0, 100, 0, 119, 19, 0.7, *np.zeros(10)]])  # a false positive
    keep = {"hard": {"0--Parade/a.jpg": np.array([0, 3])}}
    out = evaluate_cascade(FixedDetections(rows), [scene], keep_lists=keep)
    # counts: faces 0 and 3. Detections by score: TP (face 0), ignored (face 2 is not kept), FP.
    # precision 1 up to recall 1/2, then 1/2 at recall 1/2: AP = 0.5 * 1 = 0.5
    assert out["ap_hard"] == pytest.approx(0.5) and out["faces_hard"] == 2 and out["official_subsets"] == 1.0
    assert out["landmark_nme"] == pytest.approx(2.0 / 20.0) and out["landmark_faces"] == 1  # 2 px / sqrt(20 * 20)
    approx = evaluate_cascade(FixedDetections(rows), [scene])  # by face height: hard counts all three
    assert approx["official_subsets"] == 0.0 and approx["faces_hard"] == 3
    # TP, TP, FP over 3 faces: precision 1 to recall 2/3, AP = 2/3
    assert approx["ap_hard"] == pytest.approx(2 / 3)
    assert "ap_easy" not in approx  # no face of 50 px here: the subset has nothing to score
