"""LFW pairs.txt parsing, its errors, and the restricted lfw.bin unpickler."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest

from facebench.data.formats import DatasetFormatError
from facebench.data.formats.lfw import (
    PairsFormatError,
    RefusedPickle,
    load_verification_bin,
    parse_pairs,
    read_lfw,
    restricted_loads,
)

PAIRS = (
    "2\t2\n"
    "Jane_Roe\t1\t3\n"
    "John_Doe\t2\t4\n"
    "Jane_Roe\t2\tJohn_Doe\t1\n"
    "Ann_Bee\t1\tJohn_Doe\t12\n"
    "Ann_Bee\t1\t2\n"
    "John_Doe\t1\t3\n"
    "Ann_Bee\t2\tJane_Roe\t1\n"
    "Ann_Bee\t1\tJane_Roe\t3\n"
)


def test_parse_pairs_folds_and_paths():
    pairs = parse_pairs(PAIRS)
    assert len(pairs) == 8
    assert [p.fold for p in pairs] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [p.same for p in pairs] == [True, True, False, False] * 2
    assert (pairs[0].left, pairs[0].right) == ("Jane_Roe/Jane_Roe_0001.jpg", "Jane_Roe/Jane_Roe_0003.jpg")
    assert (pairs[3].left, pairs[3].right) == ("Ann_Bee/Ann_Bee_0001.jpg", "John_Doe/John_Doe_0012.jpg")
    assert pairs[3].line == 5


def test_parse_pairs_tolerates_crlf_spaces_and_trailing_blank_lines():
    text = PAIRS.replace("\t", " ").replace("\n", "\r\n") + "\r\n\r\n"
    assert [(p.left, p.right, p.fold) for p in parse_pairs(text)] == \
           [(p.left, p.right, p.fold) for p in parse_pairs(PAIRS)]


@pytest.mark.parametrize("text, line, match", [
    ("", 0, "empty file"),
    ("10 300 1\n", 1, "header"),
    ("pairs\n", 1, "header"),
    (PAIRS.replace("John_Doe\t2\t4\n", "John_Doe\t2\tAnn_Bee\t4\n"), 3, "expected a matched pair"),
    (PAIRS.replace("Ann_Bee\t1\tJohn_Doe\t12\n", "Ann_Bee\t1\t12\n"), 5, "expected a mismatched pair"),
    (PAIRS.replace("Jane_Roe\t1\t3", "Jane_Roe\t1\tthree"), 2, "'three' is not a positive integer"),
    (PAIRS.replace("John_Doe\t1\t3", "John_Doe\t0\t3"), 7, "'0' is not a positive integer"),
    (PAIRS + "Ann_Bee\t1\t2\n", 10, "extra line"),
    (PAIRS.rsplit("Ann_Bee\t1\tJane_Roe\t3\n", 1)[0], 0, "7 pair lines.*announces 2 folds x 4 = 8"),
])
def test_parse_pairs_errors_name_the_line(text, line, match):
    with pytest.raises(PairsFormatError, match=match) as err:
        parse_pairs(text)
    assert err.value.line == line
    if line:
        assert f"pairs.txt:{line}:" in str(err.value)


def test_read_lfw_quarantines_pairs_with_missing_images(tmp_path):
    (tmp_path / "pairs.txt").write_text(PAIRS)
    for rel in {p.left for p in parse_pairs(PAIRS)} | {p.right for p in parse_pairs(PAIRS)}:
        if rel != "John_Doe/John_Doe_0012.jpg":
            (tmp_path / rel).parent.mkdir(exist_ok=True)
            (tmp_path / rel).write_bytes(b"jpg")
    res = read_lfw(tmp_path)
    assert len(res.pairs) == 7 and [q.source for q in res.quarantined] == ["pairs.txt#5"]
    assert res.quarantined[0].reason == "image(s) ['John_Doe/John_Doe_0012.jpg'] not found under the dataset root"
    assert [p.fold for p in res.pairs] == [0, 0, 0, 1, 1, 1, 1]  # folds keep their blocks


# --------------------------------------------------------------------------------------------------
# lfw.bin


def py2_pickle(bins: list[bytes], issame: list[bool]) -> bytes:
    """Protocol 2 as Python 2 writes it: byte strings are (SHORT_)BINSTRING opcodes, no globals."""
    out = b"\x80\x02]q\x00("
    for b in bins:
        out += (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b
    out += b"e]q\x01(" + b"".join(b"\x88" if s else b"\x89" for s in issame) + b"e\x86q\x02."
    return out


def test_load_python2_style_protocol2_bin(tmp_path):
    rng = np.random.default_rng(0)
    bins = [rng.bytes(n) for n in (10, 300, 7, 255)]
    path = tmp_path / "lfw.bin"
    path.write_bytes(py2_pickle(bins, [True, False]))
    vb = load_verification_bin(path)
    assert vb.images == bins
    assert vb.issame.dtype == bool and vb.issame.tolist() == [True, False]


def test_load_python3_protocol2_and_3_bins(tmp_path):
    bins, issame = [b"\xff\xd8abc", bytes(range(256))], [True]
    for protocol in (2, 3, 4):
        path = tmp_path / f"p{protocol}.bin"
        path.write_bytes(pickle.dumps((bins, issame), protocol=protocol))
        vb = load_verification_bin(path)
        assert vb.images == bins and vb.issame.tolist() == [True]


class CallsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["reduce", "global_opcode", "stack_global", "persistent_id", "codecs_abuse",
                                  "build"])
def test_refuses_pickles_that_call_anything(tmp_path, kind):
    marker = tmp_path / "pwned"
    payload = {
        "reduce": pickle.dumps(([CallsSystem(marker)], [True]), protocol=2),
        "global_opcode": f"(lcos\nsystem\n(S'touch {marker}'\ntR(lt.".encode(),
        "stack_global": pickle.dumps(([eval], [True]), protocol=4),
        "persistent_id": b"(lP1\na(lt.",
        "codecs_abuse": b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.",
        "build": b"\x80\x02c__builtin__\nobject\n)\x81}b.",
    }[kind]
    with pytest.raises(RefusedPickle, match="refusing"):
        restricted_loads(payload)
    path = tmp_path / "evil.bin"
    path.write_bytes(payload)
    with pytest.raises(DatasetFormatError, match="refusing"):
        load_verification_bin(path)
    assert not marker.exists()


def test_bin_shape_and_type_errors(tmp_path):
    path = tmp_path / "x.bin"
    for obj, match in [(([b"a"], [True]), "two images per pair"), (([1, 2], [True]), "list of encoded image bytes"),
                       (([b"a", b"b"], ["yes"]), "list of bools"), ([b"a"], "pair")]:
        path.write_bytes(pickle.dumps(obj, protocol=2))
        with pytest.raises(DatasetFormatError, match=match):
            load_verification_bin(path)
    path.write_bytes(b"\x80\x02]q")
    with pytest.raises(DatasetFormatError, match="not a readable pickle"):
        load_verification_bin(path)
