"""Verification metrics on hand-made scores whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from facebench.metrics.verification import (
    best_threshold, combine_flip, cosine_scores, kfold_accuracy, roc_curve, tar_at_far,
)


def four_folds():
    """4 folds of (same 0.9, same 0.8, diff 0.1, diff 0.2); fold 3's second impostor scores 0.85."""
    scores = np.tile([0.9, 0.8, 0.1, 0.2], 4)
    scores[15] = 0.85
    same = np.tile([True, True, False, False], 4)
    return scores, same, np.repeat(np.arange(4), 4)


def test_kfold_accuracy_known_answer():
    scores, same, folds = four_folds()
    res = kfold_accuracy(scores, same, folds)
    # Every training set is best split between 0.2 and 0.8 (one error at most): threshold 0.5.
    np.testing.assert_allclose(res.thresholds, 0.5)
    np.testing.assert_allclose(res.accuracies, [1, 1, 1, 0.75])
    assert res.mean == pytest.approx(0.9375)
    assert res.std == pytest.approx(np.sqrt((3 * 0.0625**2 + 0.1875**2) / 4))


def test_kfold_default_split_is_contiguous_blocks():
    scores, same, folds = four_folds()
    a, b = kfold_accuracy(scores, same, folds), kfold_accuracy(scores, same, n_folds=4)
    np.testing.assert_array_equal(a.accuracies, b.accuracies)


def test_best_threshold_exact_and_ties_take_the_middle():
    assert best_threshold([0.1, 0.4, 0.6, 0.9], [False, False, True, True]) == pytest.approx(0.5)
    # all "same": any threshold below the lowest score is perfect
    assert best_threshold([0.3, 0.7], [True, True]) < 0.3
    # 0.2 | 0.5 | 0.8 with labels F, T, F: the cuts at 0.35 and above 0.8 tie at 2/3 correct
    t = best_threshold([0.2, 0.5, 0.8], [False, True, False])
    assert np.mean((np.array([0.2, 0.5, 0.8]) > t) == [False, True, False]) == pytest.approx(2 / 3)
    # tied scores are never split
    assert best_threshold([0.5, 0.5, 0.5, 0.9], [False, True, False, True]) == pytest.approx(0.7)


def test_tar_at_far_hand_case():
    impostors = np.arange(10) / 10.0  # 0.0 .. 0.9
    genuine = np.array([0.95, 0.85, 0.75, 0.5, 0.2])
    scores = np.concatenate([impostors, genuine])
    same = np.r_[np.zeros(10, bool), np.ones(5, bool)]
    r = {x.far: x for x in tar_at_far(scores, same, fars=(0.1, 0.3, 0.01))}
    assert r[0.1].threshold == pytest.approx(0.8) and r[0.1].tar == pytest.approx(0.4)
    assert r[0.1].achieved_far == pytest.approx(0.1)
    assert r[0.3].threshold == pytest.approx(0.6) and r[0.3].tar == pytest.approx(0.6)
    assert r[0.01].threshold == pytest.approx(0.9) and r[0.01].tar == pytest.approx(0.2)
    assert r[0.01].achieved_far == 0.0
    default = tar_at_far(scores, same)
    assert [x.far for x in default] == [1e-3, 1e-4]


def test_roc_curve_hand_case():
    fpr, tpr, th = roc_curve([0.9, 0.8, 0.8, 0.3], [True, False, True, False])
    np.testing.assert_allclose(th, [np.inf, 0.9, 0.8, 0.3])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])


def test_combine_flip_and_cosine():
    e = np.array([[3.0, 0.0], [1.0, 1.0]])
    f = np.array([[0.0, 4.0], [1.0, 1.0]])
    c = combine_flip(e, f)
    np.testing.assert_allclose(c, [[0.6, 0.8], [np.sqrt(0.5), np.sqrt(0.5)]])
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0)
    np.testing.assert_allclose(combine_flip(f, e), c)
    np.testing.assert_allclose(cosine_scores(e, f), [0.0, 1.0])


def test_input_errors():
    with pytest.raises(ValueError, match="one length"):
        kfold_accuracy([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="both genuine and impostor"):
        tar_at_far([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="FAR must lie"):
        tar_at_far([0.1, 0.2], [True, False], fars=(0.0,))
    with pytest.raises(ValueError, match="NaN"):
        best_threshold([np.nan], [True])


def _pair_set(folder, images_name: str, pairs_name: str, pairs: list[tuple[str, str, bool, int]]) -> None:
    """Four 2x2 crops, a_1 and a_2 dark (person a), b_1 and b_2 bright (person b), and the given pairs."""
    import pyarrow as pa

    from facebench.data.parquet import write_samples, write_table
    from facebench.data.prepare_identity import PAIR_SCHEMA

    ids = ["a_1", "a_2", "b_1", "b_2"]
    n = len(ids)
    rows = {"sample_id": ids, "image": [bytes([v] * 12) for v in (10, 20, 200, 210)], "height": [2] * n,
            "width": [2] * n, "landmarks": [None] * n, "visible": [None] * n, "bbox": [None] * n, "norm": [None] * n,
            "identity": [None] * n, "source": ids, "split": ["val"] * n, "pose": [None] * n, "pdb_copy": [0] * n}
    meta = {"dataset": "toy", "num_landmarks": 5, "flip_permutation": [1, 0, 2, 4, 3], "normaliser": "none",
            "params_hash": "p", "content_hash": "c", "crop_height": 2, "crop_width": 2, "image_encoding": "raw_rgb8"}
    write_samples(folder / images_name, rows, meta)
    left, right, same, fold = zip(*pairs)
    write_table(folder / pairs_name, pa.table({"left": list(left), "right": list(right), "same": list(same),
                                               "fold": list(fold)}, schema=PAIR_SCHEMA))


def test_evaluate_pairs_reads_the_named_files(tmp_path):
    """LFW's file names by default; CASIA's validation files when named. A dark/bright embedding tells the two
    people apart, so both score 100% on their own pairs, and the pair counts show which files were read."""
    from facebench.data.pair_sets import evaluate_pairs

    lfw = [("a_1", "a_2", True, 0), ("a_1", "b_1", False, 0), ("b_1", "b_2", True, 1), ("a_2", "b_2", False, 1)]
    val = lfw + [("a_2", "a_1", True, 2), ("b_2", "a_1", False, 2)]
    _pair_set(tmp_path, "images.parquet", "pairs.parquet", lfw)
    _pair_set(tmp_path, "val_images.parquet", "val_pairs.parquet", val)

    def embed(batch: np.ndarray) -> np.ndarray:
        bright = batch.reshape(len(batch), -1).mean(1) > 128
        return np.stack([bright, ~bright], axis=1).astype(np.float64)

    default = evaluate_pairs(embed, tmp_path)
    assert default["pairs"] == 4 and default["accuracy"] == 1.0 and len(default["fold_accuracies"]) == 2
    named = evaluate_pairs(embed, tmp_path, images="val_images.parquet", pairs="val_pairs.parquet")
    assert named["pairs"] == 6 and named["accuracy"] == 1.0 and len(named["fold_accuracies"]) == 3
    _pair_set(tmp_path, "bad_images.parquet", "bad_pairs.parquet", [("a_1", "c_1", True, 0), ("a_1", "b_1", False, 1)])
    with pytest.raises(ValueError, match=r"bad_pairs\.parquet: pairs name images not in bad_images\.parquet"):
        evaluate_pairs(embed, tmp_path, images="bad_images.parquet", pairs="bad_pairs.parquet")
