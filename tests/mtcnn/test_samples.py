"""MTCNN training crops: the paper's IoU labels, targets that invert the cascade's calibration, the
3:1:1:2 mix, pixels that match their boxes, and hard examples mined from a real cascade's proposals."""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from facebench.data.formats.wider import read_scenes
from facebench.data.synth.wider import synth_wider
from facebench.papers.mtcnn import default_weights_dir
from facebench.papers.mtcnn.boxes import calibrate, iou
from facebench.papers.mtcnn.loss import LANDMARK, NEGATIVE, PART, POSITIVE
from facebench.papers.mtcnn.samples import box_targets, cut, label, landmark_targets, mix, write_training_data
from tests.conftest import needs_published_weights


def test_iou_labels_follow_the_papers_thresholds():
    got = label(np.array([0.0, 0.29, 0.3, 0.35, 0.4, 0.41, 0.65, 0.66, 1.0]))
    assert got.tolist() == [NEGATIVE, NEGATIVE, -1, -1, -1, PART, PART, POSITIVE, POSITIVE]


def test_targets_invert_calibration_and_landmarks_are_crop_fractions():
    crops = np.array([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 100.0, 100.0]])
    faces = np.array([[12.0, 18.0, 33.0, 41.0], [5.0, 10.0, 95.0, 90.0]])
    t = box_targets(crops, faces)
    assert t[0].tolist() == pytest.approx([0.1, -0.1, 0.15, 0.05])  # hand: (12-10)/20, (18-20)/20, ...
    back = calibrate(torch.from_numpy(crops), torch.from_numpy(t)).numpy()
    assert back == pytest.approx(faces)
    points = np.array([[[15.0, 30.0], [25.0, 30.0], [20.0, 35.0], [16.0, 38.0], [24.0, 38.0]]])
    lm = landmark_targets(crops[:1], points)[0]
    assert lm[:5].tolist() == pytest.approx([0.25, 0.75, 0.5, 0.3, 0.7])  # x: (15-10)/20, ...
    assert lm[5:].tolist() == pytest.approx([0.5, 0.5, 0.75, 0.9, 0.9])   # y: (30-20)/20, ...


def test_mix_keeps_the_3_1_1_2_ratio_as_far_as_the_scarcest_kind_allows():
    kind = np.array([NEGATIVE] * 30 + [POSITIVE] * 7 + [PART] * 12 + [LANDMARK] * 20)
    keep = mix(kind, np.random.default_rng(0), (NEGATIVE, POSITIVE, PART, LANDMARK))
    counts = [int((kind[keep] == k).sum()) for k in (NEGATIVE, POSITIVE, PART, LANDMARK)]
    assert counts == [21, 7, 7, 14]  # unit = min(30 // 3, 7, 12, 20 // 2) = 7
    with pytest.raises(ValueError, match="no part"):
        mix(np.array([NEGATIVE] * 6 + [POSITIVE] * 2), np.random.default_rng(0), (NEGATIVE, POSITIVE, PART))


def test_cut_takes_the_boxes_pixels_and_pads_black():
    image = np.zeros((50, 60, 3), np.uint8)
    image[10:20, 30:40] = (200, 100, 50)
    crops = cut(image, np.array([[30.0, 10.0, 40.0, 20.0], [-10.0, -10.0, 10.0, 10.0]]), 10)
    assert (crops[0] == (200, 100, 50)).all()
    assert (crops[1][:5, :5] == 0).all()  # outside the image


@pytest.fixture(scope="module")
def scenes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("wider")
    synth_wider(root, {"train": 6, "val": 3}, seed=5, max_faces=4, min_face=14, max_face=160)
    return root


def _check_rows(root, table, size):
    scenes = {s.name: s for s in read_scenes(root, "train")}
    for row in table.to_pylist()[:200]:
        scene = scenes[row["source"]]
        crop = np.asarray(row["crop_box"], np.float64)[None]
        best = iou(torch.from_numpy(crop), torch.from_numpy(scene.boxes)).numpy().max() if len(scene.boxes) else 0.0
        assert row["iou"] == pytest.approx(best, abs=1e-4)
        kind = LANDMARK if row["kind"] == LANDMARK else int(label(np.array([best]))[0])
        assert row["kind"] == kind
        if row["kind"] in (POSITIVE, PART, LANDMARK):  # the target leads back to a face
            face = calibrate(torch.from_numpy(crop), torch.tensor([row["box_target"]], dtype=torch.float64))
            assert np.abs(scene.boxes - face.numpy()).max(axis=1).min() < 1e-3
        assert len(row["image"]) == size * size * 3
    for row in table.to_pylist()[:20]:  # the pixels are the crop box's
        scene = scenes[row["source"]]
        image = cv2.cvtColor(cv2.imread(str(scene.image_path)), cv2.COLOR_BGR2RGB)
        again = cut(image, np.asarray([row["crop_box"]], np.float64), size)[0]
        assert again.tobytes() == row["image"]


