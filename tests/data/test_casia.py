"""CASIA-WebFace folders, landmark lists, and RecordIO read back from files written here by an
independent minimal writer (struct.pack, dmlc-core's chunk splitting)."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from facebench.data.formats import DatasetFormatError
from facebench.data.formats.casia import (
    LFW_OVERLAP_IDS,
    read_casia,
    read_landmark_list,
    read_property,
    read_recordio,
)

MAGIC = 0xCED7230A
MAGIC_LE = struct.pack("<I", MAGIC)


# --------------------------------------------------------------------------------------------------
# Folders and lists


def make_tree(root):
    img = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1].tobytes()
    layout = {"0000045": ["001.jpg", "002.jpg"], "0166921": ["001.jpg"], "0000099": ["001.jpg", "notes.txt"],
              "0000100": [], "0000012": ["003.jpg", "001.jpg"], "junk": ["001.jpg"]}
    for folder, files in layout.items():
        (root / folder).mkdir(parents=True)
        for name in files:
            (root / folder / name).write_bytes(img if name.endswith(".jpg") else b"x")
    (root / "0000012" / "003.jpg").write_bytes(b"not a jpeg")
    (root / "casia_landmark.txt").write_text("")


def test_read_casia_labels_in_sorted_folder_order_with_exclusion(tmp_path):
    make_tree(tmp_path)
    res = read_casia(tmp_path, exclude=LFW_OVERLAP_IDS)
    assert res.classes == ["0000012", "0000045", "0000099"]  # 0000100 is empty, 0166921 excluded
    got = [(im.source, im.identity) for im in res.images]
    assert got == [("0000012/001.jpg", 0), ("0000012/003.jpg", 0), ("0000045/001.jpg", 1),
                   ("0000045/002.jpg", 1), ("0000099/001.jpg", 2)]
    assert res.images[0].image_path == tmp_path / "0000012" / "001.jpg"
    reasons = {q.source: q.reason for q in res.quarantined}
    assert set(reasons) == {"junk", "0000099/notes.txt", "0000100"}
    assert "7-digit" in reasons["junk"] and "no usable images" in reasons["0000100"]


def test_read_casia_without_exclusion_and_decode_check(tmp_path):
    make_tree(tmp_path)
    res = read_casia(tmp_path, check_images=True)
    assert res.classes == ["0000012", "0000045", "0000099", "0166921"]
    assert "0000012/003.jpg" not in [im.source for im in res.images]
    reasons = {q.source: q.reason for q in res.quarantined}
    assert reasons["0000012/003.jpg"] == "cv2.imread could not decode the image; expected a readable JPEG or PNG"


def test_read_casia_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="not a directory"):
        read_casia(tmp_path / "missing")
    with pytest.raises(DatasetFormatError, match="no <7-digit id>/ identity folders"):
        read_casia(tmp_path)
    with pytest.raises(DatasetFormatError, match="not 7-digit"):
        read_casia(tmp_path, exclude=["166921"])


def test_landmark_lists(tmp_path):
    p = tmp_path / "casia_landmark.txt"
    p.write_text("0000045/001.jpg\t0\t87\t113\t162\t112\t125\t151\t94\t186\t154\t185\n"
                 "0000045/002.jpg\t0\t80\t110\t160\t111\t120\t150\t90\t180\t150\t181\n")
    entries = read_landmark_list(p)
    assert [e.source for e in entries] == ["0000045/001.jpg", "0000045/002.jpg"]
    assert entries[0].label == 0
    np.testing.assert_array_equal(entries[0].points, [[87, 113], [162, 112], [125, 151], [94, 186], [154, 185]])
    q = tmp_path / "lfw_landmark.txt"
    q.write_text("Jane_Roe/Jane_Roe_0001.jpg\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\n")
    (e,) = read_landmark_list(q)
    assert e.label is None and e.points.shape == (5, 2) and e.points[4, 1] == 10
    p.write_text("0000045/001.jpg\t0\t87\t113\n")
    with pytest.raises(DatasetFormatError, match=r"casia_landmark.txt:1: expected"):
        read_landmark_list(p)
    ten = "\t".join(str(v) for v in range(1, 11))
    p.write_text(f"0000045/001.jpg\t0\t{ten}\n0000045/002.jpg\tx\t{ten}\n")
    with pytest.raises(DatasetFormatError, match=r":2: label and coordinates must be numbers"):
        read_landmark_list(p)


# --------------------------------------------------------------------------------------------------
# RecordIO: an independent writer


def chunk_record(payload: bytes) -> list[tuple[int, bytes]]:
    """dmlc-core's split: cut at every 4-aligned occurrence of the magic, dropping those 4 bytes."""
    pieces, start = [], 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i : i + 4] == MAGIC_LE:
            pieces.append(payload[start:i])
            start = i + 4
    pieces.append(payload[start:])
    if len(pieces) == 1:
        return [(0, pieces[0])]
    return [(1 if k == 0 else 3 if k == len(pieces) - 1 else 2, p) for k, p in enumerate(pieces)]


