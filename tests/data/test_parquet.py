"""The sample schema, atomic and deterministic writes, metadata round trip."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facebench.data.parquet import (ENCODED, RAW_RGB8, SAMPLE_SCHEMA, ContentHash, content_hash, decode_crops,
                                    read_metadata, read_samples, write_samples, write_table)

META = {"dataset": "w300", "num_landmarks": 2, "flip_permutation": [1, 0],
        "normaliser": "inter_ocular", "params_hash": "abc", "content_hash": "def"}


def rows(n: int = 2, start: int = 0) -> dict[str, list]:
    return {
        "sample_id": [f"w300/afw/{i}.jpg#0" for i in range(start, start + n)],
        "image": [bytes([i, 1, 2]) for i in range(start, start + n)],
        "height": [64] * n,
        "width": [64] * n,
        "landmarks": [[1.5, 2.5, 3.5, 4.5]] * n,
        "visible": [[True, False]] * n,
        "bbox": [[1.0, 2.0, 30.0, 40.0]] * n,
        "norm": [12.5] * n,
        "identity": [None] * n,
        "source": [f"afw/{i}.jpg" for i in range(start, start + n)],
        "split": ["train"] * n,
        "pose": [0.25, None][:n] + [None] * max(0, n - 2),
        "pdb_copy": [0] * n,
    }


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_schema_types():
    t = {f.name: f.type for f in SAMPLE_SCHEMA}
    assert t == {
        "sample_id": pa.string(), "image": pa.binary(), "height": pa.int32(), "width": pa.int32(),
        "landmarks": pa.list_(pa.float32()), "visible": pa.list_(pa.bool_()), "bbox": pa.list_(pa.float32()),
        "norm": pa.float32(), "identity": pa.int32(), "source": pa.string(), "split": pa.string(),
        "pose": pa.float32(), "pdb_copy": pa.int16()}


def test_round_trip(tmp_path):
    path = tmp_path / "train.parquet"
    write_samples(path, rows(), META)
    assert read_metadata(path) == META
    assert pq.read_schema(path).remove_metadata() == SAMPLE_SCHEMA
    df = read_samples(path)
    assert df["sample_id"].tolist() == ["w300/afw/0.jpg#0", "w300/afw/1.jpg#0"]
    assert df["image"].iloc[1] == bytes([1, 1, 2])
    np.testing.assert_allclose(df["landmarks"].iloc[0], [1.5, 2.5, 3.5, 4.5])
    assert df["visible"].iloc[0].tolist() == [True, False]
    assert df["pose"].iloc[0] == pytest.approx(0.25) and np.isnan(df["pose"].iloc[1])
    assert df["identity"].isna().all()
    assert read_samples(path, columns=["norm"]).columns.tolist() == ["norm"]


def test_chunks_and_tables_are_accepted(tmp_path):
    path = tmp_path / "a.parquet"
    write_samples(path, iter([rows(2), rows(3, start=2)]), META)
    assert read_samples(path)["sample_id"].tolist() == [f"w300/afw/{i}.jpg#0" for i in range(5)]
    table = pa.Table.from_pydict(rows(2))  # inferred types (int64, double) are cast to the schema
    write_samples(tmp_path / "b.parquet", table, META)
    assert pq.read_schema(tmp_path / "b.parquet").field("height").type == pa.int32()


def test_same_samples_give_the_same_bytes(tmp_path):
    a, b = tmp_path / "x" / "s.parquet", tmp_path / "y" / "s.parquet"
    write_samples(a, rows(), META)
    write_samples(b, rows(), dict(reversed(list(META.items()))))  # key order does not matter
    assert sha(a) == sha(b)


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "train.parquet"
    write_samples(path, rows(), META)
    before = sha(path)

    def chunks():
        yield rows(2)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_samples(path, chunks(), META)
    assert sha(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.parquet"]


def test_missing_metadata_or_columns_raise(tmp_path):
    with pytest.raises(ValueError, match="params_hash"):
        write_samples(tmp_path / "a.parquet", rows(), {k: v for k, v in META.items() if k != "params_hash"})
    bad = rows()
    del bad["pose"]
    with pytest.raises(ValueError, match="pose"):
        write_samples(tmp_path / "a.parquet", bad, META)
    assert not (tmp_path / "a.parquet").exists()
    pq.write_table(pa.table({"x": [1]}), tmp_path / "plain.parquet")
    with pytest.raises(ValueError, match="no facebench metadata"):
        read_metadata(tmp_path / "plain.parquet")


def test_write_table_keeps_the_tables_metadata_and_adds_ours(tmp_path):
    table = pa.table({"x": [1, 2]}).replace_schema_metadata({"stage": "pnet"})
    write_table(tmp_path / "t.parquet", table, {"content_hash": "abc", "split": "val"})
    assert read_metadata(tmp_path / "t.parquet") == {"content_hash": "abc", "split": "val"}
    assert pq.read_schema(tmp_path / "t.parquet").metadata[b"stage"] == b"pnet"


# --- the content hash -------------------------------------------------------------------------

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_content_hash_follows_its_definition_by_hand():
    """Three columns, two rows (the second all null), spelt out byte by byte as the docstring defines them."""
    import json
    import struct

    table = pa.table({"a": pa.array([1, None], pa.int16()), "b": pa.array([[1.5], None], pa.list_(pa.float32())),
                      "s": pa.array(["é", None], pa.string())})
    valid = _sha(b"\x01\x00")

    def column(name, type_name, lengths, values):
        return _sha(json.dumps([name, type_name, valid, _sha(lengths), _sha(values)]).encode())

    columns = [["a", column("a", "int16", b"", struct.pack("<hh", 1, 0))],
               ["b", column("b", "list<float>", struct.pack("<qq", 1, 0), struct.pack("<f", 1.5))],
               ["s", column("s", "string", struct.pack("<qq", 2, 0), "é".encode())]]
    document = {"params": {"k": 1}, "splits": {"t": {"rows": 2, "columns": columns}}, "version": 1}
    expected = _sha(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
    assert content_hash({"k": 1}, {"t": table}) == expected


def test_content_hash_sees_rows_order_nulls_and_params_not_chunks():
    table = pa.Table.from_pydict(rows(4), schema=SAMPLE_SCHEMA)
    base = content_hash({"p": 1}, {"train": table})
    assert content_hash({"p": 1}, {"train": [table.slice(0, 1), table.slice(1, 3)]}) == base  # chunks do not count
    assert content_hash({"p": 1}, {"train": rows(4)}) == base  # nor the way the rows come
    assert content_hash({"p": 2}, {"train": table}) != base
    assert content_hash({"p": 1}, {"val": table}) != base  # the split's name does
    assert content_hash({"p": 1}, {"train": table.take([1, 0, 2, 3])}) != base
    zero = rows(4)
    zero["pose"] = [0.25, 0.0, None, None]  # null and 0.0 differ
    assert content_hash({"p": 1}, {"train": zero}) != base
    moved = rows(4)
    moved["landmarks"] = [[1.5, 2.5, 3.5, 4.5]] * 3 + [[1.5, 2.5, 3.5, 4.25]]
    assert content_hash({"p": 1}, {"train": moved}) != base
    # list boundaries count: [1.5, 2.5] + [3.5] is not [1.5] + [2.5, 3.5]
    a = pa.table({"v": [[1.5, 2.5], [3.5]]})
    b = pa.table({"v": [[1.5], [2.5, 3.5]]})
    assert content_hash({}, {"t": a}) != content_hash({}, {"t": b})
    hasher = ContentHash({})
    hasher.add("t", a)
    with pytest.raises(ValueError, match="hashed twice"):
        hasher.add("t", a)
    with pytest.raises(TypeError, match="no content-hash encoding"):
        content_hash({}, {"t": pa.table({"d": pa.array([1], pa.date32())})})


def test_decode_crops_reads_raw_and_encoded_images_and_names_bad_rows():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    raw = [im.tobytes() for im in imgs]
    np.testing.assert_array_equal(decode_crops(raw, 4, 5, RAW_RGB8), imgs)
    png = [cv2.imencode(".png", im[..., ::-1])[1].tobytes() for im in imgs]  # PNG holds BGR order for cv2
    np.testing.assert_array_equal(decode_crops(png, 4, 5, ENCODED), imgs)
    with pytest.raises(ValueError, match=r"f\.parquet: row 1 image has 7 bytes; expected 60"):
        decode_crops([raw[0], b"1234567"], 4, 5, RAW_RGB8, "f.parquet")
    with pytest.raises(ValueError, match=r"f\.parquet: row 0 image is undecodable bytes"):
        decode_crops([b"not a png"], 4, 5, ENCODED, "f.parquet")
    with pytest.raises(ValueError, match="image_encoding 'bmp'"):
        decode_crops(raw, 4, 5, "bmp", "f.parquet")