def test_pnet_set_from_synthetic_scenes(scenes_root, tmp_path):
    manifest = write_training_data(lambda split: read_scenes(scenes_root, split), tmp_path / "pnet", "pnet", seed=0, negatives=40, per_face=20)
    table = pq.read_table(tmp_path / "pnet" / "train.parquet")
    kept = manifest["splits"]["train"]["kept"]
    assert kept["negative"] == 3 * kept["positive"] == 3 * kept["part"] > 0
    assert "landmark" not in kept and manifest["splits"]["val"]["kept"]["positive"] > 0
    _check_rows(scenes_root, table, 12)


@needs_published_weights
def test_onet_set_mines_a_real_cascades_proposals_and_has_landmark_faces(scenes_root, tmp_path):
    from facebench.papers.mtcnn.detect import MTCNNDetector

    detector = MTCNNDetector(default_weights_dir(), min_face=14, thresholds=(0.5, 0.5, 0.5))
    manifest = write_training_data(lambda split: read_scenes(scenes_root, split), tmp_path / "onet", "onet", seed=0, negatives=40, per_face=20,
                                   proposer=detector.proposals)
    train = manifest["splits"]["train"]
    assert train["proposals"] > 0 and train["mined_kept"] > 0
    kept = train["kept"]
    assert kept["negative"] == 3 * kept["positive"] == 3 * kept["part"] and kept["landmark"] == 2 * kept["positive"]
    table = pq.read_table(tmp_path / "onet" / "train.parquet")
    _check_rows(scenes_root, table, 48)
    rows = table.to_pylist()
    scenes = {s.name: s for s in read_scenes(scenes_root, "train")}
    marks = [r for r in rows if r["kind"] == LANDMARK]
    for r in marks[:50]:  # the landmark target leads back to the face's five points
        crop = np.asarray(r["crop_box"], np.float64)
        side = crop[2] - crop[0]
        pts = np.stack([crop[0] + np.asarray(r["landmark_target"][:5]) * side,
                        crop[1] + np.asarray(r["landmark_target"][5:]) * side], axis=1)
        assert np.abs(scenes[r["source"]].landmarks - pts[None]).max(axis=(1, 2)).min() < 1e-2
    with pytest.raises(ValueError, match="proposer"):
        write_training_data(lambda split: read_scenes(scenes_root, split), tmp_path / "rnet", "rnet", seed=0, negatives=4, per_face=2)


def test_prepared_scenes_round_trip_and_list_skipped_faces(scenes_root, tmp_path):
    from facebench.data.formats.wider import load_scenes, prepare_scenes

    manifest = prepare_scenes(scenes_root, tmp_path / "prepared")
    raw = {"train": read_scenes(scenes_root, "train"), "val": read_scenes(scenes_root, "val")}
    back = {split: load_scenes(tmp_path / "prepared", split, scenes_root) for split in ("train", "val", "test")}
    # val: one of the 6 WIDER_train scenes (0.6 rounds to 1); test: WIDER_val
    assert len(back["val"]) == 1 and len(back["train"]) == 5
    assert sorted(s.name for s in back["train"] + back["val"]) == sorted(s.name for s in raw["train"])
    assert [s.name for s in back["test"]] == [s.name for s in raw["val"]]
    by_name = {("train", s.name): s for s in raw["train"]} | {("val", s.name): s for s in raw["val"]}
    for split, scenes in back.items():
        for b in scenes:
            a = by_name[("val" if split == "test" else "train", b.name)]
            assert np.allclose(a.boxes, b.boxes) and np.allclose(a.landmarks, b.landmarks, equal_nan=True)
            assert b.image_path == a.image_path and b.image_path.is_file()
        assert manifest["splits"][split]["faces"] == sum(len(s.boxes) for s in scenes)
        assert manifest["splits"][split]["skipped_faces"] == 0
    gt = scenes_root / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    lines = gt.read_text().splitlines()
    face_line = next(i for i, line in enumerate(lines) if len(line.split()) == 10 and line.split()[2] != "0")
    parts = lines[face_line].split()
    parts[2] = "0"  # zero width: left out, listed with its line
    lines[face_line] = " ".join(parts)
    bad = tmp_path / "bad"
    import shutil
    shutil.copytree(scenes_root, bad)
    (bad / "wider_face_split" / "wider_face_val_bbx_gt.txt").write_text("\n".join(lines) + "\n")
    manifest = prepare_scenes(bad, tmp_path / "prepared_bad")
    assert manifest["splits"]["test"]["skipped_faces"] == 1
    assert manifest["splits"]["test"]["skipped"][0]["why"] == "zero width or height"


