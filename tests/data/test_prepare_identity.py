"""Aligned identity sets: CASIA crops with labels and LFW images with pairs, whole or not at all."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from facebench.data.align import TEMPLATES
from facebench.data.parquet import decode_crops, read_metadata, read_samples
from facebench.data.prepare_identity import prepare_casia, prepare_lfw
from facebench.data.synth_identities import synth_casia, synth_lfw


@pytest.fixture(scope="module")
def casia_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw") / "casia"
    synth_casia(root, n_identities=3, images_per_identity=(2, 3), seed=0, image_size=128)
    return root


def test_casia_crops_sit_on_the_template(casia_root, tmp_path):
    manifest = prepare_casia(casia_root, tmp_path / "casia")
    df = read_samples(tmp_path / "casia" / "train.parquet")
    meta = read_metadata(tmp_path / "casia" / "train.parquet")
    assert meta["template"] == "112x96" and meta["num_classes"] == 3 and meta["flip_permutation"] == [1, 0, 2, 4, 3]
    assert len(df) == manifest["counts"]["train"] and manifest["quarantined_count"] == 0
    assert sorted(set(df["identity"])) == [0, 1, 2]
    crops = decode_crops(df["image"], 112, 96, meta["image_encoding"])
    assert crops.shape == (len(df), 112, 96, 3) and crops.std() > 10  # pixels, not a blank border
    template = TEMPLATES["112x96"][0]
    points = np.stack([np.asarray(v).reshape(5, 2) for v in df["landmarks"]])
    # The similarity fit puts the five points near the template (exactly only for a similar face).
    assert np.abs(points - template).mean() < 4.0


def test_missing_landmarks_and_bad_images_are_quarantined(casia_root, tmp_path):
    lines = (casia_root / "casia_landmark.txt").read_text().splitlines()
    short = tmp_path / "short_list.txt"
    short.write_text("\n".join(lines[1:]) + "\n")  # the first image has no landmark entry
    first = lines[0].split("\t")[0]
    manifest = prepare_casia(casia_root, tmp_path / "out", landmarks=short)
    assert manifest["quarantined_count"] == 1
    assert manifest["quarantined"][0] == {"source": first, "reason": "no entry in the landmark list"}
    assert manifest["counts"]["train"] == len(lines) - 1


def test_lfw_images_and_pairs(tmp_path):
    root = tmp_path / "lfw"
    synth_lfw(root, folds=2, pairs_per_fold=3, people_per_fold=3, seed=0, image_size=128)
    manifest = prepare_lfw(root, tmp_path / "prepared")
    images = read_samples(tmp_path / "prepared" / "images.parquet")
    pairs = pq.read_table(tmp_path / "prepared" / "pairs.parquet").to_pandas()
    assert manifest["counts"] == {"images": len(images), "pairs": 12, "matched": 6, "folds": 2}
    ids = set(images["sample_id"])
    assert set(pairs["left"]) | set(pairs["right"]) <= ids
    assert pairs["same"].sum() == 6 and sorted(set(pairs["fold"])) == [0, 1]
    assert json.loads((tmp_path / "prepared" / "manifest.json").read_text())["params"]["dataset"] == "lfw"


def test_a_failure_leaves_the_old_output(casia_root, tmp_path, monkeypatch):
    import facebench.data.prepare_identity as module

    out = tmp_path / "casia"
    prepare_casia(casia_root, out)
    before = (out / "train.parquet").read_bytes()

    def crash(*args, **kwargs):  # fails after train.parquet of the new output is written
        raise OSError("disk full")

    monkeypatch.setattr(module, "atomic_write_text", crash)
    with pytest.raises(OSError, match="disk full"):
        prepare_casia(casia_root, out, template="112x112")
    assert (out / "train.parquet").read_bytes() == before
    with pytest.raises(ValueError, match="unknown template"):
        prepare_casia(casia_root, out, template="100x100")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".casia.tmp")]


def test_lfw_protocol_on_the_prepared_pairs(tmp_path):
    """An embedding that knows who is who scores 100%; one that ignores the face scores chance."""
    from facebench.metrics.verification import evaluate_pairs

    root = tmp_path / "lfw"
    synth_lfw(root, folds=3, pairs_per_fold=10, people_per_fold=4, seed=2, image_size=96)
    prepare_lfw(root, tmp_path / "prepared")
    images = read_samples(tmp_path / "prepared" / "images.parquet")
    crops = decode_crops(images["image"], 112, 96, "raw_rgb8")
    person = {c.tobytes(): sid.split("/")[0] for c, sid in zip(crops, images["sample_id"])}
    names = sorted(set(person.values()))

    def oracle(batch: np.ndarray) -> np.ndarray:  # one-hot of the person (mirrored crops: same person)
        out = np.zeros((len(batch), len(names)))
        for i, c in enumerate(batch):
            key = c.tobytes() if c.tobytes() in person else np.ascontiguousarray(c[:, ::-1]).tobytes()
            out[i, names.index(person[key])] = 1.0
        return out

    perfect = evaluate_pairs(oracle, tmp_path / "prepared", batch_size=7)
    assert perfect["accuracy"] == 1.0 and perfect["pairs"] == 60 and len(perfect["fold_accuracies"]) == 3
    assert perfect["tar_at_far"]["0.001"] == 1.0
    blind = evaluate_pairs(lambda b: np.ones((len(b), 4)), tmp_path / "prepared")
    assert blind["accuracy"] == pytest.approx(0.5, abs=0.2)  # every score equal: no better than chance


def test_mtcnn_points_align_like_the_list_and_misses_are_listed(casia_root, tmp_path):
    """Detected five points (published MTCNN) land near the synthetic ground truth; a faceless image is a
    miss, counted and listed, not dropped silently."""
    import shutil

    import cv2

    from facebench.data.formats.casia import read_landmark_list
    from facebench.data.prepare_identity import MISSED, detect_points
    from facebench.mtcnn import MTCNNDetector

    root = tmp_path / "casia"
    shutil.copytree(casia_root, root)
    truth = {e.source: e.points for e in read_landmark_list(root / "casia_landmark.txt")}
    blank = sorted(truth)[0]
    image = cv2.imread(str(root / blank))
    cv2.imwrite(str(root / blank), np.full_like(image, 90))  # no face left
    detector = MTCNNDetector(min_face=20)
    points, misses = detect_points(detector, [(s, root / s) for s in sorted(truth)])
    assert [(q.source, q.reason) for q in misses] == [(blank, MISSED)]
    for source, found in points.items():
        gt = truth[source]
        eyes = np.linalg.norm(gt[0] - gt[1])
        assert np.linalg.norm(found - gt, axis=1).mean() < 0.25 * eyes, source
    manifest = prepare_casia(root, tmp_path / "out", detector=detector)
    assert manifest["points"] == "mtcnn" and manifest["detector_misses"] == 1
    assert {"source": blank, "reason": MISSED} in manifest["quarantined"]
    assert manifest["counts"]["train"] == len(truth) - 1
