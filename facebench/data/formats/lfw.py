"""LFW for face verification: the image folders, View 2 ``pairs.txt``, and InsightFace's ``lfw.bin``.

``pairs.txt`` (datasets.md §4.2): a header ``<folds>\\t<n>``, then per fold n matched lines
``Name\\tn1\\tn2`` followed by n mismatched lines ``Name1\\tn1\\tName2\\tn2``; image indices are
1-based integers and the file is ``Name/Name_%04d.jpg``. The fold of a pair is its block — the
10-fold protocol (§4.3) tests on each block with a threshold chosen on the others.

``lfw.bin`` (§4.4) is a pickle: its loader must not execute anything the file asks for, so it runs
an unpickler that refuses every global and persistent id (see ``RestrictedUnpickler``).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facebench.data.formats import DatasetFormatError
from facebench.data.types import Quarantined


def lfw_image(name: str, index: int) -> str:
    """Relative path of image ``index`` (1-based) of person ``name``: ``Name/Name_%04d.jpg``."""
    return f"{name}/{name}_{index:04d}.jpg"


@dataclass
class LfwPair:
    left: str  # relative image paths, e.g. "Jane_Roe/Jane_Roe_0001.jpg"
    right: str
    same: bool
    fold: int  # 0-based
    line: int  # 1-based line of pairs.txt


class PairsFormatError(DatasetFormatError):
    """A malformed ``pairs.txt``; ``line`` is 1-based (0 for whole-file problems)."""

    def __init__(self, source: str, line: int, message: str):
        super().__init__(f"{source}:{line}: {message}" if line else f"{source}: {message}")
        self.line = line


def _index(token: str, source: str, line: int) -> int:
    if not token.isdigit() or int(token) < 1:
        raise PairsFormatError(source, line, f"image index {token!r} is not a positive integer")
    return int(token)


def parse_pairs(text: str, source: str = "pairs.txt") -> list[LfwPair]:
    """Every pair of a View-2-style pairs file, with its fold, checking the block structure.

    Fields may be separated by TABs or spaces; CRLF and trailing blank lines are tolerated.
    """
    lines = text.lstrip("\ufeff").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise PairsFormatError(source, 0, "empty file; expected a '<folds>\\t<pairs per class>' header")
    head = lines[0].split()
    if len(head) != 2 or not all(h.isdigit() and int(h) > 0 for h in head):
        raise PairsFormatError(source, 1, f"expected the header '<folds>\\t<pairs per class>' (e.g. '10\\t300'), "
                                          f"got {lines[0]!r}")
    folds, n = int(head[0]), int(head[1])
    expected_lines = 1 + folds * 2 * n
    pairs = []
    for number, raw in enumerate(lines[1:], start=2):
        k = number - 2
        if k >= folds * 2 * n:
            raise PairsFormatError(source, number,
                                   f"extra line beyond the {folds} x {2 * n} pairs the header announces")
        fold, matched = k // (2 * n), k % (2 * n) < n
        parts = raw.split()
        if matched:
            if len(parts) != 3:
                raise PairsFormatError(source, number, f"expected a matched pair 'Name<TAB>n1<TAB>n2' (fold {fold + 1}: "
                                                       f"first {n} lines matched), got {len(parts)} fields: {raw!r}")
            left = lfw_image(parts[0], _index(parts[1], source, number))
            right = lfw_image(parts[0], _index(parts[2], source, number))
        else:
            if len(parts) != 4:
                raise PairsFormatError(source, number, f"expected a mismatched pair 'Name1<TAB>n1<TAB>Name2<TAB>n2' "
                                                       f"(fold {fold + 1}: last {n} lines mismatched), "
                                                       f"got {len(parts)} fields: {raw!r}")
            left = lfw_image(parts[0], _index(parts[1], source, number))
            right = lfw_image(parts[2], _index(parts[3], source, number))
        pairs.append(LfwPair(left, right, matched, fold, number))
    if len(lines) != expected_lines:
        raise PairsFormatError(source, 0, f"{len(lines) - 1} pair lines; the header '{lines[0]}' announces "
                                          f"{folds} folds x {2 * n} = {expected_lines - 1}")
    return pairs


def read_pairs(path: str | Path) -> list[LfwPair]:
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: not found; expected LFW View 2 pairs.txt")
    return parse_pairs(path.read_text(encoding="utf-8"), source=str(path))


@dataclass
class LfwReadResult:
    pairs: list[LfwPair] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)


def read_lfw(root: str | Path, pairs_path: str | Path | None = None) -> LfwReadResult:
    """The pairs of ``pairs_path`` (default ``root/pairs.txt``) whose two images exist under ``root``.

    Pairs with a missing image are quarantined (InsightFace's packer skips them too); the others
    keep their fold, so the 10-fold split is unchanged.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetFormatError(f"{root}: not a directory; expected the LFW root with <Name>/ folders")
    pairs = read_pairs(pairs_path if pairs_path is not None else root / "pairs.txt")
    result = LfwReadResult()
    for p in pairs:
        missing = [rel for rel in (p.left, p.right) if not (root / rel).is_file()]
        if missing:
            result.quarantined.append(Quarantined(f"pairs.txt#{p.line}",
                                                  f"image(s) {missing} not found under the dataset root"))
        else:
            result.pairs.append(p)
    if not result.pairs:
        raise DatasetFormatError(f"{root}: none of the {len(pairs)} pairs has both images present")
    return result


# ---------------------------------------------------------------------------------------------------
# lfw.bin


class RefusedPickle(pickle.UnpicklingError):
    """The pickle asked for a global or persistent id that ``RestrictedUnpickler`` does not allow."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can build only pickle's built-in values: no globals, no persistent ids.

    Tuples, lists, dicts, str/bytes, ints, floats, bools and None are made by opcodes alone and load
    normally. Everything that would call code — GLOBAL / STACK_GLOBAL (hence REDUCE, BUILD, NEWOBJ,
    INST, OBJ), and persistent ids — raises ``RefusedPickle`` naming what was asked for.

    The one exception is how Python 3 writes ``bytes`` at protocol ≤ 2: ``_codecs.encode(<str>,
    'latin1')``. For that global we return our own function, which accepts exactly (str, 'latin1')
    and returns the bytes; it never reaches the real codec machinery. (Python 2's own pickles, the
    released ``lfw.bin``, store byte strings as plain BINSTRING opcodes and need no global.)
    """

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        raise RefusedPickle(f"refusing to load global '{module}.{name}': a verification .bin must hold "
                                     "only lists of image bytes and bools, never references to code")

    def persistent_load(self, pid):
        raise RefusedPickle(f"refusing persistent id {pid!r}: not allowed in a verification .bin")


def _latin1_bytes(text, encoding=None):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedPickle(f"refusing _codecs.encode({type(text).__name__}, {encoding!r}); only the "
                                     "(str, 'latin1') form Python 3 uses for bytes is allowed")
    return text.encode("latin1")


def restricted_loads(data: bytes, encoding: str = "bytes"):
    """Unpickle ``data`` with ``RestrictedUnpickler``. ``encoding='bytes'`` keeps Python 2 ``str``
    values (image bytes) as bytes instead of decoding them as ASCII."""
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


@dataclass
class VerificationBin:
    images: list[bytes]  # encoded images, pair i = images[2i], images[2i + 1]
    issame: np.ndarray  # (num_pairs,) bool


def load_verification_bin(path: str | Path) -> VerificationBin:
    """InsightFace ``lfw.bin`` (also cfp_fp.bin, agedb_30.bin, ...): pickle of (list of image bytes,
    list of bools), checked for shape and types."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: not found; expected an InsightFace verification .bin")
    try:
        obj = restricted_loads(path.read_bytes())
    except RefusedPickle as err:
        raise DatasetFormatError(f"{path}: {err}") from None
    except Exception as err:  # truncated / not a pickle at all
        raise DatasetFormatError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise DatasetFormatError(f"{path}: expected a pickled (bins, issame_list) pair, got {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, list) or not all(isinstance(b, bytes) for b in bins):
        raise DatasetFormatError(f"{path}: bins must be a list of encoded image bytes")
    if not isinstance(issame, (list, tuple)) or not all(isinstance(s, (bool, int)) and s in (0, 1) for s in issame):
        raise DatasetFormatError(f"{path}: issame_list must be a list of bools")
    if len(bins) != 2 * len(issame):
        raise DatasetFormatError(f"{path}: {len(bins)} images for {len(issame)} pairs; expected two images per pair")
    return VerificationBin(bins, np.asarray(issame, dtype=bool))
