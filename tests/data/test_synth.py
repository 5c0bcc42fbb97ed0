"""The synthetic 300-W / AFLW-Full trees, checked with small independent parsers (not the project's readers)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from facebench.data.landmark_layouts import AFLW19_FLIP, W300_CURVES, W300_FLIP
from facebench.data.synth import faces, jobs, landmarks

SIZE = 96
TINY = {folder: 2 for folder in landmarks.W300_FOLDERS}


def _read_pts(path: Path) -> np.ndarray:
    """Hand-rolled PTS reader: header, braces, 68 'x y' lines."""
    lines = path.read_bytes().decode("ascii").splitlines()
    assert lines[0] == "version: 1"
    assert lines[1] == "n_points:  68"
    assert lines[2] == "{"
    assert lines[-1] == "}"
    pts = np.array([[float(v) for v in line.split()] for line in lines[3:-1]])
    assert pts.shape == (68, 2)
    return pts


def _tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def w300_tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("w300") / "300w"
    return root, landmarks.synth_w300(root, TINY, seed=3, image_size=SIZE)


@pytest.fixture(scope="module")
def aflw_tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("aflw") / "aflw"
    return root, landmarks.synth_aflw(root, 24, seed=3, image_size=SIZE)


# ----------------------------------------------------------------------------- layouts


def test_flip_permutations_match_the_documented_tables():
    expected = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30, 35, 34, 33, 32, 31]
                + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
                + [64, 63, 62, 61, 60, 67, 66, 65])
    assert list(W300_FLIP) == expected
    fixed = [i for i, j in enumerate(W300_FLIP) if i == j]
    assert fixed == [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]
    pairs_1based = [(1, 6), (2, 5), (3, 4), (7, 12), (8, 11), (9, 10), (13, 15), (16, 18)]
    for a, b in pairs_1based:
        assert AFLW19_FLIP[a - 1] == b - 1 and AFLW19_FLIP[b - 1] == a - 1
    assert [i for i, j in enumerate(AFLW19_FLIP) if i == j] == [13, 16, 18]
    assert set(i for curve in W300_CURVES.values() for i in curve) == set(range(68))


def test_w300_counts_scale_the_real_ones():
    assert landmarks.w300_counts(1.0) == landmarks.W300_REAL_COUNTS
    assert sum(landmarks.w300_counts(1.0).values()) == 3837
    assert set(landmarks.w300_counts(0.0).values()) == {2}
    assert landmarks.w300_counts(0.5)["helen/trainset"] == 1000


# ----------------------------------------------------------------------------- 300-W format


def test_w300_tree_layout_and_names(w300_tree):
    root, summary = w300_tree
    assert summary["per_folder"] == TINY
    numbered, lfpw = r"\d+_\d\.jpg", r"image_\d{4}\.png"
    patterns = {"afw": numbered, "helen/trainset": numbered, "helen/testset": numbered,
                "lfpw/trainset": lfpw, "lfpw/testset": lfpw, "ibug": r"image_\d{3}_\d\.jpg"}
    for folder, pattern in patterns.items():
        images = sorted(p for p in (root / folder).iterdir() if p.suffix != ".pts")
        assert len(images) == TINY[folder]
        for img in images:
            assert re.fullmatch(pattern, img.name), img.name
            assert img.with_suffix(".pts").is_file()
            assert cv2.imread(str(img)).shape == (SIZE, SIZE, 3)
    assert sorted(p.name for p in (root / "Bounding Boxes").iterdir()) == sorted(
        f"bounding_boxes_{f.replace('/', '_')}.mat" for f in landmarks.W300_FOLDERS)
    assert not list(root.parent.glob(".*tmp*"))  # no staging folder left behind


def test_pts_files_parse_and_are_one_based(w300_tree):
    root, summary = w300_tree
    crlf, no_newline = summary["crlf_pts"], summary["no_final_newline_pts"]
    for pts_file in root.rglob("*.pts"):
        raw = pts_file.read_bytes()
        rel = str(pts_file.relative_to(root))
        if rel == crlf:
            assert raw.count(b"\r\n") == 72 and raw.endswith(b"}\r\n")
        else:
            assert b"\r" not in raw
            assert raw.endswith(b"}") if rel == no_newline else raw.endswith(b"}\n")
        pts = _read_pts(pts_file)
        assert pts.min() >= 1.0 and pts.max() <= SIZE  # 1-based, inside the image
    assert crlf.startswith("afw/") and no_newline.startswith("ibug/")


def test_bounding_box_mats(w300_tree):
    root, _ = w300_tree
    for folder in landmarks.W300_FOLDERS:
        m = scipy.io.loadmat(root / "Bounding Boxes" / f"bounding_boxes_{folder.replace('/', '_')}.mat")
        cell = m["bounding_boxes"]
        assert cell.shape == (1, TINY[folder])
        for i in range(cell.shape[1]):
            rec = cell[0][i][0][0]
            assert rec.dtype.names == ("imgName", "bb_detector", "bb_ground_truth")
            name, det, gt = rec
            name = str(name[0])
            assert (root / folder / name).is_file()
            pts = _read_pts((root / folder / name).with_suffix(".pts"))
            assert det.shape == (1, 4) and gt.shape == (1, 4)
            np.testing.assert_allclose(gt[0], [*pts.min(axis=0), *pts.max(axis=0)], atol=1e-5)
            # The detector box is a jittered copy: it overlaps the tight box well.
            ix = max(0.0, min(det[0, 2], gt[0, 2]) - max(det[0, 0], gt[0, 0]))
            iy = max(0.0, min(det[0, 3], gt[0, 3]) - max(det[0, 1], gt[0, 1]))
            area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
            assert ix * iy / (area(det[0]) + area(gt[0]) - ix * iy) > 0.5


# ----------------------------------------------------------------------------- AFLW-Full format


def test_aflw_release_mat(aflw_tree):
    root, summary = aflw_tree
    n = 24
    m = scipy.io.loadmat(root / "AFLWinfo_release.mat")
    assert m["data"].shape == (n, 38) and m["data"].dtype == np.float64
    assert m["bbox"].shape == (n, 4)
    assert m["mask_new"].shape == (n, 19)
    assert set(np.unique(m["mask_new"])) <= {0.0, 1.0}
    assert m["ra"].shape == (1, n) and m["ra"].dtype == np.float64
    assert sorted(m["ra"][0].astype(int)) == list(range(1, n + 1))
    assert m["nameList"].shape == (n, 1)
    names = [str(m["nameList"][i, 0][0]) for i in range(n)]
    assert len(set(names)) == n
    for name in names:
        assert re.fullmatch(r"[023]/image\d{5}\.jpg", name), name
        assert cv2.imread(str(root / "data" / "flickr" / name)).shape == (SIZE, SIZE, 3)
    x, y = m["data"][:, :19], m["data"][:, 19:]
    assert x.min() >= 1.0 and x.max() <= SIZE and y.min() >= 1.0 and y.max() <= SIZE
    left, right, top, bottom = m["bbox"].T
    np.testing.assert_allclose(right - left, bottom - top)  # square
    cx, cy = (left + right) / 2, (top + bottom) / 2
    assert (np.abs(x[:, 18] - cx) < (right - left) / 2).all()  # the chin is inside its face box ...
    assert (y[:, 18] > cy).all()  # ... and below the box centre
    assert summary["train"] == round(n * 20000 / 24386) and summary["train"] + summary["test"] == n


def test_aflw_points_follow_the_19_point_order(aflw_tree):
    root, _ = aflw_tree
    m = scipy.io.loadmat(root / "AFLWinfo_release.mat")
    pts = np.stack([m["data"][:, :19], m["data"][:, 19:]], axis=2)
    frontal = m["mask_new"].all(axis=1)
    p = pts[frontal]
    assert len(p) > 0
    assert (p[:, 0, 0] < p[:, 2, 0]).all() and (p[:, 6, 0] < p[:, 8, 0]).all()  # left corners left of right ones
    assert (p[:, 7, 0] < p[:, 10, 0]).all()  # image-left eye centre first
    assert (p[:, 15, 0] < p[:, 17, 0]).all()  # mouth corners
    assert (p[:, 18, 1] > p[:, 16, 1]).all() and (p[:, 16, 1] > p[:, 13, 1]).all()  # chin below mouth below nose


# ----------------------------------------------------------------------------- geometry and pixels


def _scene(seed: int, regime=faces.COMMON):
    return faces.sample_scene(np.random.default_rng(seed), regime, SIZE)


def test_landmark_semantics_on_a_frontal_face():
    scene = _scene(0)
    s = faces.render_scene(replace(scene, pose=replace(scene.pose, yaw=0.0, pitch=0.0, roll=0.0)), SIZE)
    lm = s.landmarks68
    assert np.argmin(lm[:17, 0]) == 0 and np.argmax(lm[:17, 0]) == 16 and np.argmax(lm[:, 1]) == 8
    assert (np.diff(lm[27:31, 1]) > 0).all()  # bridge top to tip
    assert (np.diff(lm[31:36, 0]) > 0).all()  # nostrils left to right
    assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0]  # outer-left, inner-left, inner-right, outer-right
    assert lm[51, 1] < lm[62, 1] <= lm[66, 1] < lm[57, 1]  # lips top to bottom
    np.testing.assert_allclose(s.aflw19[7], lm[36:42].mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(s.aflw19[18], lm[8], atol=1e-9)
    np.testing.assert_allclose(s.aflw19[16], (lm[51] + lm[57]) / 2, atol=1e-9)


def test_frontal_faces_lie_inside_the_image():
    for seed in range(30):
        scene = _scene(seed, faces.CHALLENGING)
        pose = replace(scene.pose, yaw=0.0, pitch=0.0, roll=0.0)
        s = faces.render_scene(replace(scene, pose=pose), SIZE)
        assert s.landmarks68.min() >= 0 and s.landmarks68.max() <= SIZE - 1
        # Sampled poses are pulled inside as well.
        sampled = faces.render_scene(scene, SIZE)
        assert sampled.landmarks68.min() >= 0 and sampled.landmarks68.max() <= SIZE - 1


@pytest.mark.parametrize("yaw,pitch", [(10.0, 0.0), (35.0, 8.0), (70.0, -12.0)])
def test_mirrored_yaw_gives_permuted_mirrored_landmarks(yaw, pitch):
    scene = _scene(7)
    centre = (SIZE - 1) / 2
    a = faces.render_scene(replace(scene, pose=replace(scene.pose, yaw=yaw, pitch=pitch, roll=0.0, cx=centre)), SIZE)
    b = faces.render_scene(replace(scene, pose=replace(scene.pose, yaw=-yaw, pitch=pitch, roll=0.0, cx=centre)), SIZE)
    for pts_a, pts_b, perm in ((a.landmarks68, b.landmarks68, W300_FLIP), (a.aflw19, b.aflw19, AFLW19_FLIP)):
        mirrored = pts_a.copy()
        mirrored[:, 0] = SIZE - 1 - mirrored[:, 0]
        np.testing.assert_allclose(pts_b[list(perm)], mirrored, atol=1e-3)


def test_aflw_visibility_drops_far_side_points_at_large_yaw():
    scene = replace(_scene(11, faces.AFLW), occluder=False)
    frontal = faces.render_scene(replace(scene, pose=replace(scene.pose, yaw=0.0, pitch=0.0, roll=0.0)), SIZE)
    assert frontal.visible19.all()
    turned = faces.render_scene(replace(scene, pose=replace(scene.pose, yaw=70.0, roll=0.0)), SIZE)
    assert not turned.visible19.all()
    # Positive yaw turns the nose to image-right, so the image-right half goes out of view.
    assert not turned.visible19[[5, 11]].any() and turned.visible19[[0, 6]].all()


def test_aflw_tree_has_invisible_points(aflw_tree):
    root, summary = aflw_tree
    assert summary["invisible_points"] > 0
    assert (scipy.io.loadmat(root / "AFLWinfo_release.mat")["mask_new"] == 0).any()


def test_features_are_drawn_where_the_landmarks_are():
    """Pupils (AFLW eye centres) are darker than the cheeks; lips differ from the skin."""
    diffs = []
    for seed in range(20):
        scene = replace(_scene(seed), occluder=False)
        s = faces.render_scene(replace(scene, pose=replace(scene.pose, yaw=0.0)), SIZE)
        grey = cv2.cvtColor(s.image, cv2.COLOR_BGR2GRAY).astype(float)
        at = lambda p: grey[int(round(p[1])), int(round(p[0]))]  # noqa: E731
        cheek = s.landmarks68[[2, 14]] * 0.6 + s.landmarks68[[31, 35]] * 0.4
        diffs.append(np.mean([at(c) for c in cheek]) - np.mean([at(s.aflw19[7]), at(s.aflw19[10])]))
    assert np.mean(diffs) > 25 and np.mean(np.array(diffs) > 0) >= 0.9


# ----------------------------------------------------------------------------- determinism, atomicity


def test_same_seed_gives_identical_bytes_in_and_out_of_process(tmp_path, monkeypatch, w300_tree):
    root, _ = w300_tree
    again = tmp_path / "again"
    monkeypatch.setattr(jobs, "PARALLEL_FROM", 1)  # the second run renders in worker processes
    landmarks.synth_w300(again, TINY, seed=3, image_size=SIZE)
    assert _tree_hash(again) == _tree_hash(root)
    other = tmp_path / "other"
    monkeypatch.setattr(jobs, "PARALLEL_FROM", 10**9)
    landmarks.synth_w300(other, TINY, seed=4, image_size=SIZE)
    assert _tree_hash(other) != _tree_hash(root)


def test_aflw_same_seed_same_bytes(tmp_path, aflw_tree):
    root, _ = aflw_tree
    landmarks.synth_aflw(tmp_path / "again", 24, seed=3, image_size=SIZE)
    assert _tree_hash(tmp_path / "again") == _tree_hash(root)


def test_a_crash_leaves_no_half_written_tree(tmp_path, monkeypatch):
    root = tmp_path / "aflw"
    landmarks.synth_aflw(root, 4, seed=1, image_size=SIZE)
    before = _tree_hash(root)
    calls = {"n": 0}
    real = jobs.encode

    def failing(img, ext):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real(img, ext)

    monkeypatch.setattr(jobs, "encode", failing)
    with pytest.raises(RuntimeError):
        landmarks.synth_aflw(root, 6, seed=2, image_size=SIZE)
    assert _tree_hash(root) == before  # the old complete tree is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aflw"]  # no staging folder left


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError):
        landmarks.synth_w300(tmp_path / "x", {"afw": 2}, seed=0)
    with pytest.raises(ValueError):
        landmarks.synth_aflw(tmp_path / "y", 10, seed=0, n_train=11)


def test_written_coordinates_are_the_rendered_ones_plus_one(aflw_tree):
    """The .mat holds MATLAB 1-based coordinates: exactly the 0-based projections + 1."""
    root, _ = aflw_tree
    m = scipy.io.loadmat(root / "AFLWinfo_release.mat")
    for i in (0, 5):
        sample = faces.render_random([3, 100, 1, i], faces.AFLW, SIZE)
        np.testing.assert_allclose(m["data"][i, :19] - 1.0, sample.aflw19[:, 0], atol=1e-9)
        np.testing.assert_allclose(m["data"][i, 19:] - 1.0, sample.aflw19[:, 1], atol=1e-9)
        np.testing.assert_array_equal(m["mask_new"][i] == 1, sample.visible19)
