"""Preparation: the crop affine, splits (val held out by image), normalisers, PDB files, quarantine, expected
splits, determinism and the content hash, atomicity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facebench.data import prepare as prep
from facebench.data.parquet import RAW_RGB8, decode_crops, read_metadata, read_samples
from facebench.data.prepare import apply, crop_face, crop_matrix, prepare_landmark_dataset
from facebench.data.types import Quarantined, RawFace, ReadResult

# --- the crop affine --------------------------------------------------------------------------

def test_crop_matrix_hand_cases():
    # box 40 x 20 at (10, 20), margin 0.25 -> side 40 * 1.5 = 60 = crop: scale 1, centre (30, 30) -> 29.5
    m = crop_matrix(np.array([10.0, 20.0, 40.0, 20.0]), 0.25, 60)
    np.testing.assert_allclose(apply(m, np.array([[30.0, 30.0], [10.0, 20.0], [50.0, 40.0]])),
                               [[29.5, 29.5], [9.5, 19.5], [49.5, 39.5]])
    # box 100 x 100 at the origin, no margin, crop 50: scale 1/2; the box sides 0 and 100 are the
    # square's edges, so they land on the crop's outer edges -0.5 and 49.5, the centre 50 on 24.5
    m = crop_matrix(np.array([0.0, 0.0, 100.0, 100.0]), 0.0, 50)
    np.testing.assert_allclose(m, [[0.5, 0, -0.5], [0, 0.5, -0.5]])
    np.testing.assert_allclose(apply(m, np.array([[0.0, 0.0], [100.0, 100.0], [50.0, 50.0]])),
                               [[-0.5, -0.5], [49.5, 49.5], [24.5, 24.5]])


def blob_image(h: int, w: int, x: float, y: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    g = 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return np.repeat(g[..., None], 3, axis=2).astype(np.float32)


def centroid(img: np.ndarray) -> np.ndarray:
    g = img[..., 0].astype(np.float64)
    yy, xx = np.mgrid[0:g.shape[0], 0:g.shape[1]]
    return np.array([(g * xx).sum(), (g * yy).sum()]) / g.sum()


@pytest.mark.parametrize("bbox,crop_size", [
    ((60.0, 50.0, 90.0, 70.0), 32),    # shrink by ~5: warp at native size, then area resize
    ((100.0, 90.0, 12.0, 10.0), 48),   # enlarge by ~2.7: a single warp
])
def test_crop_pixels_follow_the_affine(bbox, crop_size):
    """A blob drawn at a known image point lands where the returned matrix sends that point."""
    bbox = np.array(bbox)
    centre = bbox[:2] + bbox[2:] / 2 + np.array([3.3, -2.1])
    scale = crop_size / (max(bbox[2:]) * 1.4)
    image = blob_image(240, 260, *centre, sigma=2.5 / scale)
    crop, m = crop_face(image, bbox, 0.2, crop_size)
    assert crop.shape[:2] == (crop_size, crop_size)
    np.testing.assert_allclose(m, crop_matrix(bbox, 0.2, crop_size))
    np.testing.assert_allclose(centroid(crop), apply(m, centre[None])[0], atol=0.02)


def test_outside_the_image_is_black():
    image = np.full((20, 20, 3), 200, np.uint8)
    crop, _ = crop_face(image, np.array([0.0, 0.0, 20.0, 20.0]), 0.5, 40)
    assert crop[0, 0].tolist() == [0, 0, 0] and crop[20, 20].tolist() == [200, 200, 200]


# --- whole datasets ---------------------------------------------------------------------------

def image_file(folder: Path, name: str, h: int = 96, w: int = 112) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    rng = np.random.default_rng(len(name))
    cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return path


def w300_faces(root: Path, rng: np.random.Generator) -> ReadResult:
    """10 train, 3 common, 2 challenging faces: 68 random points, the outer eye corners placed by hand."""
    faces = []
    for i, split in enumerate(["train"] * 10 + ["common"] * 3 + ["challenging"] * 2):
        points = rng.uniform(20, 70, (68, 2))
        points[36], points[45] = (30.0, 40.0), (60.0, 44.0)  # outer eye corners, distance hypot(30, 4)
        faces.append(RawFace(f"{split}/{i}.jpg", image_file(root / split, f"{i}.jpg"), points.astype(np.float32),
                             np.ones(68, bool), np.array([20.0, 10.0, 50.0, 60.0], np.float32), split))
    return ReadResult(faces, [Quarantined("afw/broken.pts", "line 3: expected two numbers")])


PARAMS = dict(crop_size=64, margin=0.1, pdb_bins=3, pdb_component=None, normaliser="inter_ocular", seed=0)
FLIP = list(range(68))[::-1]


def test_w300_splits_geometry_and_pdb(tmp_path):
    result = w300_faces(tmp_path / "raw", np.random.default_rng(0))
    out = tmp_path / "prepared"
    manifest = prepare_landmark_dataset("w300", result, out, flip_permutation=FLIP, **PARAMS)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["challenging.parquet", "common.parquet", "full.parquet", "manifest.json",
                     "train.parquet", "train_pdb.parquet", "val.parquet"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    # 10 training images, val_fraction 0.1: one image held out
    assert manifest["counts"]["train"] == 9 and manifest["counts"]["val"] == 1 and manifest["counts"]["full"] == 5
    assert {k: v["role"] for k, v in manifest["splits"].items()} == {
        "challenging": "test", "common": "test", "full": "test", "train": "train", "train_pdb": "train", "val": "val"}
    assert manifest["val"]["images"] == 1 and manifest["val"]["train_images"] == 9 and manifest["val"]["seed"] == 0
    assert manifest["quarantined_count"] == 1
    assert manifest["quarantined"] == [{"stage": "read", "source": "afw/broken.pts",
                                        "reason": "line 3: expected two numbers"}]

    train = read_samples(out / "train.parquet")
    val = read_samples(out / "val.parquet")
    assert (train["split"] == "train").all() and (val["split"] == "val").all() and val["pose"].isna().all()
    assert sorted(train["sample_id"].tolist() + val["sample_id"].tolist()) == sorted(
        f"w300/{f.source}#0" for f in result.faces if f.split == "train")
    # box (20, 10, 50, 60), margin 0.1: side 72, scale 64 / 72, centre (45, 40) -> 31.5
    s = 64 / 72
    raw = next(f for f in result.faces if f"w300/{f.source}#0" == train["sample_id"].iloc[0])
    expected = (raw.landmarks.astype(np.float64) - [45.0, 40.0]) * s + 31.5
    np.testing.assert_allclose(train["landmarks"].iloc[0].reshape(-1, 2), expected, atol=1e-4)
    np.testing.assert_allclose(train["bbox"].iloc[0], [(20 - 45) * s + 31.5, (10 - 40) * s + 31.5, 50 * s, 60 * s],
                               atol=1e-5)
    assert train["norm"].iloc[0] == pytest.approx(np.hypot(30.0, 4.0) * s, rel=1e-6)
    assert (train["height"] == 64).all() and (train["width"] == 64).all()
    # crops are stored as raw RGB8: exactly the BGR crop of the source image, channels reversed
    assert read_metadata(out / "train.parquet")["image_encoding"] == RAW_RGB8
    pixels = decode_crops(train["image"].iloc[:1], 64, 64, RAW_RGB8)[0]
    bgr_crop, _ = crop_face(cv2.imread(str(raw.image_path)), raw.bbox, PARAMS["margin"], 64)
    np.testing.assert_array_equal(pixels, bgr_crop[..., ::-1])
    assert train["pose"].notna().all() and (train["pdb_copy"] == 0).all()

    pdb = read_samples(out / "train_pdb.parquet")
    repeats = np.asarray(manifest["pdb"]["repeats"])
    assert manifest["pdb"]["hist_before"] and sum(manifest["pdb"]["hist_before"]) == 9  # train only, not val
    assert len(pdb) == manifest["counts"]["train_pdb"] == manifest["pdb"]["total_after"]
    originals = pdb[pdb["pdb_copy"] == 0]
    assert originals["sample_id"].tolist() == train["sample_id"].tolist()
    copies = pdb[pdb["pdb_copy"] > 0]
    assert len(copies) > 0 and max(repeats) > 1
    for _, row in copies.iterrows():
        assert row["sample_id"].endswith(f"#pdb{row['pdb_copy']}")
        original = train[train["sample_id"] == row["sample_id"].rsplit("#pdb", 1)[0]].iloc[0]
        assert row["image"] == original["image"] and row["pose"] == original["pose"]
    assert (pdb["split"] == "train").all()
    assert not set(pdb["sample_id"].str.split("#pdb").str[0]) & set(val["sample_id"])  # PDB never copies val

    full = read_samples(out / "full.parquet")
    common = read_samples(out / "common.parquet")
    challenging = read_samples(out / "challenging.parquet")
    assert full["sample_id"].tolist() == common["sample_id"].tolist() + challenging["sample_id"].tolist()
    assert (full["split"] == "full").all() and full["pose"].isna().all()

    meta = read_metadata(out / "full.parquet")
    assert meta["flip_permutation"] == FLIP and meta["num_landmarks"] == 68 and meta["dataset"] == "w300"
    assert meta["normaliser"] == "inter_ocular" and "36 and 45" in meta["normaliser_definition"]
    assert meta["params_hash"] == manifest["params_hash"]
    assert {read_metadata(out / f)["content_hash"] for f in files if f.endswith(".parquet")} == {
        manifest["content_hash"]}


def aflw_faces(root: Path) -> ReadResult:
    """4 train and 3 test faces with a non-square box; test face 5 has a hidden point."""
    faces = []
    rng = np.random.default_rng(1)
    for i in range(7):
        split = "train" if i < 4 else "test"
        visible = np.ones(19, bool)
        if i == 5:
            visible[3] = False
        faces.append(RawFace(f"data/flickr/0/image{i:05d}.jpg", image_file(root, f"image{i:05d}.jpg"),
                             rng.uniform(30, 60, (19, 2)).astype(np.float32), visible,
                             np.array([25.0, 20.0, 40.0, 30.0], np.float32), split, face_index=i % 2))
    return ReadResult(faces, [])


@pytest.mark.parametrize("normaliser,expected", [("box_width", 40.0), ("box_sqrt_area", np.sqrt(40.0 * 30.0))])
def test_aflw_normalisers_and_frontal(tmp_path, normaliser, expected):
    out = tmp_path / "aflw"
    manifest = prepare_landmark_dataset("aflw", aflw_faces(tmp_path / "raw"), out, crop_size=32, margin=0.25,
                                        pdb_bins=None, pdb_component=None, flip_permutation=list(range(19)),
                                        normaliser=normaliser, seed=0)
    assert manifest["counts"] == {"frontal": 2, "test": 3, "train": 3, "val": 1}  # 4 images: at least one held out
    assert manifest["pdb"] is None and not (out / "train_pdb.parquet").exists()
    test = read_samples(out / "test.parquet")
    # box 40 x 30, margin 0.25: side 60, scale 32 / 60
    np.testing.assert_allclose(test["norm"], expected * 32 / 60, rtol=1e-6)
    assert test["sample_id"].tolist() == ["aflw/data/flickr/0/image00004.jpg#0",
                                          "aflw/data/flickr/0/image00005.jpg#1",
                                          "aflw/data/flickr/0/image00006.jpg#0"]
    assert test["visible"].iloc[1].tolist().count(False) == 1
    frontal = read_samples(out / "frontal.parquet")
    assert frontal["sample_id"].tolist() == [test["sample_id"].iloc[0], test["sample_id"].iloc[2]]
    assert (frontal["split"] == "frontal").all()
    assert read_samples(out / "train.parquet")["pose"].isna().all()


def test_unreadable_image_at_preparation_is_quarantined(tmp_path):
    result = w300_faces(tmp_path / "raw", np.random.default_rng(0))
    result.faces[11].image_path.write_bytes(b"not an image")
    manifest = prepare_landmark_dataset("w300", result, tmp_path / "out", flip_permutation=FLIP, **PARAMS)
    assert manifest["counts"]["common"] == 2 and manifest["quarantined_count"] == 2
    last = manifest["quarantined"][-1]
    assert last["stage"] == "prepare" and last["source"] == "common/11.jpg" and "cv2.imread" in last["reason"]


def test_zero_normaliser_is_quarantined(tmp_path):
    result = w300_faces(tmp_path / "raw", np.random.default_rng(0))
    result.faces[12].landmarks[45] = result.faces[12].landmarks[36]
    manifest = prepare_landmark_dataset("w300", result, tmp_path / "out", flip_permutation=FLIP, **PARAMS)
    last = manifest["quarantined"][-1]
    assert last["source"] == "common/12.jpg" and "inter_ocular is 0.0" in last["reason"]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_inputs_give_the_same_bytes_and_content_hash(tmp_path):
    result = w300_faces(tmp_path / "raw", np.random.default_rng(0))
    a = prepare_landmark_dataset("w300", result, tmp_path / "a", flip_permutation=FLIP, **PARAMS)
    b = prepare_landmark_dataset("w300", result, tmp_path / "b", flip_permutation=FLIP, **PARAMS)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert a["content_hash"] == b["content_hash"] and len(a["content_hash"]) == 64
    assert a["files"] == {name: digest for name, digest in digests(tmp_path / "a").items() if name.endswith(".parquet")}
    other = prepare_landmark_dataset("w300", result, tmp_path / "c", flip_permutation=FLIP, **{**PARAMS, "seed": 1})
    assert other["params_hash"] != a["params_hash"] and other["content_hash"] != a["content_hash"]
    # one training face moved by a pixel: a different content hash, the params hash unchanged
    result.faces[3].landmarks = result.faces[3].landmarks + 1.0
    moved = prepare_landmark_dataset("w300", result, tmp_path / "d", flip_permutation=FLIP, **PARAMS)
    assert moved["params_hash"] == a["params_hash"] and moved["content_hash"] != a["content_hash"]


def test_content_hash_ignores_how_parquet_stores_the_rows(tmp_path):
    """The hash is of the rows, not the files: recomputed from the files read back, split into other chunks,
    it is the manifest's."""
    from facebench.data.parquet import ContentHash

    manifest = prepare_landmark_dataset("w300", w300_faces(tmp_path / "raw", np.random.default_rng(0)),
                                        tmp_path / "out", flip_permutation=FLIP, **PARAMS)
    import pyarrow.parquet as pq

    hasher = ContentHash(manifest["params"])
    for stem in sorted(manifest["counts"]):
        table = pq.read_table(tmp_path / "out" / f"{stem}.parquet").replace_schema_metadata(None)
        hasher.add(stem, [table.slice(i, 2) for i in range(0, table.num_rows, 2)])
    assert hasher.hexdigest() == manifest["content_hash"]


