"""WIDER FACE AP as the official kit computes it, against cases computed by hand: the +1 pixel IoU, score
normalisation over the set, the 1,000 thresholds, images without ground truth, keep lists (ignored faces),
duplicates, a threshold without proposals, and the undefined cases."""

from __future__ import annotations

import numpy as np
import pytest

from facebench.metrics.detection import (
    ImageDetections, ImageTruth, average_precision, iou_xywh, normalise_scores, voc_ap,
)


def dets(boxes, scores) -> ImageDetections:
    return ImageDetections(np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(scores, dtype=np.float64))


def truth(boxes, counts=None) -> ImageTruth:
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    return ImageTruth(boxes, np.ones(len(boxes), bool) if counts is None else np.array(counts, bool))


def test_iou_continuous_and_with_the_kits_plus_one():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 1, 10, 10], [5, 5, 10, 10], [10, 10, 5, 5], [30, 30, 5, 5]])
    np.testing.assert_allclose(iou_xywh(a, b), [[90 / 110, 25 / 175, 0.0, 0.0]])
    # boxoverlap.m: x..x+w are 11 pixels; rows 1..11 against 0..10 share 11 x 10; the corner pixel (10, 10)
    # is shared by the third box (continuous IoU 0)
    np.testing.assert_allclose(iou_xywh(a, b, plus_one=True), [[110 / 132, 36 / 206, 1 / 156, 0.0]])
    # matching uses the kit's IoU: a 2-px face and a box one pixel off overlap 1/3 continuously, 6/12 = 0.5
    # (a match) with +1 widths
    tiny = truth([[0, 0, 2, 2]])
    assert iou_xywh([[1, 0, 2, 2]], tiny.boxes)[0, 0] == pytest.approx(1 / 3)
    # (the second image, without faces, only gives the normalisation a second score)
    assert average_precision([dets([[1, 0, 2, 2]], [0.9]), dets([[0, 0, 2, 2]], [0.1])], [tiny, truth([])])["ap"] == 1.0


def test_scores_normalised_over_the_whole_set():
    out = normalise_scores([np.array([3.0, 1.0]), np.array([]), np.array([2.0])])
    np.testing.assert_allclose(out[0], [1.0, 0.0])
    np.testing.assert_allclose(out[2], [0.5])
    # the kit starts max at realmin('single'): all-negative scores keep that tiny positive maximum
    np.testing.assert_allclose(normalise_scores([np.array([-2.0, -4.0])])[0], [0.5, 0.0])
    # all scores equal: 0 / 0, NaN, which no threshold counts, so the kit's AP is 0
    assert np.isnan(normalise_scores([np.array([0.7, 0.7])])[0]).all()
    result = average_precision([dets([[0, 0, 10, 10]], [0.7])], [truth([[0, 0, 10, 10]])])
    assert result["ap"] == 0.0 and np.isnan(result["precision"]).all()


def test_one_thousand_thresholds_quantise_the_scores():
    # Hit 1.0, false positive 0.9995, hit 0.9991, false positive 0.0; two faces. Every threshold from 0.999
    # down counts the first three together (precision 2/3 at recall 1): AP 2/3, where ranking the
    # detections one by one would give 1/2 * 1 + 1/2 * 2/3 = 5/6.
    faces = truth([[0, 0, 10, 10], [50, 0, 10, 10]])
    found = dets([[0, 0, 10, 10], [100, 0, 10, 10], [50, 0, 10, 10], [200, 0, 10, 10]], [1.0, 0.9995, 0.9991, 0.0])
    result = average_precision([found], [faces])
    assert result["thresholds"][0] == pytest.approx(0.999) and result["thresholds"][-1] == 0.0
    assert len(result["thresholds"]) == 1000
    assert result["precision"][0] == pytest.approx(2 / 3) and result["recall"][0] == 1.0
    assert result["precision"][-1] == 0.5  # at threshold 0 the last false positive joins
    assert result["ap"] == pytest.approx(2 / 3)


