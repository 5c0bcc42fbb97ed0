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


# --- the prepared scene index: train / val (held out of WIDER_train) / test (WIDER_val) ------------------

TRAIN_GT = {  # name -> faces (x, y, w, h); scene 2 has a zero-width face, scene 4 none
    "0--Parade/0_Parade_a_1.jpg": [(10, 10, 20, 24)],
    "0--Parade/0_Parade_a_2.jpg": [(5, 6, 30, 30), (40, 8, 0, 12)],
    "1--Handshaking/1_Handshaking_b_1.jpg": [(12, 14, 16, 18)],
    "1--Handshaking/1_Handshaking_b_2.jpg": [],
    "2--Demonstration/2_Demonstration_c_1.jpg": [(2, 3, 40, 44), (50, 20, 10, 12)],
}
VAL_GT = {"0--Parade/0_Parade_a_1.jpg": [(7, 7, 20, 20)], "3--Riot/3_Riot_d_1.jpg": [(1, 2, 3, 4)]}


def _gt_text(scenes: dict) -> str:
    lines = []
    for name, faces in scenes.items():
        lines += [name, str(len(faces))]
        lines += [f"{x} {y} {w} {h} 0 0 0 0 0 0 " for x, y, w, h in faces] or ["0 0 0 0 0 0 0 0 0 0 "]
    return "\n".join(lines) + "\n"


def wider_root(root, train=TRAIN_GT, val=VAL_GT):
    import cv2

    for split, scenes in (("train", train), ("val", val)):
        for k, name in enumerate(scenes):
            path = root / f"WIDER_{split}" / "images" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.full((64, 80, 3), 10 * k + (100 if split == "val" else 0), np.uint8))
        (root / "wider_face_split").mkdir(parents=True, exist_ok=True)
        (root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt").write_text(_gt_text(scenes))
    return root


def test_prepared_splits_hold_train_scenes_out_and_test_on_wider_val(tmp_path):
    from facebench.data.formats.wider import load_scenes, prepare_scenes
    from facebench.data.parquet import read_metadata

    root = wider_root(tmp_path / "raw")
    manifest = prepare_scenes(root, tmp_path / "out", val_fraction=0.5, seed=0)
    names = {split: [sc.name for sc in load_scenes(tmp_path / "out", split, root)] for split in ("train", "val", "test")}
    # 5 WIDER_train scenes * 0.5 = 2.5, rounded half up: 3 held out
    assert len(names["val"]) == 3 and len(names["train"]) == 2
    assert not set(names["train"]) & set(names["val"]) and set(names["train"]) | set(names["val"]) == set(TRAIN_GT)
    assert names["train"] == [n for n in TRAIN_GT if n in names["train"]]  # annotation-file order kept
    assert names["test"] == list(VAL_GT)
    for split, folder in (("train", "WIDER_train"), ("val", "WIDER_train"), ("test", "WIDER_val")):
        for scene in load_scenes(tmp_path / "out", split, root):
            assert scene.image_path == root / folder / "images" / scene.name and scene.image_path.is_file()
        assert read_metadata(tmp_path / "out" / f"{split}.parquet")["images_dir"] == f"{folder}/images"
    # WIDER_val's "0--Parade/0_Parade_a_1.jpg" shares a name with a WIDER_train scene: its own box and image
    test = {sc.name: sc for sc in load_scenes(tmp_path / "out", "test", root)}
    assert test["0--Parade/0_Parade_a_1.jpg"].boxes.tolist() == [[7.0, 7.0, 27.0, 27.0]]
    assert {k: v["role"] for k, v in manifest["splits"].items()} == {"train": "train", "val": "val", "test": "test"}
    assert manifest["counts"] == {"train": 2, "val": 3, "test": 2}
    # the zero-width face is skipped and listed in the split its scene went to
    skipped = {split: [e["image"] for e in entry["skipped"]] for split, entry in manifest["splits"].items()}
    where = "val" if "0--Parade/0_Parade_a_2.jpg" in names["val"] else "train"
    assert skipped[where] == ["0--Parade/0_Parade_a_2.jpg"] and sum(map(len, skipped.values())) == 1
    assert {read_metadata(tmp_path / "out" / f)["content_hash"] for f in manifest["files"]} == {
        manifest["content_hash"]}
    assert manifest["val"] == {"fraction": 0.5, "seed": 0, "unit": "scene", "from": "WIDER_train", "scenes": 3,
                               "train_scenes": 2, "unit_definition": "one WIDER_train image with all its faces"}


def test_prepared_scenes_are_deterministic_and_hash_boxes_and_pixels(tmp_path):
    import hashlib
    import shutil

    from facebench.data.formats.wider import prepare_scenes

    root = wider_root(tmp_path / "raw")
    a = prepare_scenes(root, tmp_path / "a", seed=1)
    prepare_scenes(root, tmp_path / "b", seed=1)
    for name in ("train.parquet", "val.parquet", "test.parquet", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert a["files"]["test.parquet"] == hashlib.sha256((tmp_path / "a" / "test.parquet").read_bytes()).hexdigest()
    moved = wider_root(tmp_path / "moved", val={**VAL_GT, "3--Riot/3_Riot_d_1.jpg": [(1, 2, 3, 5)]})
    assert prepare_scenes(moved, tmp_path / "c", seed=1)["content_hash"] != a["content_hash"]
    repainted = tmp_path / "repainted"
    shutil.copytree(root, repainted)
    import cv2

    cv2.imwrite(str(repainted / "WIDER_val" / "images" / "3--Riot" / "3_Riot_d_1.jpg"), np.zeros((64, 80, 3), np.uint8))
    assert prepare_scenes(repainted, tmp_path / "d", seed=1)["content_hash"] != a["content_hash"]


def test_prepared_scenes_name_what_is_missing(tmp_path):
    from facebench.data.formats.wider import load_scenes, prepare_scenes

    one = wider_root(tmp_path / "one", train={"0--Parade/0_Parade_a_1.jpg": [(10, 10, 20, 24)]})
    with pytest.raises(ValueError, match="WIDER_train has 1 scene.*at least 2"):
        prepare_scenes(one, tmp_path / "out")
    empty = wider_root(tmp_path / "empty")
    (empty / "wider_face_split" / "wider_face_val_bbx_gt.txt").write_text("")
    with pytest.raises(WiderFormatError, match="wider_face_val_bbx_gt.txt: empty file"):
        prepare_scenes(empty, tmp_path / "out")
    with pytest.raises(ValueError, match="val_fraction is 0"):
        prepare_scenes(empty, tmp_path / "out", val_fraction=0.0)
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match=r"val\.parquet: prepared WIDER split not found"):
        load_scenes(tmp_path / "out", "val", empty)
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "old").mkdir()
    pq.write_table(pa.table({"name": ["x.jpg"]}), tmp_path / "old" / "val.parquet")  # an index of before the split
    with pytest.raises(ValueError, match="no images_dir.*re-run `facebench prepare`"):
        load_scenes(tmp_path / "old", "val", empty)