def test_failure_leaves_the_previous_output_untouched(tmp_path, monkeypatch):
    result = w300_faces(tmp_path / "raw", np.random.default_rng(0))
    out = tmp_path / "prepared"
    prepare_landmark_dataset("w300", result, out, flip_permutation=FLIP, **PARAMS)
    before = digests(out)
    calls = []

    def failing(path, rows, metadata):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(path, rows, metadata)

    real = prep.write_samples
    monkeypatch.setattr(prep, "write_samples", failing)
    with pytest.raises(OSError, match="disk full"):
        prepare_landmark_dataset("w300", result, out, flip_permutation=FLIP, **{**PARAMS, "crop_size": 32})
    assert digests(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared", "raw"]


def test_bad_arguments_raise(tmp_path):
    result = aflw_faces(tmp_path / "raw")
    kwargs = dict(crop_size=32, margin=0.1, pdb_bins=None, pdb_component=None, seed=0)
    with pytest.raises(ValueError, match="68-point"):
        prepare_landmark_dataset("aflw", result, tmp_path / "o", flip_permutation=list(range(19)),
                                 normaliser="inter_ocular", **kwargs)
    with pytest.raises(ValueError, match="permutation"):
        prepare_landmark_dataset("aflw", result, tmp_path / "o", flip_permutation=[0] * 19,
                                 normaliser="box_width", **kwargs)
    with pytest.raises(ValueError, match="no usable faces"):
        prepare_landmark_dataset("aflw", ReadResult([], []), tmp_path / "o", flip_permutation=list(range(19)),
                                 normaliser="box_width", **kwargs)
    with pytest.raises(ValueError, match="val_fraction is 1.0"):
        prepare_landmark_dataset("aflw", result, tmp_path / "o", flip_permutation=list(range(19)),
                                 normaliser="box_width", val_fraction=1.0, **kwargs)
    one_train = ReadResult([f for f in result.faces if f.split == "test" or f.source.endswith("00000.jpg")], [])
    with pytest.raises(ValueError, match="train split has 1 image.*at least 2"):
        prepare_landmark_dataset("aflw", one_train, tmp_path / "o", flip_permutation=list(range(19)),
                                 normaliser="box_width", **kwargs)
    assert not (tmp_path / "o").exists()


def test_reader_to_prepared_300w(tmp_path):
    """The 300-W reader's output prepares end to end (pts written by hand here, 1-based)."""
    from facebench.data.formats.w300 import read_w300

    root = tmp_path / "300w"
    folders = ["afw", "helen/trainset", "lfpw/trainset", "helen/testset", "lfpw/testset", "ibug"]
    rng = np.random.default_rng(5)
    for i, folder in enumerate(folders):
        for j in range(2):
            image_file(root / folder, f"f{i}_{j}.jpg")
            pts = rng.uniform(20, 80, (68, 2))
            body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
            (root / folder / f"f{i}_{j}.pts").write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    from facebench.stages import expected_landmark_splits

    manifest = prepare_landmark_dataset("w300", read_w300(root), tmp_path / "out", flip_permutation=FLIP,
                                        val_group="w300_picture", expected_splits=expected_landmark_splits("w300", root),
                                        **PARAMS)
    # f0_0 and f0_1 are two pictures (a _0 suffix is no face number): 6 training pictures, one held out
    assert {k: manifest["counts"][k] for k in ("train", "val", "common", "challenging", "full")} == {
        "train": 5, "val": 1, "common": 4, "challenging": 2, "full": 6}
    assert manifest["splits"]["challenging"]["from"] == "ibug/"  # relative to the dataset root
    assert manifest["splits"]["train"]["from"] == "afw/ and helen/trainset/ and lfpw/trainset/"


# --- the validation split ---------------------------------------------------------------------

def test_w300_picture_groups_the_face_copies_of_one_picture():
    picture = prep.VAL_GROUPS["w300_picture"][0]
    assert picture("helen/trainset/100032540_1.jpg") == picture("helen/trainset/100032540_2.jpg") == \
        "helen/trainset/100032540"
    assert picture("ibug/image_003_1.jpg") == "ibug/image_003"
    assert picture("afw/1051618982_12.jpg") == "afw/1051618982"
    # zero-padded numbers are file numbers, not face suffixes
    assert picture("lfpw/trainset/image_0001.png") == "lfpw/trainset/image_0001"
    assert picture("300W/01_Indoor/indoor_001.png") == "300W/01_Indoor/indoor_001"
    assert picture("afw/f0_0.jpg") == "afw/f0_0"
    assert picture("helen/testset/100032540_1.jpg") != picture("helen/trainset/100032540_1.jpg")  # folders differ


def picture_faces(root: Path) -> ReadResult:
    """8 training files from 5 pictures (two with _1/_2/_3 copies), one test face."""
    names = ["afw/11_1.jpg", "afw/11_2.jpg", "afw/11_3.jpg", "afw/12_1.jpg", "helen/trainset/13_1.jpg",
             "helen/trainset/13_2.jpg", "lfpw/trainset/image_0001.png", "lfpw/trainset/image_0002.png"]
    rng = np.random.default_rng(3)
    faces = []
    for i, name in enumerate(names + ["helen/testset/14_1.jpg"]):
        folder, file = name.rsplit("/", 1)
        points = rng.uniform(20, 70, (68, 2)).astype(np.float32)
        points[36], points[45] = (30.0, 40.0), (60.0, 44.0)
        faces.append(RawFace(name, image_file(root / folder, file), points, np.ones(68, bool),
                             np.array([20.0, 10.0, 50.0, 60.0], np.float32), "train" if i < 8 else "common"))
    return ReadResult(faces, [])


@pytest.mark.parametrize("seed", range(6))
def test_val_holds_out_whole_pictures(tmp_path, seed):
    """Copies of one picture are never split between train and val; the fraction counts pictures."""
    result = picture_faces(tmp_path / "raw")
    manifest = prepare_landmark_dataset("w300", result, tmp_path / "out", flip_permutation=FLIP,
                                        **{**PARAMS, "seed": seed}, val_fraction=0.5, val_group="w300_picture")
    picture = prep.VAL_GROUPS["w300_picture"][0]
    train = {picture(s) for s in read_samples(tmp_path / "out" / "train.parquet")["source"]}
    val = {picture(s) for s in read_samples(tmp_path / "out" / "val.parquet")["source"]}
    assert not train & val and len(train | val) == 5
    assert len(val) == 3 == manifest["val"]["images"]  # 5 pictures * 0.5 = 2.5, rounded half up
    assert manifest["counts"]["train"] + manifest["counts"]["val"] == 8
    pdb = read_samples(tmp_path / "out" / "train_pdb.parquet")
    assert {picture(s) for s in pdb["source"]} == train


def test_val_count_rounds_half_up_and_keeps_one_image_each_side(tmp_path):
    def held(fraction, n):
        faces = [_Fake(f"afw/{k}.jpg") for k in range(n)]
        return len(prep.hold_out_images("x", faces, fraction, 0, "image")[1])

    assert held(0.15, 10) == 2 and held(0.14, 10) == 1 and held(0.01, 10) == 1  # at least one
    assert held(0.99, 10) == 9  # at least one left to train on
    faces = [_Fake(f"afw/{k}.jpg") for k in range(10)]
    assert [c.face.source for c in prep.hold_out_images("x", faces, 0.3, 7, "image")[1]] == \
        [c.face.source for c in prep.hold_out_images("x", faces[::-1], 0.3, 7, "image")[1]][::-1]  # same images


class _Fake:
    """The part of a crop hold_out_images reads."""

    def __init__(self, source: str):
        self.face = RawFace(source, Path(source), np.zeros((1, 2), np.float32), np.ones(1, bool), None, "train")


# --- expected splits --------------------------------------------------------------------------

def test_an_emptied_ibug_folder_names_the_split_and_folder(tmp_path):
    from facebench.data.formats.w300 import read_w300
    from facebench.stages import expected_landmark_splits

    root = tmp_path / "300w"
    for i, folder in enumerate(["afw", "helen/trainset", "lfpw/trainset", "helen/testset", "lfpw/testset", "ibug"]):
        for j in range(2):
            image_file(root / folder, f"f{i}_{j}.jpg")
            body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in np.random.default_rng(j).uniform(20, 80, (68, 2)))
            (root / folder / f"f{i}_{j}.pts").write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    for path in (root / "ibug").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match=rf"split 'challenging' is empty .*expected faces from ibug/ under {root}"):
        prepare_landmark_dataset("w300", read_w300(root), tmp_path / "out", flip_permutation=FLIP,
                                 expected_splits=expected_landmark_splits("w300", root), source_root=root, **PARAMS)
    assert not (tmp_path / "out").exists()