def test_images_without_faces_are_skipped_and_missed_faces_count():
    # Image 1: one face, found at score 0.9; image 2: no face, a detection at 0.95 (not counted anywhere,
    # though it sets the normalisation's maximum: 0.9 -> 0, 0.95 -> 1); image 3: a face nobody found.
    images = [dets([[0, 0, 10, 10]], [0.9]), dets([[0, 0, 10, 10]], [0.95]), dets([], [])]
    faces = [truth([[0, 0, 10, 10]]), truth([]), truth([[0, 0, 10, 10]])]
    result = average_precision(images, faces)
    assert result["positives"] == 2
    # the hit scores 0 after normalisation: only threshold 0 counts it, precision 1 at recall 1/2
    assert result["recall"][-2] == 0.0 and result["recall"][-1] == 0.5 and result["precision"][-1] == 1.0
    assert result["ap"] == pytest.approx(0.5)


def test_keep_lists_duplicates_and_false_positives_hand_computed():
    # Image A: faces g1, g2 count, g3 is outside the keep list; image B: g4 counts (3 positives).
    truth_a = truth([[0, 0, 10, 10], [20, 0, 10, 10], [40, 0, 10, 10]], [True, True, False])
    truth_b = truth([[0, 0, 10, 10]])
    det_a = dets([[0, 0, 10, 10], [40, 0, 10, 10], [0, 1, 10, 10], [20, 0, 10, 10]], [0.9, 0.8, 0.7, 0.5])
    det_b = dets([[100, 100, 10, 10]], [0.6])
    result = average_precision([det_a, det_b], [truth_a, truth_b])
    # Normalised (min 0.5, max 0.9): A 1, 0.75, 0.5, 0; B 0.25 (each a hair off in floating point).
    # A1 hits g1; A2 matches ignored g3: no proposal; A3 matches g1 again (+1 IoU 110/132): a proposal, no
    # hit; B1 overlaps nothing: false positive; A4 hits g2 at threshold 0 only.
    p, r = result["precision"], result["recall"]
    assert (p[0], r[0]) == (1.0, pytest.approx(1 / 3))  # threshold 0.999: A1
    assert (p[300], r[300]) == (1.0, pytest.approx(1 / 3))  # 0.699: A1, A2 (ignored)
    assert p[600] == 0.5  # 0.399: A1, A2, A3
    assert p[800] == pytest.approx(1 / 3)  # 0.199: B1 joins
    assert (p[999], r[999]) == (0.5, pytest.approx(2 / 3))  # 0: A4 hits g2
    # envelope 1 up to recall 1/3, then 1/2 up to 2/3: AP = 1/3 + 1/6
    assert result["ap"] == pytest.approx(0.5)
    assert result["positives"] == 3


def test_a_threshold_without_proposals_gives_way_to_the_next_precision():
    # The best detection matches an ignored face: thresholds that only pass it have no proposal (0/0,
    # NaN precision), which VOCap's max skips, as MATLAB's max does.
    faces = truth([[0, 0, 10, 10], [40, 0, 10, 10]], [True, False])
    result = average_precision([dets([[40, 0, 10, 10], [0, 0, 10, 10]], [1.0, 0.0])], [faces])
    assert np.isnan(result["precision"][0]) and result["precision"][-1] == 1.0
    assert result["ap"] == 1.0
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([np.nan, 1.0, 0.5])) == pytest.approx(0.5 * 1 + 0.5 * 0.5)


def test_perfect_detector_and_undefined_cases():
    faces = truth([[0, 0, 10, 10], [50, 50, 20, 20]])
    perfect = ImageDetections(faces.boxes.copy(), np.array([0.8, 0.9]))
    assert average_precision([perfect], [faces])["ap"] == pytest.approx(1.0)
    empty = truth([])
    assert average_precision([perfect, dets([], [])], [faces, empty])["ap"] == 1.0
    with pytest.raises(ValueError, match="undefined"):
        average_precision([perfect], [ImageTruth(faces.boxes, np.array([False, False]))])
    with pytest.raises(ValueError, match="2 detection lists for 1 images"):
        average_precision([perfect, perfect], [faces])
