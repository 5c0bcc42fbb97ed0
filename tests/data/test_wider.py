"""WIDER FACE annotation text and eval-kit keep lists, on files written here by hand (datasets.md §5)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from facebench.data.formats.wider import WiderFormatError, parse_bbx_gt, read_bbx_gt, read_keep_lists

GT = """0--Parade/0_Parade_marchingband_1_5.jpg
2
78 221 7 8 2 0 0 0 0 0 
495 177 6 8 1 0 0 0 2 0 
0--Parade/0_Parade_Parade_0_999.jpg
0
0 0 0 0 0 0 0 0 0 0 
1--Handshaking/1_Handshaking_x_1.jpg
1
10 20 0 15 0 1 1 0 1 1
"""


def test_reads_faces_attributes_and_the_zero_face_image(tmp_path):
    path = tmp_path / "wider_face_val_bbx_gt.txt"
    path.write_text(GT)
    images = read_bbx_gt(path)
    assert [im.path for im in images] == ["0--Parade/0_Parade_marchingband_1_5.jpg",
                                         "0--Parade/0_Parade_Parade_0_999.jpg", "1--Handshaking/1_Handshaking_x_1.jpg"]
    first, empty, last = images
    np.testing.assert_array_equal(first.boxes, [[78, 221, 7, 8], [495, 177, 6, 8]])
    np.testing.assert_array_equal(first.attributes[:, 0], [2, 1])   # blur
    np.testing.assert_array_equal(first.attributes[:, 4], [0, 2])   # occlusion
    assert empty.boxes.shape == (0, 4) and empty.line == 5          # the all-zero line is consumed, not a face
    assert last.line == 8 and last.event == "1--Handshaking"
    assert last.degenerate.tolist() == [True]                        # w = 0 kept and flagged
    np.testing.assert_array_equal(last.attributes[0], [0, 1, 1, 0, 1, 1])


@pytest.mark.parametrize("text, line, fragment", [
    ("a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", 4, "file ends inside a.jpg"),
    ("a.jpg\nx\n", 2, "expected the face count"),
    ("a.jpg\n1\n1 2 3 4 0 0 0 0 0\n", 3, "expected 10 integers"),
    ("a.jpg\n0\n0 0 5 0 0 0 0 0 0 0\n", 3, "expected the all-zero line"),
    ("a.jpg\n1\n1 2 3 4 3 0 0 0 0 0\n", 3, "blur=3"),
    ("a.jpg\n1\n1 2 -3 4 0 0 0 0 0 0\n", 3, "negative box size"),
    ("a.jpg\n0\n0 0 0 0 0 0 0 0 0 0\na.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n", 4, "already listed at line 1"),
    ("12\n", 1, "expected an image path"),
    ("", 0, "empty file"),
])
def test_malformed_text_names_the_line(text, line, fragment):
    with pytest.raises(WiderFormatError, match=fragment) as err:
        parse_bbx_gt(text, "gt.txt")
    assert err.value.line == line
    assert str(err.value).startswith(f"gt.txt:{line}: " if line else "gt.txt: ")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(WiderFormatError, match="wider_face_val_bbx_gt.txt"):
        read_bbx_gt(tmp_path / "wider_face_val_bbx_gt.txt")


def _cell(items):
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def test_keep_lists_are_one_based_in_the_file_and_zero_based_here(tmp_path):
    """A file laid out as the eval kit's wider_hard_val.mat: cells of events, of files, of index columns."""
    events = _cell([np.array(["0--Parade"]), np.array(["1--Handshaking"])])
    files = _cell([_cell([np.array(["0_Parade_marchingband_1_5"]), np.array(["0_Parade_Parade_0_999"])]),
                   _cell([np.array(["1_Handshaking_x_1"])])])
    keep = _cell([_cell([np.array([[2.0]]), np.zeros((0, 1))]), _cell([np.array([[1.0]])])])
    path = tmp_path / "wider_hard_val.mat"
    scipy.io.savemat(str(path), {"event_list": events, "file_list": files, "gt_list": keep})
    lists = read_keep_lists(path)
    assert lists["0--Parade/0_Parade_marchingband_1_5.jpg"].tolist() == [1]
    assert lists["0--Parade/0_Parade_Parade_0_999.jpg"].tolist() == []
    assert lists["1--Handshaking/1_Handshaking_x_1.jpg"].tolist() == [0]
    scipy.io.savemat(str(path), {"event_list": events, "file_list": files})
    with pytest.raises(WiderFormatError, match="gt_list"):
        read_keep_lists(path)


def test_landmark_file_pairs_points_with_faces_in_order_and_names_bad_lines(tmp_path):
    from facebench.data.formats.wider import WiderFormatError, parse_bbx_gt, read_landmarks

    images = parse_bbx_gt("a/one.jpg\n2\n1 2 10 10 0 0 0 0 0 0 \n30 30 8 8 0 0 0 0 0 0 \nb/none.jpg\n0\n"
                          "0 0 0 0 0 0 0 0 0 0 \n")
    path = tmp_path / "lm.txt"
    path.write_text("a/one.jpg\t1 2 3 4 5 6 7 8 9 10\n")
    points = read_landmarks(path, images)
    assert points["a/one.jpg"][0].tolist() == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]
    assert np.isnan(points["a/one.jpg"][1]).all() and points["b/none.jpg"].shape == (0, 5, 2)
    path.write_text("a/one.jpg\t1 2 3 4 5 6 7 8 9 10\na/one.jpg\t1 2 3\n")
    with pytest.raises(WiderFormatError, match=r"lm.txt:2: expected ten numbers"):
        read_landmarks(path, images)
    path.write_text("c/other.jpg\t1 2 3 4 5 6 7 8 9 10\n")
    with pytest.raises(WiderFormatError, match=r"lm.txt:1: image 'c/other.jpg' is not in the annotation file"):
        read_landmarks(path, images)