def test_aflw_with_an_empty_test_list_names_the_split_and_file(tmp_path):
    from facebench.data.formats.aflw import read_aflw_full
    from facebench.data.synth.landmarks import synth_aflw
    from facebench.stages import expected_landmark_splits

    root = tmp_path / "aflw"
    synth_aflw(root, 6, seed=0, image_size=96)
    with pytest.raises(ValueError, match=r"split 'test' is empty .*AFLWinfo_release\.mat \(the test entries.* under "):
        prepare_landmark_dataset("aflw", read_aflw_full(root, n_train=6), tmp_path / "out",
                                 flip_permutation=list(range(19)), crop_size=32, margin=0.1, pdb_bins=None,
                                 pdb_component=None, normaliser="box_width", seed=0,
                                 expected_splits=expected_landmark_splits("aflw_full", root), source_root=root)
    assert not (tmp_path / "out").exists()


def test_a_split_emptied_by_quarantine_is_an_error(tmp_path):
    result = w300_faces(tmp_path / "raw", np.random.default_rng(0))
    for face in result.faces[13:]:  # both challenging images unreadable
        face.image_path.write_bytes(b"not an image")
    expected = {"train": "train/", "common": "common/", "challenging": "challenging/"}
    with pytest.raises(ValueError, match=r"split 'challenging' is empty \(every face found there was quarantined"):
        prepare_landmark_dataset("w300", result, tmp_path / "out", flip_permutation=FLIP, expected_splits=expected,
                                 **PARAMS)


def test_aflw_without_a_frontal_test_face_is_an_error(tmp_path):
    result = aflw_faces(tmp_path / "raw")
    for face in result.faces:
        if face.split == "test":
            face.visible[0] = False
    with pytest.raises(ValueError, match=r"split 'frontal' is empty: none of the 3 test faces has every landmark"):
        prepare_landmark_dataset("aflw", result, tmp_path / "out", crop_size=32, margin=0.1, pdb_bins=None,
                                 pdb_component=None, flip_permutation=list(range(19)), normaliser="box_width", seed=0,
                                 expected_splits={"train": "AFLWinfo_release.mat", "test": "AFLWinfo_release.mat"})