def frame(payload: bytes) -> bytes:
    out = b""
    for cflag, piece in chunk_record(payload):
        out += struct.pack("<II", MAGIC, (cflag << 29) | len(piece)) + piece + b"\0" * (-len(piece) % 4)
    return out


def ir_pack(label, body: bytes, key: int) -> bytes:
    if isinstance(label, (int, float)):
        return struct.pack("<IfQQ", 0, float(label), key, 0) + body
    vec = np.asarray(label, dtype="<f4")
    return struct.pack("<IfQQ", vec.size, 0.0, key, 0) + vec.tobytes() + body


def write_rec(tmp_path, records: list[bytes]):
    rec, idx, blob = tmp_path / "train.rec", tmp_path / "train.idx", b""
    lines = []
    for key, payload in enumerate(records):
        lines.append(f"{key}\t{len(blob)}\n")
        blob += frame(payload)
    rec.write_bytes(blob)
    idx.write_text("".join(lines))
    return rec, idx


def insightface_set(rng) -> tuple[list[bytes], list[tuple[int, bytes]]]:
    """Meta record, 5 images of 2 identities (scalar and [class, aligned] labels), 2 identity records."""
    images = [rng.bytes(37) for _ in range(5)]
    # Image 2 holds the magic at payload offsets 24 + 8 + 12 and 24 + 8 + 20 (aligned: the header is
    # 24 bytes and the [class, aligned] vector 8) and once unaligned (must not split).
    images[2] = rng.bytes(12) + MAGIC_LE + rng.bytes(4) + MAGIC_LE + rng.bytes(3) + MAGIC_LE + rng.bytes(5)
    labels = [0, [0, 1], [1, 1], 1, [1, 0]]
    expected = [(0, images[0]), (0, images[1]), (1, images[2]), (1, images[3]), (1, images[4])]
    n, c = 5, 2
    records = [ir_pack([n + 1, n + 1 + c], b"", 0)]
    records += [ir_pack(lab, img, k + 1) for k, (lab, img) in enumerate(zip(labels, images))]
    records += [ir_pack([1, 3], b"", 6), ir_pack([3, 6], b"", 7)]
    return records, expected


def test_writer_really_splits_the_magic_record():
    records, _ = insightface_set(np.random.default_rng(0))
    assert [f for f, _ in chunk_record(records[3])] == [1, 2, 3]
    assert all(len(chunk_record(r)) == 1 for i, r in enumerate(records) if i != 3)


def test_read_recordio_insightface_layout(tmp_path):
    records, expected = insightface_set(np.random.default_rng(0))
    rec, idx = write_rec(tmp_path, records)
    assert list(read_recordio(rec, idx)) == expected


def test_read_recordio_without_meta_record_reads_every_key(tmp_path):
    rng = np.random.default_rng(1)
    bodies = [rng.bytes(n) for n in (1, 4, 9)] + [MAGIC_LE * 3]  # last: empty first and middle chunks
    rec, idx = write_rec(tmp_path, [ir_pack(k % 2, b, k) for k, b in enumerate(bodies)])
    assert list(read_recordio(rec, idx)) == [(k % 2, b) for k, b in enumerate(bodies)]


def test_read_recordio_errors(tmp_path):
    records, _ = insightface_set(np.random.default_rng(0))
    rec, idx = write_rec(tmp_path, records)
    idx.write_text("0\t0\n1\t4\n")
    with pytest.raises(DatasetFormatError, match="bad magic"):
        list(read_recordio(rec, idx))
    idx.write_text("0\t0\n1\tx\n")
    with pytest.raises(DatasetFormatError, match=r"train.idx:2: expected 'key<TAB>offset'"):
        list(read_recordio(rec, idx))
    idx.write_text("0\t0\n")
    with pytest.raises(DatasetFormatError, match="image key 1 missing"):
        list(read_recordio(rec, idx))
    rec.write_bytes(rec.read_bytes()[:20])
    with pytest.raises(DatasetFormatError, match="file ends inside"):
        list(read_recordio(rec, idx))


def test_read_property(tmp_path):
    p = tmp_path / "property"
    p.write_text("10572,112,112\n")
    assert read_property(p) == (10572, 112, 112)
    p.write_text("10572 112 112")
    with pytest.raises(DatasetFormatError, match="num_classes,height,width"):
        read_property(p)
