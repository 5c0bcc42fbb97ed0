"""Two-stage geometry (Wing loss paper): rotation removal, box correction and mapping back, on hand-made faces."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facebench.papers.wing.model import CNN6, CNN7
from facebench.papers.wing.two_stage import (
    EYE_INDICES, map_back, recrop_matrices, recrop_split, similarity_scale, two_stage_predict,
)


def upright_face() -> np.ndarray:
    """19 AFLW-layout points of an upright face centred at the origin: eyes (7, 10) at (-10, 0) and (10, 0),
    the rest spread so that the bounding box is [-20, 20] x [-12, 28] (side 40)."""
    pts = np.zeros((19, 2))
    pts[:, 0] = np.linspace(-20, 20, 19)
    pts[:, 1] = np.linspace(-12, 28, 19)[::-1]
    pts[7], pts[10] = (-10.0, 0.0), (10.0, 0.0)
    return pts


def test_rotation_removed_and_box_fitted_by_hand():
    q = upright_face()
    angle = math.radians(30.0)
    c, s = math.cos(angle), math.sin(angle)
    placed = q @ np.array([[c, s], [-s, c]]) * 1.5 + np.array([60.0, 70.0])  # rotate by +30 deg, scale, move
    m = recrop_matrices(torch.tensor(placed[None], dtype=torch.float64), out_size=128, margin=0.25)[0].numpy()
    # by hand: undo the 1.5 scale and the move, rotate back by 30 deg; the box [-20, 20] x [-12, 28] (side 40,
    # centre (0, 8)) widened by 25% of its side each way is 60 face units -> 128 px, centred at 63.5
    k = 128 / 60
    out = placed @ m[:, :2].T + m[:, 2]
    want = (q - np.array([0.0, 8.0])) * k + 63.5
    np.testing.assert_allclose(out, want, atol=1e-9)
    assert out[7, 1] == pytest.approx(out[10, 1], abs=1e-9)  # eye line horizontal
    assert similarity_scale(torch.tensor(m[None]))[0].item() == pytest.approx(k / 1.5, rel=1e-12)


def test_mapping_back_is_exact():
    gen = torch.Generator().manual_seed(0)
    pts = torch.rand(16, 68, 2, generator=gen, dtype=torch.float64) * 100
    m = recrop_matrices(pts, out_size=128, margin=0.2)
    there = pts @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]
    torch.testing.assert_close(map_back(there, m), pts, atol=1e-9, rtol=0)


def test_eye_layouts_and_unknown_layout():
    assert EYE_INDICES[68][0] == tuple(range(36, 42)) and EYE_INDICES[19] == ((7,), (10,))
    with pytest.raises(ValueError, match="5-point"):
        recrop_matrices(torch.zeros(1, 5, 2))


def test_two_stage_predict_maps_stage2_output_back():
    """A stage 2 that 'predicts' the recrop of the stage-1 points gives the stage-1 points back."""
    torch.manual_seed(0)
    stage1 = CNN6(19).eval()
    crops = torch.randint(0, 256, (3, 128, 128, 3), dtype=torch.uint8)

    class Echo(torch.nn.Module):  # returns the stage-1 points as seen in the stage-2 crop
        num_landmarks, input_size = 19, 128

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            from facebench.papers.wing.two_stage import stage1_points
            first = stage1_points(stage1, crops, 64)
            m = recrop_matrices(first, 128)
            return (first @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]).reshape(len(images), -1)

    from facebench.papers.wing.two_stage import stage1_points
    got = two_stage_predict(stage1, Echo(), crops, 64)
    torch.testing.assert_close(got, stage1_points(stage1, crops, 64), atol=1e-3, rtol=0)
    assert CNN7(19)(torch.zeros(1, 3, 128, 128)).shape == (1, 38)


def test_recrop_split_keeps_points_on_their_pixels_and_nme(tmp_path):
    """Recropping a prepared split: each ground-truth point still sits on its bright dot, the normaliser
    scales with the crop, and the stage-1 NME it reports is the one computed by hand."""
    from facebench.data.parquet import RAW_RGB8, read_metadata, read_samples, write_samples
    from facebench.data.transforms import resize_matrix

    rng = np.random.default_rng(0)
    n, size = 4, 128
    face = upright_face()
    rows = {k: [] for k in ("sample_id", "image", "height", "width", "landmarks", "visible", "bbox", "norm",
                            "identity", "source", "split", "pose", "pdb_copy")}
    gts = []
    for i in range(n):
        a = math.radians(rng.uniform(-40, 40))
        c, s = math.cos(a), math.sin(a)
        gt = face @ np.array([[c, s], [-s, c]]) * rng.uniform(1.2, 1.6) + rng.uniform(55, 70, 2)
        img = np.zeros((size, size, 3), np.uint8)
        for x, y in np.round(gt).astype(int):
            img[y - 1:y + 2, x - 1:x + 2] = 255
        gts.append(gt)
        for k, v in (("sample_id", f"s{i}"), ("image", img.tobytes()), ("height", size), ("width", size),
                     ("landmarks", gt.reshape(-1).tolist()), ("visible", [True] * 19), ("bbox", [0, 0, size, size]),
                     ("norm", 50.0), ("identity", None), ("source", f"s{i}.jpg"), ("split", "test"), ("pose", None),
                     ("pdb_copy", 0)):
            rows[k].append(v)
    meta = {"dataset": "toy", "num_landmarks": 19, "flip_permutation": list(range(19)), "normaliser": "box_width",
            "params_hash": "x", "content_hash": "source-hash", "crop_size": size, "image_encoding": RAW_RGB8}
    write_samples(tmp_path / "test.parquet", rows, meta)

    shift = torch.tensor([1.5, -1.0])

    class Stage1(torch.nn.Module):  # "predicts" the ground truth, 1.8 px off, in its 64-px input
        num_landmarks = 19

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            r = torch.tensor(resize_matrix(size, 64), dtype=torch.float32)
            pts = (torch.tensor(np.stack(gts), dtype=torch.float32) + shift) @ r[:, :2].T + r[:, 2]
            return pts.reshape(len(images), -1)

    summary = recrop_split(tmp_path / "test.parquet", tmp_path / "out.parquet", Stage1(), 64, "toy_cnn6",
                           torch.device("cpu"))
    assert summary["rows"] == n
    assert summary["stage1_nme"] == pytest.approx(float(shift.norm()) / 50.0, rel=1e-4)
    out = read_samples(tmp_path / "out.parquet")
    out_meta = read_metadata(tmp_path / "out.parquet")
    assert out_meta["stage1"] == "toy_cnn6" and out_meta["source_content_hash"] == "source-hash"
    assert len(out_meta["content_hash"]) == 64 and out_meta["content_hash"] != "source-hash"
    for i in range(n):
        img = np.frombuffer(out["image"][i], np.uint8).reshape(128, 128, 3)
        pts = np.asarray(out["landmarks"][i]).reshape(-1, 2)
        for x, y in np.round(pts).astype(int):
            assert img[y, x, 0] > 100, (i, x, y)  # still on its dot
        eyes = pts[[7, 10]]
        assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-3  # the (shifted) stage-1 eye line was horizontal: GT's too
        gt_span = np.linalg.norm(gts[i][10] - gts[i][7])
        assert out["norm"][i] / 50.0 == pytest.approx(np.linalg.norm(eyes[1] - eyes[0]) / gt_span, rel=1e-4)


def test_recrop_experiment_rewrites_every_split_under_one_content_hash(smoke_project, tmp_path):
    """A two-stage row's set: every prepared split it reads (val included, train_pdb only for PDB rows), one
    content hash in the manifest and every file, the source set's hash kept, the same bytes when repeated."""
    import json
    import shutil

    from facebench.config import Paths, load_params, resolve_experiment
    from facebench.data.parquet import read_metadata
    from facebench.papers.wing.two_stage import recrop_experiment

    shutil.copy(smoke_project / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(smoke_project / "data" / "prepared" / "aflw", tmp_path / "data" / "prepared" / "aflw")
    params = load_params(tmp_path / "params.yaml", profile="smoke")
    paths = Paths(root=tmp_path)
    key = next(k for k, v in params.two_stage_experiments.items() if v.dataset == "aflw" and not v.pdb)
    exp = resolve_experiment(params, key)
    paths.model_weights(exp.stage1).parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(CNN6(19).state_dict(), paths.model_weights(exp.stage1))
    manifest = recrop_experiment(exp, paths, torch.device("cpu"))
    out = paths.training_data(exp)
    assert sorted(p.name for p in out.glob("*.parquet")) == ["frontal.parquet", "test.parquet", "train.parquet",
                                                           "val.parquet"]
    assert {read_metadata(out / name)["content_hash"] for name in manifest["files"]} == {manifest["content_hash"]}
    source = json.loads((paths.prepared("aflw") / "manifest.json").read_text())
    assert manifest["params"]["source_content_hash"] == source["content_hash"]
    before = {name: (out / name).read_bytes() for name in manifest["files"]}
    assert recrop_experiment(exp, paths, torch.device("cpu"))["content_hash"] == manifest["content_hash"]
    assert {name: (out / name).read_bytes() for name in manifest["files"]} == before
