"""Detection AP against a case computed by hand (WIDER matching: ignored faces, duplicates)."""

from __future__ import annotations

import numpy as np
import pytest

from facebench.metrics.detection import ImageDetections, ImageTruth, average_precision, iou_xywh


def test_iou_by_hand():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 1, 10, 10], [5, 5, 10, 10], [30, 30, 5, 5]])
    np.testing.assert_allclose(iou_xywh(a, b), [[90 / 110, 25 / 175, 0.0]])


def test_average_precision_hand_computed():
    # Image A: faces g1, g2 count, g3 is outside the keep list; image B: g4 counts (3 positives).
    truth_a = ImageTruth(np.array([[0, 0, 10, 10], [20, 0, 10, 10], [40, 0, 10, 10]]), np.array([True, True, False]))
    truth_b = ImageTruth(np.array([[0, 0, 10, 10]]), np.array([True]))
    det_a = ImageDetections(np.array([[0, 0, 10, 10], [40, 0, 10, 10], [0, 1, 10, 10], [20, 0, 10, 10]]),
                            np.array([0.9, 0.8, 0.7, 0.5]))
    det_b = ImageDetections(np.array([[100, 100, 10, 10]]), np.array([0.6]))
    result = average_precision([det_a, det_b], [truth_a, truth_b])
    # By score: TP (g1), ignored (g3), FP (g1 again), FP (nothing), TP (g2) -> recall 1/3,1/3,1/3,2/3,
    # precision 1, 1/2, 1/3, 1/2; envelope 1 up to recall 1/3, then 1/2 up to 2/3: AP = 1/3 + 1/6.
    assert result["ap"] == pytest.approx(0.5)
    np.testing.assert_allclose(result["recall"], [1 / 3, 1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(result["precision"], [1, 0.5, 1 / 3, 0.5])
    assert result["positives"] == 3


def test_perfect_detector_and_undefined_cases():
    truth = ImageTruth(np.array([[0, 0, 10, 10], [50, 50, 20, 20]]), np.array([True, True]))
    perfect = ImageDetections(truth.boxes.copy(), np.array([0.8, 0.9]))
    assert average_precision([perfect], [truth])["ap"] == pytest.approx(1.0)
    empty = ImageTruth(np.zeros((0, 4)), np.zeros(0, dtype=bool))
    assert average_precision([perfect, ImageDetections(np.zeros((0, 4)), np.zeros(0))], [truth, empty])["ap"] == 1.0
    with pytest.raises(ValueError, match="undefined"):
        average_precision([perfect], [ImageTruth(truth.boxes, np.array([False, False]))])
    with pytest.raises(ValueError, match="2 detection lists for 1 images"):
        average_precision([perfect, perfect], [truth])
