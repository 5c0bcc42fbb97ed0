"""Synthetic CASIA-WebFace and LFW trees: read back by the real readers, identities kept per person."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from facebench.data.formats.casia import LFW_OVERLAP_IDS, read_casia, read_landmark_list
from facebench.data.formats.lfw import read_lfw
from facebench.data.synth.faces import sample_person, sample_person_scene
from facebench.data.synth.identities import PORTRAIT, five_points, synth_casia, synth_lfw


def _tree_hash(root) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_casia_tree_reads_back_with_labels_and_five_points(tmp_path):
    root = tmp_path / "casia"
    summary = synth_casia(root, n_identities=4, images_per_identity=(2, 3), seed=3, image_size=96)
    result = read_casia(root, check_images=True)
    assert not result.quarantined
    assert len(result.classes) == 4 and result.classes == sorted(result.classes)
    assert not set(result.classes) & set(LFW_OVERLAP_IDS)
    assert len(result.images) == summary["images"]
    assert {img.identity for img in result.images} == {0, 1, 2, 3}
    entries = read_landmark_list(root / "casia_landmark.txt")
    by_source = {img.source: img.identity for img in result.images}
    assert sorted(e.source for e in entries) == sorted(by_source)
    for e in entries:
        assert e.label == by_source[e.source]  # the list's label column is the reader's label
        assert (e.points >= 0).all() and (e.points < 96).all()
        assert e.points[0, 0] < e.points[1, 0]  # image-left eye first
        assert e.points[3, 0] < e.points[4, 0]  # image-left mouth corner first


def test_same_seed_same_bytes(tmp_path):
    a = synth_casia(tmp_path / "a", 2, (2, 2), seed=5, image_size=64)
    b = synth_casia(tmp_path / "b", 2, (2, 2), seed=5, image_size=64)
    assert a["images"] == b["images"] == 4
    assert _tree_hash(tmp_path / "a") == _tree_hash(tmp_path / "b")
    synth_casia(tmp_path / "c", 2, (2, 2), seed=6, image_size=64)
    assert _tree_hash(tmp_path / "a") != _tree_hash(tmp_path / "c")


def test_a_persons_images_keep_the_face_and_change_the_rest():
    person = sample_person(np.random.default_rng(0))
    one = sample_person_scene(np.random.default_rng(1), person, PORTRAIT, 128)
    two = sample_person_scene(np.random.default_rng(2), person, PORTRAIT, 128)
    assert one.identity == two.identity == person.identity
    assert one.style.skin == two.style.skin == person.style.skin and one.style.hair == two.style.hair
    assert one.pose != two.pose and one.style.light != two.style.light
    other = sample_person(np.random.default_rng(1))
    assert other.identity != person.identity


def test_lfw_pairs_follow_view2_and_each_fold_has_its_own_people(tmp_path):
    root = tmp_path / "lfw"
    summary = synth_lfw(root, folds=3, pairs_per_fold=4, people_per_fold=3, seed=1, image_size=64)
    result = read_lfw(root)
    assert not result.quarantined and len(result.pairs) == summary["pairs"] == 24
    people_of_fold: dict[int, set[str]] = {}
    for p in result.pairs:
        left, right = p.left.split("/")[0], p.right.split("/")[0]
        assert (left == right) == p.same
        if p.same:
            assert p.left != p.right  # two different images of one person
        people_of_fold.setdefault(p.fold, set()).update({left, right})
    assert sorted(people_of_fold) == [0, 1, 2]
    folds = list(people_of_fold.values())
    assert all(not (folds[i] & folds[j]) for i in range(3) for j in range(i + 1, 3))
    lines = (root / "lfw_landmark.txt").read_text().splitlines()
    assert len(lines) == summary["images"] and all(len(line.split("\t")) == 11 for line in lines)


def test_five_points_are_eye_centres_nose_tip_and_mouth_corners():
    lm = np.zeros((68, 2))
    lm[36:42] = [10, 20]
    lm[42:48] = [30, 20]
    lm[30], lm[48], lm[54] = [20, 30], [12, 40], [28, 40]
    np.testing.assert_allclose(five_points(lm), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="images"):
        synth_casia(tmp_path / "x", 2, (3, 2), seed=0)
    with pytest.raises(ValueError, match="people_per_fold"):
        synth_lfw(tmp_path / "y", 1, 1, 1, seed=0)
