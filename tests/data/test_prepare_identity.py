"""Aligned identity sets: CASIA crops with labels and held-out validation identities with LFW-style pairs, LFW
images with pairs, whole or not at all, with their content hash."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from facebench.data.align import TEMPLATES
from facebench.data.parquet import decode_crops, read_metadata, read_samples
from facebench.data.prepare_identity import prepare_casia, prepare_lfw, verification_pairs
from facebench.data.synth.identities import synth_casia, synth_lfw
from tests.conftest import needs_published_weights


@pytest.fixture(scope="module")
def casia_root(tmp_path_factory):
    """Six identities of 2-3 images, as the smoke profile's CASIA (6 of 4-5): two are held out."""
    root = tmp_path_factory.mktemp("raw") / "casia"
    synth_casia(root, n_identities=6, images_per_identity=(2, 3), seed=0, image_size=128)
    return root


def test_casia_crops_sit_on_the_template(casia_root, tmp_path):
    manifest = prepare_casia(casia_root, tmp_path / "casia")
    df = read_samples(tmp_path / "casia" / "train.parquet")
    meta = read_metadata(tmp_path / "casia" / "train.parquet")
    assert meta["template"] == "112x96" and meta["num_classes"] == 4 and meta["flip_permutation"] == [1, 0, 2, 4, 3]
    assert len(df) == manifest["counts"]["train"] and manifest["quarantined_count"] == 0
    assert sorted(set(df["identity"])) == [0, 1, 2, 3]
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
    assert manifest["counts"]["train"] + manifest["counts"]["val_images"] == len(lines) - 1


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
    assert read_metadata(tmp_path / "prepared" / "images.parquet")["content_hash"] == manifest["content_hash"]
    assert read_metadata(tmp_path / "prepared" / "pairs.parquet")["content_hash"] == manifest["content_hash"]


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
    from facebench.data.pair_sets import evaluate_pairs

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


@needs_published_weights
def test_mtcnn_points_align_like_the_list_and_misses_are_listed(casia_root, tmp_path):
    """Detected five points (published MTCNN) land near the synthetic ground truth; a faceless image is a
    miss, counted and listed, not dropped silently."""
    import shutil

    import cv2

    from facebench.data.formats.casia import read_landmark_list
    from facebench.data.prepare_identity import MISSED, detect_points
    from facebench.papers.mtcnn import MTCNNDetector

    small = tmp_path / "small"  # three identities whose faces the published weights all find
    synth_casia(small, n_identities=3, images_per_identity=(2, 3), seed=0, image_size=128)
    truth = {e.source: e.points for e in read_landmark_list(small / "casia_landmark.txt")}
    blank = sorted(truth)[0]
    image = cv2.imread(str(small / blank))
    cv2.imwrite(str(small / blank), np.full_like(image, 90))  # no face left
    detector = MTCNNDetector(min_face=20)
    points, misses = detect_points(detector, [(s, small / s) for s in sorted(truth)])
    assert [(q.source, q.reason) for q in misses] == [(blank, MISSED)]
    for source, found in points.items():
        gt = truth[source]
        eyes = np.linalg.norm(gt[0] - gt[1])
        assert np.linalg.norm(found - gt, axis=1).mean() < 0.25 * eyes, source
    # preparing (six identities: enough to hold two out) counts and lists every miss
    root = tmp_path / "casia"
    shutil.copytree(casia_root, root)
    sources = sorted(e.source for e in read_landmark_list(root / "casia_landmark.txt"))
    image = cv2.imread(str(root / sources[0]))
    cv2.imwrite(str(root / sources[0]), np.full_like(image, 90))
    manifest = prepare_casia(root, tmp_path / "out", detector=detector)
    missed = [q["source"] for q in manifest["quarantined"] if q["reason"] == MISSED]
    assert manifest["points"] == "mtcnn" and sources[0] in missed
    assert manifest["detector_misses"] == len(missed) <= 2  # the blank, and at most one synthetic face
    assert manifest["counts"]["train"] + manifest["counts"]["val_images"] == len(sources) - len(missed)


# --- CASIA's validation identities ------------------------------------------------------------

def _folder(source: str) -> str:
    return source.split("/")[0]


def test_casia_holds_whole_identities_out_with_lfw_style_pairs(casia_root, tmp_path):
    manifest = prepare_casia(casia_root, tmp_path / "casia")
    out = tmp_path / "casia"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "train.parquet", "val_images.parquet",
                                                    "val_pairs.parquet"]
    train = read_samples(out / "train.parquet")
    val = read_samples(out / "val_images.parquet")
    pairs = pq.read_table(out / "val_pairs.parquet").to_pandas()
    held = manifest["val"]["held_out"]
    # 6 identities, val_fraction 0.1: 0.6 rounds to 1, raised to the minimum of 2
    assert len(held) == 2 and manifest["val"]["identities"] == 2 and manifest["val"]["train_identities"] == 4
    assert set(val["source"].map(_folder)) == set(held) and not set(train["source"].map(_folder)) & set(held)
    assert (val["split"] == "val").all() and val["identity"].isna().all()
    # labels 0..3, contiguous, in folder order
    label_of = dict(zip(train["source"].map(_folder), train["identity"]))
    assert [label_of[f] for f in sorted(label_of)] == [0, 1, 2, 3]
    # pairs: only held-out images; matched = one identity, mismatched = two; as many of each
    assert set(pairs["left"]) | set(pairs["right"]) <= set(val["sample_id"])
    same_folder = pairs["left"].map(_folder) == pairs["right"].map(_folder)
    assert (same_folder == pairs["same"]).all()
    sizes = val["source"].map(_folder).value_counts()
    a, b = (int(sizes[f]) for f in held)
    matched_available = a * (a - 1) // 2 + b * (b - 1) // 2
    per_kind = min(matched_available, a * b)  # at most 10 folds of 300: not binding here
    folds = min(10, per_kind)
    expected = per_kind // folds * folds
    assert int(pairs["same"].sum()) == int((~pairs["same"]).sum()) == expected == manifest["val"]["matched"]
    assert pairs["fold"].nunique() == folds == manifest["val"]["folds"]
    assert len(set(zip(pairs["left"], pairs["right"]))) == len(pairs)  # no pair twice
    for _, fold in pairs.groupby("fold", sort=True):  # LFW's layout: a fold's matched pairs, then its mismatched
        assert fold["same"].tolist() == sorted(fold["same"].tolist(), reverse=True)
    assert manifest["counts"] == {"train": len(train), "val_images": len(val), "val_pairs": len(pairs)}
    assert sorted(manifest["files"]) == ["train.parquet", "val_images.parquet", "val_pairs.parquet"]
    assert {read_metadata(out / f)["content_hash"] for f in ("train.parquet", "val_images.parquet",
                                                             "val_pairs.parquet")} == {manifest["content_hash"]}


