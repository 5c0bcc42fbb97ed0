"""AFLW-Full reader on an AFLWinfo_release.mat built here with scipy.io.savemat and hand-picked numbers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from facebench.data.formats import DatasetFormatError
from facebench.data.formats.aflw import default_train_count, read_aflw_full

NAMES = ["0/image00002.jpg", "2/image00004.jpg", "3/image00032.jpg", "0/image00002.jpg", "3/image00040.jpg"]
RA = [3, 5, 1, 4, 2]  # 1-based permutation: with n_train 3, train = rows 2, 4, 0 and test = rows 3, 1


def mat_fields(num: int = 5) -> dict[str, np.ndarray]:
    """Row i: x_k = 10 + k + i, y_k = 20 + 2k + i (k = 0..18, 1-based values), box [l r t b] = [5, 45+i, 15, 65]."""
    k = np.arange(19, dtype=np.float64)
    data = np.stack([np.concatenate([10 + k + i, 20 + 2 * k + i]) for i in range(num)])
    bbox = np.array([[5.0, 45.0 + i, 15.0, 65.0] for i in range(num)])
    mask = np.ones((num, 19))
    mask[1, 7] = 0  # row 1 (a test face) has one invisible point
    names = np.empty((num, 1), dtype=object)
    for i in range(num):
        names[i, 0] = NAMES[i]
    return {"data": data, "bbox": bbox, "mask_new": mask, "ra": np.array([RA[:num]], dtype=np.float64),
            "nameList": names}


def make_set(root: Path, fields: dict | None = None, **extra) -> Path:
    fields = dict(mat_fields() if fields is None else fields, **extra)
    for name in set(NAMES):
        path = root / "data" / "flickr" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (80, 70, 3), dtype=np.uint8))
    scipy.io.savemat(str(root / "AFLWinfo_release.mat"), fields)
    return root


def test_layout_shift_box_order_and_split(tmp_path):
    result = read_aflw_full(make_set(tmp_path), n_train=3)
    assert result.quarantined == []
    assert [(f.source, f.split, f.face_index) for f in result.faces] == [
        ("data/flickr/3/image00032.jpg", "train", 0),   # row 2
        ("data/flickr/3/image00040.jpg", "train", 0),   # row 4
        ("data/flickr/0/image00002.jpg", "train", 0),   # row 0
        ("data/flickr/0/image00002.jpg", "test", 1),    # row 3, the second face of that image
        ("data/flickr/2/image00004.jpg", "test", 0),    # row 1
    ]
    row3 = result.faces[3]
    assert row3.landmarks.shape == (19, 2) and row3.landmarks.dtype == np.float32
    # x block then y block, minus 1: x_k = 10 + k + 3 - 1, y_k = 20 + 2k + 3 - 1
    np.testing.assert_allclose(row3.landmarks[0], [12.0, 22.0])
    np.testing.assert_allclose(row3.landmarks[18], [30.0, 58.0])
    # [left right top bottom] = [5, 48, 15, 65] -> x = 4, y = 14, w = right - left = 43, h = 50
    np.testing.assert_allclose(row3.bbox, [4.0, 14.0, 43.0, 50.0])
    assert row3.image_path == tmp_path / "data" / "flickr" / "0" / "image00002.jpg"
    test_row1 = result.faces[4]
    assert not test_row1.visible[7] and test_row1.visible.sum() == 18


def test_frontal_only_drops_test_faces_with_hidden_points(tmp_path):
    fields = mat_fields()
    fields["mask_new"][2, 0] = 0  # a train face with a hidden point stays
    result = read_aflw_full(make_set(tmp_path, fields), frontal_only=True, n_train=3)
    assert [(f.source, f.split) for f in result.faces] == [
        ("data/flickr/3/image00032.jpg", "train"), ("data/flickr/3/image00040.jpg", "train"),
        ("data/flickr/0/image00002.jpg", "train"), ("data/flickr/0/image00002.jpg", "test")]
    assert not result.faces[0].visible[0]


def test_train_count_defaults_and_stored_count(tmp_path):
    assert default_train_count(24386) == 20000
    assert default_train_count(1000) == 820   # 1000 * 20000 / 24386 = 820.1
    assert default_train_count(5) == 4        # 4.10
    root = make_set(tmp_path)
    assert [f.split for f in read_aflw_full(root).faces].count("train") == 4
    make_set(root, n_train=np.array([[2.0]]))
    assert [f.split for f in read_aflw_full(root).faces].count("train") == 2
    assert [f.split for f in read_aflw_full(root, n_train=1).faces].count("train") == 1


@pytest.mark.parametrize("change,words", [
    (lambda f: f.pop("ra"), "fields ['ra'] missing"),
    (lambda f: f.pop("mask_new"), "fields ['mask_new'] missing"),
    (lambda f: f.update(data=f["data"][:, :37]), "data has shape (5, 37); expected (5, 38)"),
    (lambda f: f.update(bbox=f["bbox"][:, :3]), "bbox has shape (5, 3); expected (5, 4)"),
    (lambda f: f.update(ra=np.array([[1.0, 1, 2, 3, 4]])), "ra must be a permutation of 1..5"),
    (lambda f: f.update(ra=np.array([[0.0, 1, 2, 3, 4]])), "ra must be a permutation of 1..5"),
])
def test_structural_problems_raise(tmp_path, change, words):
    fields = mat_fields()
    change(fields)
    with pytest.raises(DatasetFormatError) as info:
        read_aflw_full(make_set(tmp_path, fields))
    assert words in str(info.value) and "AFLWinfo_release.mat" in str(info.value)


def test_missing_root_or_mat_raise(tmp_path):
    with pytest.raises(DatasetFormatError, match="AFLW root not found"):
        read_aflw_full(tmp_path / "nowhere")
    with pytest.raises(DatasetFormatError, match="AFLWinfo_release.mat: not found"):
        read_aflw_full(tmp_path)
    (tmp_path / "AFLWinfo_release.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetFormatError, match="not a readable MATLAB"):
        read_aflw_full(tmp_path)


def _cut(path: Path) -> None:
    """Cut a file short on disk, as an interrupted download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _set_value(fields, row, col, value):
    fields["data"][row, col] = value