def test_crops_from_prepared_scenes_never_touch_the_test_scenes(scenes_root, tmp_path):
    """Train crops from the training scenes, validation crops from the held-out WIDER_train scenes, none from
    WIDER_val (the test scenes); the crops' content hash is in the manifest and every file, and repeats."""
    from facebench.data.formats.wider import load_scenes, prepare_scenes
    from facebench.data.parquet import read_metadata

    prepare_scenes(scenes_root, tmp_path / "prepared", val_fraction=0.4, seed=2)
    scenes = {split: load_scenes(tmp_path / "prepared", split, scenes_root) for split in ("train", "val", "test")}
    manifests = [write_training_data(lambda split: scenes[split], tmp_path / name, "pnet", seed=0, negatives=40,
                                     per_face=20, scenes_content_hash="abc") for name in ("a", "b")]
    for split in ("train", "val"):
        table = pq.read_table(tmp_path / "a" / f"{split}.parquet")
        assert set(table.column("source").to_pylist()) <= {s.name for s in scenes[split]}
        assert read_metadata(tmp_path / "a" / f"{split}.parquet")["content_hash"] == manifests[0]["content_hash"]
        assert (tmp_path / "a" / f"{split}.parquet").read_bytes() == (tmp_path / "b" / f"{split}.parquet").read_bytes()
    # names repeat across WIDER_train and WIDER_val in the synthetic set: the crops' pixels tell them apart
    val_rows = pq.read_table(tmp_path / "a" / "val.parquet").to_pylist()[:20]
    val_scenes = {s.name: s for s in scenes["val"]}
    for row in val_rows:
        scene = val_scenes[row["source"]]
        assert "WIDER_train" in str(scene.image_path)
        image = cv2.cvtColor(cv2.imread(str(scene.image_path)), cv2.COLOR_BGR2RGB)
        assert cut(image, np.asarray([row["crop_box"]], np.float64), 12)[0].tobytes() == row["image"]
    assert manifests[0]["content_hash"] == manifests[1]["content_hash"]
    assert manifests[0]["params"]["scenes_content_hash"] == "abc"
    other = write_training_data(lambda split: scenes[split], tmp_path / "c", "pnet", seed=1, negatives=40, per_face=20)
    assert other["content_hash"] != manifests[0]["content_hash"]


def test_a_split_without_faces_is_named(scenes_root, tmp_path):
    scenes = read_scenes(scenes_root, "train")
    empty = [s for s in scenes if len(s.boxes) == 0] or [type(scenes[0])(scenes[0].image_path, scenes[0].name,
                                                                          np.zeros((0, 4)), np.zeros((0, 5, 2)))]
    with pytest.raises(ValueError, match=r"pnet crops of the 'val' scenes \(1 scenes, 0 faces\): no positive"):
        write_training_data(lambda split: scenes if split == "train" else empty[:1], tmp_path / "x", "pnet", seed=0,
                            negatives=10, per_face=5)
    assert not (tmp_path / "x").exists()


@needs_published_weights
def test_candidate_cap_bounds_what_a_permissive_pnet_proposes():
    from facebench.papers.mtcnn.cli import read_rgb
    from facebench.papers.mtcnn.detect import MTCNNDetector

    image = read_rgb(default_weights_dir().parents[1] / "images" / "astronaut.png")
    detector = MTCNNDetector(default_weights_dir(), min_face=20, thresholds=(0.01, 0.5, 0.5))
    free = len(detector.proposals([image], 1)[0])
    detector.max_candidates = 40
    capped = detector.proposals([image], 1)[0]
    assert 0 < len(capped) <= 40 < free


def test_load_trained_loads_the_prefix_and_names_a_missing_stage(tmp_path):
    from facebench.papers.mtcnn.model import PNet, load_trained

    trained = PNet()
    torch.save(trained.state_dict(), tmp_path / "pnet.pt")
    pnet, rnet, onet = load_trained([tmp_path / "pnet.pt"])
    assert all(torch.equal(a, b) for a, b in zip(pnet.state_dict().values(), trained.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="rnet.pt: MTCNN stage not trained"):
        load_trained([tmp_path / "pnet.pt", tmp_path / "rnet.pt"])
