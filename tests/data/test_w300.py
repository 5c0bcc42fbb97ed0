"""300-W reader on hand-written .pts text and box .mat files built here with scipy (no package writer)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from facebench.data.formats import DatasetFormatError
from facebench.data.formats.w300 import PtsError, parse_pts, read_w300

FOLDERS = ["afw", "helen/trainset", "lfpw/trainset", "helen/testset", "lfpw/testset", "ibug"]


def pts_text(points: list[tuple[float, float]], n_points: int | None = None, newline: str = "\n",
             trailing: bool = True) -> str:
    """PTS version 1 text as the 300-W files have it (two spaces after n_points:)."""
    n = len(points) if n_points is None else n_points
    lines = ["version: 1", f"n_points:  {n}", "{"] + [f"{x:.6f} {y:.6f}" for x, y in points] + ["}"]
    return newline.join(lines) + (newline if trailing else "")


def face_points(offset: float = 0.0) -> list[tuple[float, float]]:
    """68 distinct 1-based points inside a 64 x 48 image: x = 5 + (k % 17) * 3, y = 8 + (k // 17) * 9."""
    return [(5.0 + (k % 17) * 3 + offset, 8.0 + (k // 17) * 9 + offset) for k in range(68)]


def write_face(folder: Path, stem: str, text: str | None = None, ext: str = ".jpg", size=(48, 64)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem))
    cv2.imwrite(str(folder / f"{stem}{ext}"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    (folder / f"{stem}.pts").write_text(text if text is not None else pts_text(face_points()), newline="")


def make_tree(root: Path) -> None:
    """One face per official folder; lfpw uses .png like the real set."""
    for i, folder in enumerate(FOLDERS):
        ext = ".png" if "lfpw" in folder else ".jpg"
        write_face(root / folder, f"face_{i}", pts_text(face_points(offset=i)), ext=ext)


def boxes_mat(path: Path, entries: list[tuple[str, list[float]]]) -> None:
    """bounding_boxes_<set>.mat as iBUG ships it: a 1xN cell of structs (imgName, bb_detector, bb_ground_truth)."""
    cell = np.empty((1, len(entries)), dtype=object)
    for i, (name, gt) in enumerate(entries):
        cell[0, i] = {"imgName": name, "bb_detector": np.array([[0.0, 0.0, 1.0, 1.0]]),
                      "bb_ground_truth": np.array([gt], dtype=np.float64)}
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"bounding_boxes": cell})


# --- the .pts parser --------------------------------------------------------------------------

def test_parse_pts_shifts_to_zero_based():
    text = "version: 1\nn_points:  3\n{\n212.5 499.75\n1 1\n30.25 2.0\n}\n"
    np.testing.assert_allclose(parse_pts(text), [[211.5, 498.75], [0.0, 0.0], [29.25, 1.0]])


@pytest.mark.parametrize("text", [
    "version: 1\r\nn_points:  2\r\n{\r\n10 20\r\n30 40\r\n}\r\n",          # CRLF
    "version: 1\nn_points: 2\n{\n10 20\n30 40\n}",                          # no trailing newline
    "version: 1\nn_points:\t2\n{\n10 20 1\n30 40 0\n}\n",                   # tab, visibility column
    "version: 1\nn_points:    2  \n\n{\n  10   20\n\n30 40\n}\n\n",           # extra spacing, blank lines
    "\ufeffversion: 1\nn_points: 2\n{\n1.0e1 2.0e1\n30 40\n}\n",           # BOM, exponent notation
])
def test_parse_pts_tolerates_real_world_variants(text):
    np.testing.assert_allclose(parse_pts(text), [[9.0, 19.0], [29.0, 39.0]])


@pytest.mark.parametrize("text,line,words", [
    ("version: 1\nn_points: 2\n10 20\n30 40\n", 3, "key: value"),          # no braces: data read as header
    ("version: 1\nn_points: 2\n", 2, "no opening '{'"),
    ("version: 1\nn_points: 2\n{\n10 20\nabc 40\n}\n", 5, "two numbers"),
    ("version: 1\nn_points: 2\n{\n10 20\n30\n}\n", 5, "two numbers"),
    ("version: 1\nn_points: 2\n{\n10 20\n30 40\n", 5, "no closing '}'"),
    ("version: 1\nn_points: 3\n{\n10 20\n30 40\n}\n", 6, "n_points 3 but 2"),
    ("version: 1\nn_points: two\n{\n10 20\n}\n", 2, "n_points: <integer>"),
    ("version: 1\n{\n10 20\n}\n", 2, "no 'n_points:'"),
])
def test_parse_pts_errors_name_the_line(text, line, words):
    with pytest.raises(PtsError) as info:
        parse_pts(text)
    assert info.value.line == line
    assert words in str(info.value) and f"line {line}" in str(info.value)


# --- the reader -------------------------------------------------------------------------------

def test_splits_and_pairing(tmp_path):
    make_tree(tmp_path)
    for sub in ["01_Indoor", "02_Outdoor"]:
        write_face(tmp_path / "300W" / sub, f"{sub[3:].lower()}_001", ext=".png")
    result = read_w300(tmp_path)
    assert result.quarantined == []
    by_source = {f.source: f for f in result.faces}
    assert {s: f.split for s, f in by_source.items()} == {
        "afw/face_0.jpg": "train", "helen/trainset/face_1.jpg": "train", "lfpw/trainset/face_2.png": "train",
        "helen/testset/face_3.jpg": "common", "lfpw/testset/face_4.png": "common", "ibug/face_5.jpg": "challenging",
        "300W/01_Indoor/indoor_001.png": "private", "300W/02_Outdoor/outdoor_001.png": "private"}
    face = by_source["ibug/face_5.jpg"]
    assert face.image_path == tmp_path / "ibug" / "face_5.jpg"
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
    # 1-based point 0 is (5 + 5, 8 + 5): 0-based (9, 12); point 67 = (5 + 16*3 + 5, 8 + 3*9 + 5) - 1
    np.testing.assert_allclose(face.landmarks[0], [9.0, 12.0])
    np.testing.assert_allclose(face.landmarks[67], [57.0, 39.0])
    assert face.visible.all()
    # no box file: tight box of the (0-based) landmarks
    np.testing.assert_allclose(face.bbox, [9.0, 12.0, 48.0, 27.0])


@pytest.mark.parametrize("folder_name", ["Bounding Boxes", "Bounding_Boxes"])
def test_box_file_is_one_based_x1_y1_x2_y2(tmp_path, folder_name):
    make_tree(tmp_path)
    boxes_mat(tmp_path / folder_name / "bounding_boxes_ibug.mat",
              [("other.jpg", [1.0, 1.0, 5.0, 5.0]), ("face_5.jpg", [11.0, 14.0, 51.0, 44.0])])
    result = read_w300(tmp_path)
    by_source = {f.source: f for f in result.faces}
    np.testing.assert_allclose(by_source["ibug/face_5.jpg"].bbox, [10.0, 13.0, 40.0, 30.0])
    # a set without a box file keeps the tight landmark box
    np.testing.assert_allclose(by_source["afw/face_0.jpg"].bbox, [4.0, 7.0, 48.0, 27.0])


def test_box_file_without_the_variable_is_a_format_error(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "Bounding Boxes").mkdir()
    scipy.io.savemat(str(tmp_path / "Bounding Boxes" / "bounding_boxes_afw.mat"), {"boxes": np.zeros((1, 4))})
    with pytest.raises(DatasetFormatError, match="bounding_boxes_afw.mat.*'bounding_boxes'"):
        read_w300(tmp_path)


def test_missing_root_and_folders_are_format_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="not found"):
        read_w300(tmp_path / "nowhere")
    make_tree(tmp_path)
    for p in (tmp_path / "ibug").iterdir():
        p.unlink()
    (tmp_path / "ibug").rmdir()
    with pytest.raises(DatasetFormatError, match=r"\['ibug'\] are missing"):
        read_w300(tmp_path)


def _corrupt_image(folder: Path, stem: str) -> None:
    (folder / f"{stem}.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")


def _cut(path: Path, keep: float = 0.6) -> None:
    """Cut a file short on disk, as an interrupted download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _far_points() -> str:
    pts = face_points()
    pts[10] = (64 * 1.6, 20.0)  # 1-based x 102.4 -> 0-based 101.4; the image is 64 wide, limit 64 * 1.5 - 1
    return pts_text(pts)


BAD = {
    "missing image": (lambda d: (d / "bad.jpg").unlink(), "bad.pts", "image missing; expected bad.jpg"),
    "unreadable image": (lambda d: (d / "bad.jpg").write_bytes(b"not an image at all"), "bad.jpg",
                         "cv2.imread could not decode the image; expected a readable JPEG or PNG"),
    "JPEG header only": (lambda d: _corrupt_image(d, "bad"), "bad.jpg",
                         "truncated JPEG: no end-of-image marker (FF D9); expected a complete JPEG file"),
    "truncated JPEG": (lambda d: _cut(d / "bad.jpg"), "bad.jpg",
                       "truncated JPEG: no end-of-image marker (FF D9); expected a complete JPEG file"),
    "empty image": (lambda d: (d / "bad.jpg").write_bytes(b""), "bad.jpg", "empty file (0 bytes); expected an image"),
    "no braces": (lambda d: (d / "bad.pts").write_text("version: 1\nn_points:  68\n1 2\n"),
                  "bad.pts", "line 3"),
    "non-numeric": (lambda d: (d / "bad.pts").write_text(pts_text(face_points()).replace("14.000000", "1x.0", 1)),
                    "bad.pts", "line 7: expected two numbers"),
    "wrong n_points": (lambda d: (d / "bad.pts").write_text(pts_text(face_points(), n_points=69)),
                       "bad.pts", "n_points 69 but 68 points"),
    "wrong point count": (lambda d: (d / "bad.pts").write_text(pts_text(face_points()[:67])),
                          "bad.pts", "67 points; expected the 68-point"),
    "nan": (lambda d: (d / "bad.pts").write_text(pts_text(face_points()).replace("14.000000", "nan", 1)),
            "bad.pts", "point 3 has a non-finite coordinate"),
    "inf": (lambda d: (d / "bad.pts").write_text(pts_text(face_points()).replace("14.000000", "inf", 1)),
            "bad.pts", "non-finite"),
    "far outside": (lambda d: (d / "bad.pts").write_text(_far_points()),
                    "bad.pts", "point 10 at (101.4, 19.0) lies more than 50% of the image size outside the 64x48"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs_are_quarantined_with_the_file_named(tmp_path, case):
    make_tree(tmp_path)
    folder = tmp_path / "helen" / "trainset"
    write_face(folder, "bad")
    damage, file_name, reason = BAD[case]
    damage(folder)
    result = read_w300(tmp_path)
    assert len(result.faces) == 6, "the good faces are still read"
    assert len(result.quarantined) == 1
    q = result.quarantined[0]
    assert q.source == f"helen/trainset/{file_name}"
    assert reason in q.reason


def test_truncated_png_is_quarantined(tmp_path):
    make_tree(tmp_path)
    _cut(tmp_path / "lfpw" / "trainset" / "face_2.png")
    result = read_w300(tmp_path)
    assert [(q.source, q.reason) for q in result.quarantined] == [
        ("lfpw/trainset/face_2.png", "truncated PNG: the file ends before its IEND chunk; expected a complete PNG file")]
    assert "lfpw/trainset/face_2.png" not in [f.source for f in result.faces]


def test_image_without_annotation_is_quarantined(tmp_path):
    make_tree(tmp_path)
    cv2.imwrite(str(tmp_path / "afw" / "lonely.jpg"), np.zeros((8, 8, 3), np.uint8))
    result = read_w300(tmp_path)
    assert [(q.source, "expected lonely.pts" in q.reason) for q in result.quarantined] == [("afw/lonely.jpg", True)]


def test_pts_error_class_is_a_value_error():
    assert issubclass(PtsError, ValueError)
    assert issubclass(DatasetFormatError, ValueError)