def test_casia_preparation_is_deterministic_and_hashed(casia_root, tmp_path):
    a = prepare_casia(casia_root, tmp_path / "a", seed=3)
    b = prepare_casia(casia_root, tmp_path / "b", seed=3)
    for name in ("train.parquet", "val_images.parquet", "val_pairs.parquet", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert a["content_hash"] == b["content_hash"]
    others = [prepare_casia(casia_root, tmp_path / f"s{seed}", seed=seed) for seed in (4, 5)]
    assert all(o["content_hash"] != a["content_hash"] for o in others)
    assert any(o["val"]["held_out"] != a["val"]["held_out"] for o in others)


def test_too_few_identities_is_a_clear_error(tmp_path):
    root = tmp_path / "casia"
    synth_casia(root, n_identities=3, images_per_identity=(2, 2), seed=0, image_size=96)
    with pytest.raises(ValueError, match="3 identities have an aligned image.*expected at least 4 identities"):
        prepare_casia(root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_verification_pairs_by_hand():
    rng = np.random.default_rng(0)
    # identities 0,0,0,1,1,2: matched pairs (0,1) (0,2) (1,2) (3,4); 2 folds of 2 take all four
    rows, counts = verification_pairs([0, 0, 0, 1, 1, 2], rng, folds=2, per_fold=2)
    matched = {(int(u), int(v)) for u, v, same, _ in rows if same}
    assert matched == {(0, 1), (0, 2), (1, 2), (3, 4)}
    assert counts == {"pairs": 8, "matched": 4, "mismatched": 4, "folds": 2, "pairs_per_fold": 4,
                      "available_matched": 4, "available_mismatched": 11}  # (36 - 9 - 4 - 1) / 2
    assert rows[:, 3].tolist() == [0, 0, 0, 0, 1, 1, 1, 1] and rows[:, 2].tolist() == [1, 1, 0, 0, 1, 1, 0, 0]
    # identities 0,0,1,1,1,1,1: the 10 mismatched pairs are all drawn (2 folds of 5)
    rows, counts = verification_pairs([0, 0, 1, 1, 1, 1, 1], rng, folds=2, per_fold=5)
    mismatched = {(int(u), int(v)) for u, v, same, _ in rows if not same}
    assert mismatched == {(i, j) for i in (0, 1) for j in range(2, 7)} and counts["matched"] == 10
    # too few: one image each, no matched pair
    with pytest.raises(ValueError, match="0 matched and 1 mismatched pairs; expected at least 2 of each"):
        verification_pairs([0, 1], rng)
    # the cap: 10 folds of at most 300 per kind; same seed, same pairs
    big = np.repeat(np.arange(50), 40)
    first, counts = verification_pairs(big.tolist(), np.random.default_rng(7))
    again, _ = verification_pairs(big.tolist(), np.random.default_rng(7))
    assert counts["pairs"] == 6000 and counts["folds"] == 10 and np.array_equal(first, again)
    assert len({(int(u), int(v)) for u, v, _, _ in first}) == 6000


def test_val_pairs_score_with_the_lfw_protocol(casia_root, tmp_path):
    """evaluate_pairs reads CASIA's validation files by name: an oracle embedding scores 100%."""
    from facebench.data.pair_sets import evaluate_pairs

    prepare_casia(casia_root, tmp_path / "casia")
    val = read_samples(tmp_path / "casia" / "val_images.parquet")
    crops = decode_crops(val["image"], 112, 96, "raw_rgb8")
    person = {c.tobytes(): _folder(sid) for c, sid in zip(crops, val["sample_id"])}
    names = sorted(set(person.values()))

    def oracle(batch: np.ndarray) -> np.ndarray:
        out = np.zeros((len(batch), len(names)))
        for i, c in enumerate(batch):
            key = c.tobytes() if c.tobytes() in person else np.ascontiguousarray(c[:, ::-1]).tobytes()
            out[i, names.index(person[key])] = 1.0
        return out

    result = evaluate_pairs(oracle, tmp_path / "casia", images="val_images.parquet", pairs="val_pairs.parquet")
    pairs = pq.read_table(tmp_path / "casia" / "val_pairs.parquet")
    assert result["accuracy"] == 1.0 and result["pairs"] == pairs.num_rows
    with pytest.raises(FileNotFoundError):
        evaluate_pairs(oracle, tmp_path / "casia")  # no LFW files in a CASIA folder