BAD = {
    "missing image": (lambda root, f: (root / "data/flickr/2/image00004.jpg").unlink(),
                      "data/flickr/2/image00004.jpg", "record 1 (0-based row): image file not found"),
    "unreadable image": (lambda root, f: (root / "data/flickr/2/image00004.jpg").write_bytes(b"\x89PNG broken"),
                         "data/flickr/2/image00004.jpg", "cv2.imread could not decode"),
    "truncated image": (lambda root, f: _cut(root / "data/flickr/2/image00004.jpg"), "data/flickr/2/image00004.jpg",
                        "record 1 (0-based row): truncated JPEG: no end-of-image marker (FF D9); "
                        "expected a complete JPEG file"),
    "nan": (lambda root, f: _set_value(f, 1, 19 + 4, np.nan),
            "AFLWinfo_release.mat#1", "data/flickr/2/image00004.jpg: point 4 has a non-finite coordinate"),
    "inf": (lambda root, f: _set_value(f, 1, 2, np.inf), "AFLWinfo_release.mat#1", "non-finite"),
    "far outside": (lambda root, f: _set_value(f, 1, 19, -50.0), "AFLWinfo_release.mat#1",
                    "point 0 at (10.0, -51.0) lies more than 50% of the image size outside the 70x80 image"),
    "box without area": (lambda root, f: f["bbox"].__setitem__((1, 1), 5.0), "AFLWinfo_release.mat#1",
                         "record 1 (data/flickr/2/image00004.jpg): bbox [l r t b] [5.0, 5.0, 15.0, 65.0] has no area"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_records_are_quarantined(tmp_path, case):
    damage, source, words = BAD[case]
    fields = mat_fields()
    if case in ("missing image", "unreadable image", "truncated image"):
        make_set(tmp_path, fields)
        damage(tmp_path, fields)
    else:
        damage(tmp_path, fields)
        make_set(tmp_path, fields)
    result = read_aflw_full(tmp_path, n_train=3)
    assert len(result.faces) == 4
    assert len(result.quarantined) == 1
    q = result.quarantined[0]
    assert q.source == source
    assert words in q.reason
    assert str(tmp_path) not in q.reason  # paths relative to the dataset root only


def test_missing_image_reason_holds_no_absolute_path(tmp_path):
    make_set(tmp_path)
    (tmp_path / "data/flickr/2/image00004.jpg").unlink()
    q = read_aflw_full(tmp_path, n_train=3).quarantined
    assert [(x.source, x.reason) for x in q] == [
        ("data/flickr/2/image00004.jpg",
         "record 1 (0-based row): image file not found; expected it under the dataset root")]
