"""CASIA-WebFace: the original identity folders, the 5-point landmark list, and InsightFace's
MXNet RecordIO packing (``train.rec`` / ``train.idx`` / ``property``), read without mxnet.

Layouts per datasets.md §3: ``<root>/<7-digit id>/<NNN>.jpg``; class labels are 0-based in sorted
folder order after excluding identities (SphereFace drops the 3 that overlap LFW, leaving 10,572
classes, wy1iu/sphereface train/code/get_list.m). RecordIO framing follows dmlc-core's
recordio.cc and the record payload mxnet's ``recordio.pack`` (IRHeader ``IfQQ``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facebench.data.formats import DatasetFormatError
from facebench.data.images import image_sizes
from facebench.data.types import Quarantined

LFW_OVERLAP_IDS = ("0166921", "1056413", "1193098")  # CASIA identities also in LFW (SphereFace get_list.m)
IDENTITY_PATTERN = re.compile(r"\d{7}")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LANDMARK_POINTS = 5  # eye_l, eye_r, nose, mouth_l, mouth_r (image-left first)


@dataclass
class IdentityImage:
    """One training image of a face-identification set."""

    source: str  # path relative to the dataset root, e.g. "0000045/001.jpg"
    image_path: Path  # absolute path
    identity: int  # 0-based class label


@dataclass
class IdentityReadResult:
    images: list[IdentityImage] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # folder name of each label, classes[label]


def read_casia(root: str | Path, exclude: Iterable[str] = (), check_images: bool = False) -> IdentityReadResult:
    """The images under ``root/<7-digit id>/``, labelled 0..C−1 in sorted order of the kept folders.

    ``exclude`` names identity folders to leave out (``LFW_OVERLAP_IDS`` for the SphereFace/
    CosFace protocol). Folders without usable images get no label (so labels stay contiguous; the
    MATLAB list builder would have given them one) and are quarantined with a reason, as are stray
    folders, non-image files and, with ``check_images``, images OpenCV cannot decode.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetFormatError(f"{root}: not a directory; expected the CASIA-WebFace root with <7-digit id>/ folders")
    excluded = set(exclude)
    bad = sorted(e for e in excluded if not IDENTITY_PATTERN.fullmatch(e))
    if bad:
        raise DatasetFormatError(f"exclude list entries {bad} are not 7-digit CASIA identity folder names")
    result = IdentityReadResult()
    per_identity: list[tuple[str, list[Path]]] = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir():
            continue  # list files etc. sitting next to the identity folders
        if not IDENTITY_PATTERN.fullmatch(entry.name):
            result.quarantined.append(Quarantined(entry.name, "folder name is not a 7-digit CASIA identity; skipped"))
            continue
        if entry.name in excluded:
            continue
        images = []
        for f in sorted(entry.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                images.append(f)
            else:
                result.quarantined.append(Quarantined(f"{entry.name}/{f.name}", "not an image file (.jpg/.jpeg/.png)"))
        per_identity.append((entry.name, images))
    if not per_identity:
        raise DatasetFormatError(f"{root}: no <7-digit id>/ identity folders found; expected CASIA-WebFace layout")

    if check_images:
        sizes = image_sizes([p for _, paths in per_identity for p in paths])
        for name, paths in per_identity:
            for p in [p for p in paths if isinstance(sizes[p], str)]:
                result.quarantined.append(Quarantined(f"{name}/{p.name}", sizes[p]))
            paths[:] = [p for p in paths if not isinstance(sizes[p], str)]

    for name, paths in per_identity:
        if not paths:
            result.quarantined.append(Quarantined(name, "identity folder has no usable images; given no label"))
            continue
        label = len(result.classes)
        result.classes.append(name)
        result.images += [IdentityImage(f"{name}/{p.name}", p, label) for p in paths]
    if not result.images:
        raise DatasetFormatError(f"{root}: identity folders hold no images")
    return result


@dataclass
class LandmarkEntry:
    source: str  # "0000045/001.jpg" or "Name/Name_0001.jpg"
    label: int | None  # the list's 0-based class column (casia_landmark.txt), None where absent (lfw_landmark.txt)
    points: np.ndarray  # (5, 2) float32 pixel coordinates of the original image


def read_landmark_list(path: str | Path) -> list[LandmarkEntry]:
    """``casia_landmark.txt`` (path, label, 10 ints) or ``lfw_landmark.txt`` (path, 10 ints), TAB-separated.

    A list file is all-or-nothing: a malformed line raises DatasetFormatError naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: not found; expected a TAB-separated 5-point landmark list")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").lstrip("\ufeff").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rstrip().split("\t")
        if len(parts) not in (11, 12):
            raise DatasetFormatError(f"{path}:{number}: expected 'path<TAB>[label<TAB>]x1<TAB>y1 ... y5' "
                                     f"(11 or 12 TAB-separated fields), got {len(parts)}")
        try:
            label = int(parts[1]) if len(parts) == 12 else None
            coords = np.array([float(v) for v in parts[-10:]], dtype=np.float32)
        except ValueError:
            raise DatasetFormatError(f"{path}:{number}: label and coordinates must be numbers: {line!r}") from None
        entries.append(LandmarkEntry(parts[0], label, coords.reshape(LANDMARK_POINTS, 2)))
    return entries


# ---------------------------------------------------------------------------------------------------
# MXNet RecordIO without mxnet.

RECORDIO_MAGIC = 0xCED7230A
IR_FORMAT = "<IfQQ"  # flag, label, id, id2
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24
_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)


@dataclass
class IRHeader:
    flag: int  # 0: scalar label; > 0: number of float32 labels following the header
    label: float
    id: int
    id2: int


def read_record(f, offset: int) -> bytes:
    """The payload of the record starting at byte ``offset``, its cflag chunks re-assembled.

    Chunk: uint32 magic, uint32 lrec = cflag << 29 | length, payload, zero-pad to 4 bytes. The
    writer cuts a record wherever the magic occurs at an aligned payload offset (cflag 1 first,
    2 middle, 3 last) and drops those 4 bytes; re-inserting the magic between chunks restores it.
    """
    parts: list[bytes] = []
    pos = offset
    while True:
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            raise DatasetFormatError(f"record at byte {offset}: file ends inside a chunk header at byte {pos}")
        magic, lrec = struct.unpack("<II", head)
        if magic != RECORDIO_MAGIC:
            raise DatasetFormatError(f"record at byte {offset}: bad magic 0x{magic:08X} at byte {pos}; "
                                     f"expected 0x{RECORDIO_MAGIC:08X} (wrong .idx offset or corrupt .rec)")
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        data = f.read(length)
        if len(data) < length:
            raise DatasetFormatError(f"record at byte {offset}: file ends inside a {length}-byte chunk at byte {pos}")
        expected = (0, 1) if not parts else (2, 3)
        if cflag not in expected:
            raise DatasetFormatError(f"record at byte {offset}: chunk at byte {pos} has cflag {cflag}; "
                                     f"expected one of {expected}")
        parts.append(data)
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts)
        pos += 8 + ((length + 3) & ~3)


def unpack_record(payload: bytes) -> tuple[IRHeader, np.ndarray, bytes]:
    """IRHeader, its label vector (float32; length 1 for a scalar label) and the image bytes."""
    if len(payload) < IR_SIZE:
        raise DatasetFormatError(f"record of {len(payload)} bytes is shorter than the {IR_SIZE}-byte IRHeader")
    header = IRHeader(*struct.unpack_from(IR_FORMAT, payload))
    body = payload[IR_SIZE:]
    if header.flag == 0:
        return header, np.array([header.label], dtype=np.float32), body
    if len(body) < 4 * header.flag:
        raise DatasetFormatError(f"IRHeader says {header.flag} labels but only {len(body)} bytes follow")
    labels = np.frombuffer(body, dtype="<f4", count=header.flag).astype(np.float32)
    return header, labels, body[4 * header.flag :]


def read_idx(idx_path: str | Path) -> dict[int, int]:
    """``train.idx``: one ``key<TAB>offset`` line per record -> {key: byte offset}, in file order."""
    idx_path = Path(idx_path)
    if not idx_path.is_file():
        raise DatasetFormatError(f"{idx_path}: not found; expected the RecordIO index (key<TAB>offset lines)")
    index: dict[int, int] = {}
    for number, line in enumerate(idx_path.read_text(encoding="ascii").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise DatasetFormatError(f"{idx_path}:{number}: expected 'key<TAB>offset' (two non-negative integers), "
                                     f"got {line!r}")
        index[int(parts[0])] = int(parts[1])
    if not index:
        raise DatasetFormatError(f"{idx_path}: empty index")
    return index


def read_recordio(rec_path: str | Path, idx_path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(class label, encoded image bytes) of every image record, in key order.

    If record 0 carries a label vector (flag > 0) it is the InsightFace meta record: its label[0]
    is one past the last image key, so images are keys 1 .. label[0] − 1 (the identity-range
    records after them are skipped). Otherwise every key in the index is an image. A vector label
    (flag > 0, e.g. ``[class, aligned]``) gives its first element as the class.
    """
    rec_path = Path(rec_path)
    if not rec_path.is_file():
        raise DatasetFormatError(f"{rec_path}: not found; expected an MXNet RecordIO file")
    index = read_idx(idx_path)
    with open(rec_path, "rb") as f:
        keys: Iterable[int] = list(index)
        if 0 in index:
            meta, meta_labels, _ = unpack_record(read_record(f, index[0]))
            if meta.flag > 0:
                keys = range(1, int(meta_labels[0]))
        for key in keys:
            if key not in index:
                raise DatasetFormatError(f"{idx_path}: image key {key} missing; the meta record 0 announces "
                                         f"image keys 1..{len(keys)}")
            _, labels, image = unpack_record(read_record(f, index[key]))
            yield int(labels[0]), image


def read_property(path: str | Path) -> tuple[int, int, int]:
    """InsightFace ``property``: one line ``num_classes,height,width``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: not found; expected 'num_classes,height,width'")
    text = path.read_text(encoding="ascii").strip()
    parts = text.split(",")
    try:
        num_classes, height, width = (int(p) for p in parts)
    except ValueError:
        raise DatasetFormatError(f"{path}: expected 'num_classes,height,width' (3 integers), got {text!r}") from None
    return num_classes, height, width
