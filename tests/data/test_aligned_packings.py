"""InsightFace's aligned packings wired into `prepare`: CASIA-WebFace as train.rec/train.idx (format casia_rec)
and LFW as lfw.bin (format lfw_bin), written here independently (the RecordIO framing and IRHeader of
tests/data/test_casia.py, Python 2's pickle opcodes of tests/data/test_lfw.py), images encoded with Pillow."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from facebench.config import DatasetConfig, Paths
from facebench.data.align import TEMPLATES
from tests.data.test_casia import ir_pack, write_rec
from tests.data.test_lfw import py2_pickle

ARC = TEMPLATES["112x112"][0]


def png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def faces(rng, n: int, side: int = 112) -> list[np.ndarray]:
    return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n)]


def _stored(table, sample_id: str) -> np.ndarray:
    row = table.filter(table["sample_id"].to_numpy(zero_copy_only=False) == sample_id).to_pylist()[0]
    return np.frombuffer(row["image"], np.uint8).reshape(row["height"], row["width"], 3)


def test_casia_rec_prepares_every_decodable_aligned_face(tmp_path):
    from facebench.stages import _prepare_identity_dataset

    rng = np.random.default_rng(0)
    images = faces(rng, 24)  # 8 identities of 3 images
    labels = [i // 3 for i in range(24)]
    bad = [b"not an image", png(faces(rng, 1, side=100)[0])]  # undecodable; not 112x112
    bodies = [png(im) for im in images] + bad
    classes = labels + [8, 8]
    n = len(bodies)
    records = [ir_pack([n + 1, n + 1 + 9], b"", 0)]  # InsightFace's meta record: images are keys 1..n
    records += [ir_pack([c, 1] if k % 2 else c, body, k + 1) for k, (c, body) in enumerate(zip(classes, bodies))]
    root = tmp_path / "faces_webface_112x112"
    root.mkdir()
    write_rec(root, records)
    (root / "property").write_text("9,112,112\n")

    cfg = DatasetConfig(source="real", format="casia_rec", root=str(root), template="112x112", val_fraction=0.25)
    paths = Paths(root=tmp_path)
    manifest = _prepare_identity_dataset(cfg, "casia", paths)

    assert manifest["points"] == "aligned" and manifest["quarantined_count"] == 2
    assert [q["source"] for q in manifest["quarantined"]] == ["train.rec#25", "train.rec#26"]
    assert "undecodable" in manifest["quarantined"][0]["reason"] and "100x100" in manifest["quarantined"][1]["reason"]
    held = manifest["val"]["identities"]
    assert held == 2 and manifest["num_classes"] == 6  # 25% of 8 identities held out for validation
    train = pq.read_table(paths.prepared("casia") / "train.parquet")
    val = pq.read_table(paths.prepared("casia") / "val_images.parquet")
    assert train.num_rows == 18 and val.num_rows == 6
    assert sorted(set(train["identity"].to_pylist())) == list(range(6))  # relabelled 0..C-1
    for table in (train, val):
        for sample_id in table["sample_id"].to_pylist():
            k = int(sample_id.split("#")[1]) - 1
            assert np.array_equal(_stored(table, sample_id), images[k])  # the face as packed, RGB
    landmarks = np.stack(train["landmarks"].to_numpy(zero_copy_only=False)).reshape(-1, 5, 2)
    assert np.allclose(landmarks, ARC)  # the template the set is aligned to
    pairs = pq.read_table(paths.prepared("casia") / "val_pairs.parquet")
    val_ids = set(val["sample_id"].to_pylist())
    assert set(pairs["left"].to_pylist()) | set(pairs["right"].to_pylist()) <= val_ids


def test_lfw_bin_prepares_view2_folds_in_order(tmp_path):
    from facebench.stages import _prepare_identity_dataset

    rng = np.random.default_rng(1)
    n_pairs = 20  # 10 folds of 2
    images = faces(rng, 2 * n_pairs)
    bins = [png(im) for im in images]
    bins[7] = b"broken"  # pair 3 loses an image
    issame = [bool(i % 2 == 0) for i in range(n_pairs)]
    root = tmp_path / "lfw_bin"
    root.mkdir()
    (root / "lfw.bin").write_bytes(py2_pickle(bins, issame))

    cfg = DatasetConfig(source="real", format="lfw_bin", root=str(root), template="112x112")
    paths = Paths(root=tmp_path)
    manifest = _prepare_identity_dataset(cfg, "lfw", paths)

    assert manifest["quarantined"] == [{"source": "lfw.bin:pair3", "reason": manifest["quarantined"][0]["reason"]}]
    assert manifest["counts"] == {"images": 38, "pairs": 19, "matched": 10, "folds": 10}
    pairs = pq.read_table(paths.prepared("lfw") / "pairs.parquet").to_pylist()
    kept = [i for i in range(n_pairs) if i != 3]
    assert [p["left"] for p in pairs] == [f"lfw.bin#{2 * i}" for i in kept]
    assert [p["right"] for p in pairs] == [f"lfw.bin#{2 * i + 1}" for i in kept]
    assert [p["same"] for p in pairs] == [issame[i] for i in kept]
    assert [p["fold"] for p in pairs] == [i // 2 for i in kept]  # View 2's folds: contiguous, in order
    table = pq.read_table(paths.prepared("lfw") / "images.parquet")
    assert np.array_equal(_stored(table, "lfw.bin#9"), images[9])

    (root / "lfw.bin").write_bytes(py2_pickle(bins[:6], issame[:3]))  # 3 pairs: not 10 folds
    with pytest.raises(ValueError, match="3 pairs; expected a positive multiple of 10"):
        _prepare_identity_dataset(cfg, "lfw", paths)


@pytest.mark.parametrize("fields, match", [
    ({"source": "synth"}, "real data"),
    ({"template": "112x96"}, "template must be '112x112'"),
    ({"points": "mtcnn"}, "points 'list'"),
])
def test_aligned_packings_refuse_settings_that_cannot_apply(fields, match):
    base = {"source": "real", "format": "casia_rec", "root": "x", "template": "112x112"}
    with pytest.raises(ValueError, match=match):
        DatasetConfig(**{**base, **fields})
