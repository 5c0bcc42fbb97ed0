"""Reader output -> prepared Parquet splits of face crops, with PDB and a manifest.

Each face becomes a square crop around its box (context margin included) at a fixed size, with its
landmarks, box and NME normaliser mapped into crop pixels by the same exact affine that warps the
image. Geometry uses 0-based pixel centres: pixel i covers [i - 0.5, i + 0.5].

Outside the image the crop is filled with black (``BORDER_CONSTANT`` 0): missing pixels stay
visibly missing instead of being invented by edge replication.

Validation: the papers train on the whole training split and report on the test splits (the Wing and
AWing papers hold no validation set out), but choosing epochs or hyperparameters on a split the
leaderboard calls test would leak it, so a seeded fraction of the training *images* becomes ``val``
(every face of one picture on the same side, ``VAL_GROUPS``); PDB balances what is left.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facebench.atomic import atomic_write_text, build_dir
from facebench.data.images import ImageError, read_image
from facebench.data.landmark_layouts import W300_OUTER_EYE_CORNERS
from facebench.data.parquet import RAW_RGB8, SAMPLE_SCHEMA, ContentHash, file_digests, write_samples
from facebench.data.pdb import PdbResult, pdb_resample
from facebench.data.types import Quarantined, RawFace, ReadResult

PREPARE_VERSION = 3  # bump when the output of the same params changes (3: the val split, the content hash)
NORMALISERS = {
    "inter_ocular": "distance between 0-based landmarks 36 and 45 (300-W outer eye corners), crop pixels",
    "box_width": "width of the dataset's face box (AFLW-Full: right - left of AFLWinfo.bbox), crop pixels",
    "box_sqrt_area": "sqrt(width * height) of the dataset's face box, crop pixels",
}
# Derived test splits: name -> the reader splits it unites (written only when all are present).
UNIONS = {"full": ("common", "challenging")}
CHUNK_ROWS = 1024
VAL_SPLIT = "val"
# 300-W stores a picture holding several faces once per face, as <stem>_1, <stem>_2, ... (datasets.md §1.1;
# afw, helen, ibug); lfpw's image_0001 and 300W's indoor_001 are zero-padded numbers, not face suffixes.
_W300_FACE_SUFFIX = re.compile(r"^(?P<picture>.+)_[1-9][0-9]?$")


def _same_path(source: str) -> str:
    return source


def _w300_picture(source: str) -> str:
    """``helen/trainset/100032540_2.jpg`` -> ``helen/trainset/100032540``: the picture a 300-W face file copies."""
    folder, _, name = source.rpartition("/")
    stem = name.rsplit(".", 1)[0]
    match = _W300_FACE_SUFFIX.match(stem)
    picture = match.group("picture") if match else stem
    return f"{folder}/{picture}" if folder else picture


# How faces are grouped into the images held out together for validation: name -> (key of a face's
# source path, what a unit is, for the manifest).
VAL_GROUPS: dict[str, tuple[Callable[[str], str], str]] = {
    "image": (_same_path, "image file (every face of one file on the same side)"),
    "w300_picture": (_w300_picture, "picture: the 300-W files <stem>_1, <stem>_2, ... of one folder are copies of "
                                    "one picture (one per face) and stay on the same side"),
}


def crop_matrix(bbox: np.ndarray, margin: float, crop_size: int) -> np.ndarray:
    """2x3 affine from image pixels to crop pixels for a box x, y, w, h.

    The source square is centred on the box centre with side max(w, h) * (1 + 2 * margin); its
    outer edges map to the crop's outer edges (-0.5 and crop_size - 0.5), so the box centre lands
    on the crop centre (crop_size - 1) / 2.
    """
    x, y, w, h = (float(v) for v in bbox)
    side = max(w, h) * (1.0 + 2.0 * margin)
    s = crop_size / side
    cx, cy = x + w / 2.0, y + h / 2.0
    c = (crop_size - 1) / 2.0
    return np.array([[s, 0.0, c - s * cx], [0.0, s, c - s * cy]], dtype=np.float64)


def crop_face(image: np.ndarray, bbox: np.ndarray, margin: float, crop_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The square crop of ``image`` and the 2x3 matrix mapping image points into it.

    Shrinking is done in two steps, a warp at about native resolution then an area resize, so the
    crop is not aliased; both steps use the pixel-centre convention, so the returned matrix (the
    one-step ``crop_matrix``) is exact for either path.
    """
    matrix = crop_matrix(bbox, margin, crop_size)
    side = max(float(bbox[2]), float(bbox[3])) * (1.0 + 2.0 * margin)
    border = {"borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
    if side <= crop_size:
        crop = cv2.warpAffine(image, matrix, (crop_size, crop_size), flags=cv2.INTER_LINEAR, **border)
    else:
        native = math.ceil(side)
        big = cv2.warpAffine(image, crop_matrix(bbox, margin, native), (native, native), flags=cv2.INTER_LINEAR,
                             **border)
        crop = cv2.resize(big, (crop_size, crop_size), interpolation=cv2.INTER_AREA)
    return crop, matrix


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:, 2]


def normaliser_value(name: str, points: np.ndarray, bbox: np.ndarray) -> float:
    """This face's NME normaliser from crop-pixel landmarks (L, 2) and box x, y, w, h."""
    if name == "inter_ocular":
        a, b = W300_OUTER_EYE_CORNERS
        return float(np.linalg.norm(points[a] - points[b]))
    if name == "box_width":
        return float(bbox[2])
    if name == "box_sqrt_area":
        return float(np.sqrt(bbox[2] * bbox[3]))
    raise ValueError(f"unknown normaliser {name!r}; expected one of {sorted(NORMALISERS)}")


@dataclass
class _Crop:
    face: RawFace
    sample_id: str
    pixels: bytes  # raw RGB8, crop_size x crop_size x 3
    landmarks: np.ndarray  # (L, 2) float32 crop pixels
    bbox: np.ndarray       # (4,) float32 crop pixels
    norm: float


def _prepare_face(face: RawFace, sample_id: str, crop_size: int, margin: float, normaliser: str) -> _Crop | Quarantined:
    """Crop one face; a problem only visible now (image gone bad, zero normaliser) quarantines it."""
    try:
        image = read_image(face.image_path)  # strict: a truncated file is refused, not half-decoded
    except ImageError as exc:
        return Quarantined(face.source, f"{exc.reason} (at preparation)")
    points = np.asarray(face.landmarks, dtype=np.float64)
    if face.bbox is None:
        lo, hi = points.min(axis=0), points.max(axis=0)
        bbox = np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])
    else:
        bbox = np.asarray(face.bbox, dtype=np.float64)
    if not (np.isfinite(bbox).all() and bbox[2] > 0 and bbox[3] > 0):
        return Quarantined(face.source, f"face box {bbox.tolist()} has no area; expected w > 0 and h > 0")
    crop, matrix = crop_face(image, bbox, margin, crop_size)
    s = matrix[0, 0]
    crop_points = apply(matrix, points)
    crop_box = np.array([*apply(matrix, bbox[None, :2])[0], s * bbox[2], s * bbox[3]])
    norm = normaliser_value(normaliser, crop_points, crop_box)
    if not (np.isfinite(norm) and norm > 0):
        return Quarantined(face.source, f"normaliser {normaliser} is {norm}; expected a positive distance")
    pixels = np.ascontiguousarray(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)).tobytes()
    return _Crop(face, sample_id, pixels, crop_points.astype(np.float32), crop_box.astype(np.float32), norm)


def prepare_landmark_dataset(name: str, reader_result: ReadResult, out_dir: Path, *, crop_size: int, margin: float,
                             pdb_bins: int | None, pdb_component: int | None, flip_permutation: list[int],
                             normaliser: str, seed: int, val_fraction: float = 0.1, val_group: str = "image",
                             expected_splits: Mapping[str, str] | None = None,
                             source_root: Path | None = None) -> dict[str, Any]:
    """Write ``out_dir``/<split>.parquet and manifest.json; return the manifest.

    Splits are the reader's ("train", "common", "challenging", "private" / "train", "test") plus
    "full" = common + challenging and "frontal" = test faces with every point visible, and "val":
    ``val_fraction`` of the reader's training images (at least one, rounded half up), grouped by
    ``val_group`` (``VAL_GROUPS``) and drawn by a permutation of the sorted groups from ``seed``;
    "train" keeps the other images, in reader order. With ``pdb_bins`` set, train.parquet carries
    each face's pose |b| and train_pdb.parquet is the PDB training list built from that "train" only:
    every original (pdb_copy 0) followed by its duplicates (pdb_copy k, sample_id suffix ``#pdbK``).

    ``expected_splits`` maps each split the dataset must have to where it comes from (a folder, a
    file, relative to the dataset root ``source_root``; the manifest's splits.<split>.from): one with
    no usable face is an error naming both, with the root, never a silently missing file. The
    manifest and every file's metadata carry the set's ``content_hash`` (``parquet.ContentHash``).
    The whole folder is built beside ``out_dir`` and swapped in at the end, so a failure never
    leaves partial output.
    """
    out_dir = Path(out_dir)
    faces = reader_result.faces
    if not faces:
        raise ValueError(f"{name}: the reader returned no usable faces "
                         f"({len(reader_result.quarantined)} quarantined); nothing to prepare")
    if normaliser not in NORMALISERS:
        raise ValueError(f"unknown normaliser {normaliser!r}; expected one of {sorted(NORMALISERS)}")
    num_landmarks = len(faces[0].landmarks)
    if any(len(f.landmarks) != num_landmarks for f in faces):
        raise ValueError(f"{name}: faces have different landmark counts; expected {num_landmarks} everywhere")
    if sorted(flip_permutation) != list(range(num_landmarks)):
        raise ValueError(f"{name}: flip_permutation must be a permutation of 0..{num_landmarks - 1}")
    if normaliser == "inter_ocular" and num_landmarks != 68:
        raise ValueError(f"{name}: inter_ocular needs the 68-point markup, faces have {num_landmarks} points")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"{name}: val_fraction is {val_fraction}; expected a fraction of the training images "
                         "strictly between 0 and 1")
    if val_group not in VAL_GROUPS:
        raise ValueError(f"{name}: unknown val_group {val_group!r}; expected one of {sorted(VAL_GROUPS)}")
    if any(f.split == VAL_SPLIT for f in faces):
        raise ValueError(f"{name}: the reader returned a split named {VAL_SPLIT!r}; that name is reserved for the "
                         "validation images held out of train")
    expected = dict(expected_splits or {})
    _check_expected(name, expected, {f.split for f in faces}, "the reader found no face there", reader_result,
                    source_root)

    params = {"dataset": name, "crop_size": crop_size, "margin": margin, "pdb_bins": pdb_bins,
              "pdb_component": pdb_component, "flip_permutation": list(flip_permutation),
              "normaliser": normaliser, "seed": seed, "val_fraction": val_fraction, "val_group": val_group,
              "version": PREPARE_VERSION}
    params_hash = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()

    crops, quarantined = _crop_all(name, faces, crop_size, margin, normaliser)
    by_split: dict[str, list[_Crop]] = {}
    for c in crops:
        by_split.setdefault(c.face.split, []).append(c)
    _check_expected(name, expected, set(by_split), "every face found there was quarantined at cropping",
                    reader_result, source_root)
    _check_unique_ids(name, by_split)
    if "train" not in by_split:
        raise ValueError(f"{name}: no usable training face; expected a 'train' split to hold validation images "
                         "out of")
    by_split["train"], by_split[VAL_SPLIT], val_manifest = hold_out_images(
        name, by_split["train"], val_fraction, seed, val_group)

    pdb: PdbResult | None = None
    if pdb_bins is not None:
        train = by_split.get("train", [])
        if len(train) < 2:
            raise ValueError(f"{name}: PDB needs at least 2 training faces, have {len(train)}")
        pdb = pdb_resample(np.stack([c.face.landmarks for c in train]), pdb_bins, pdb_component)

    outputs = _outputs(by_split, pdb)
    if "test" in expected and "frontal" not in outputs:  # AFLW-Frontal is one of the reported test splits
        raise ValueError(f"{name}: split 'frontal' is empty: none of the {len(outputs['test'])} test faces has every "
                         f"landmark visible; expected some (AFLW-Frontal, from {expected['test']}"
                         + (f" under {source_root}" if source_root is not None else "") + ")")
    hasher = ContentHash(params)
    for stem, rows in sorted(outputs.items()):
        hasher.add(stem, _chunks(rows, _split_name(stem), crop_size))
    content_hash = hasher.hexdigest()

    metadata = {"dataset": name, "num_landmarks": num_landmarks, "flip_permutation": list(flip_permutation),
                "normaliser": normaliser, "normaliser_definition": NORMALISERS[normaliser],
                "params_hash": params_hash, "content_hash": content_hash, "crop_size": crop_size, "margin": margin,
                "image_encoding": RAW_RGB8}
    all_quarantined = ([{"stage": "read", "source": q.source, "reason": q.reason} for q in reader_result.quarantined]
                       + [{"stage": "prepare", "source": q.source, "reason": q.reason} for q in quarantined])
    manifest: dict[str, Any] = {
        "dataset": name, "num_landmarks": num_landmarks,
        "counts": {stem: len(rows) for stem, rows in sorted(outputs.items())},
        "splits": {stem: {"rows": len(rows), "role": _role(stem), "from": _origin(stem, expected)}
                   for stem, rows in sorted(outputs.items())},
        "val": val_manifest,
        "faces_read": len(faces), "quarantined_count": len(all_quarantined), "quarantined": all_quarantined,
        "pdb": (pdb.manifest() | {"bins": pdb_bins}) if pdb is not None else None,
        "normaliser": normaliser, "normaliser_definition": NORMALISERS[normaliser],
        "params": params, "params_hash": params_hash, "content_hash": content_hash,
    }

    def write(tmp: Path) -> None:
        for stem, rows in sorted(outputs.items()):
            write_samples(tmp / f"{stem}.parquet", _chunks(rows, _split_name(stem), crop_size), metadata)
        manifest["files"] = file_digests(tmp)
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    build_dir(out_dir, write)
    _log(name, f"wrote {manifest['counts']} to {out_dir} ({len(all_quarantined)} quarantined)")
    return manifest


_Row = tuple[_Crop, float | None, int]  # (crop, pose |b| or None, pdb_copy)


def hold_out_images(name: str, train: list[_Crop], fraction: float, seed: int, group: str
                    ) -> tuple[list[_Crop], list[_Crop], dict[str, Any]]:
    """(train, val, manifest entry): ``fraction`` of the training images, at least one, rounded half up,
    held out whole. Images (``VAL_GROUPS[group]`` keys of the faces' sources) are sorted, then permuted by
    ``numpy.random.default_rng(seed)``; the first n are validation. Both lists keep the input order, so
    equal inputs and seed give equal splits."""
    key, unit = VAL_GROUPS[group]
    groups = sorted({key(c.face.source) for c in train})
    if len(groups) < 2:
        raise ValueError(f"{name}: the train split has {len(groups)} image(s); holding validation images out "
                         "needs at least 2 (one for val, one left to train on)")
    n_val = min(len(groups) - 1, max(1, math.floor(fraction * len(groups) + 0.5)))
    held = {groups[i] for i in np.random.default_rng(seed).permutation(len(groups))[:n_val]}
    kept = [c for c in train if key(c.face.source) not in held]
    val = [c for c in train if key(c.face.source) in held]
    return kept, val, {"fraction": fraction, "seed": seed, "unit": group, "unit_definition": unit,
                       "from_split": "train", "images": n_val, "train_images": len(groups) - n_val,
                       "faces": len(val), "train_faces": len(kept)}


def _split_name(stem: str) -> str:
    """The ``split`` column of a file: train_pdb rows are training rows."""
    return "train" if stem == "train_pdb" else stem


def _role(stem: str) -> str:
    """What a file is for: training, validation (model selection), or test (reported once, at the end)."""
    return {"train": "train", "train_pdb": "train", VAL_SPLIT: "val"}.get(stem, "test")


def _origin(stem: str, expected: Mapping[str, str]) -> str:
    if stem == VAL_SPLIT:
        return "held out of the reader's train split (see val)"
    if stem == "train_pdb":
        return "PDB resampling of train"
    if stem in UNIONS:
        return " + ".join(UNIONS[stem])
    if stem == "frontal":
        return "test faces with every landmark visible"
    return expected.get(stem, f"the reader's {stem!r} split")


def _check_expected(name: str, expected: Mapping[str, str], present: set[str], why: str,
                    reader_result: ReadResult, source_root: Path | None) -> None:
    """An expected split without a face is an error naming the split and where it should come from."""
    empty = [split for split in expected if split not in present]
    if not empty:
        return
    shown = [f"{q.source}: {q.reason}" for q in reader_result.quarantined[:3]]
    under = f" under {source_root}" if source_root is not None else ""
    raise ValueError(f"{name}: split {empty[0]!r} is empty ({why}); expected faces from {expected[empty[0]]}{under}"
                     + (f"; other empty splits: {empty[1:]}" if len(empty) > 1 else "")
                     + f" ({len(reader_result.quarantined)} inputs quarantined while reading"
                     + (f", e.g. {shown}" if shown else "") + ")")


def _outputs(by_split: dict[str, list[_Crop]], pdb: PdbResult | None) -> dict[str, list[_Row]]:
    """File stem -> rows: the reader's splits, train_pdb, and the derived full / frontal splits."""
    outputs: dict[str, list[_Row]] = {}
    for split, items in by_split.items():
        poses = pdb.pose.tolist() if (pdb is not None and split == "train") else [None] * len(items)
        outputs[split] = [(c, p, 0) for c, p in zip(items, poses)]
    if pdb is not None:
        train = outputs["train"]
        outputs["train_pdb"] = [(train[i][0], train[i][1], int(k)) for i, k in zip(pdb.indices, pdb.copy)]
    for union, parts in UNIONS.items():
        if all(p in by_split for p in parts):
            outputs[union] = [row for p in parts for row in outputs[p]]
    if "test" in by_split:
        frontal = [row for row in outputs["test"] if row[0].face.visible.all()]
        if frontal:
            outputs["frontal"] = frontal
    return outputs


def _crop_all(name: str, faces: list[RawFace], crop_size: int, margin: float,
              normaliser: str) -> tuple[list[_Crop], list[Quarantined]]:
    """Crop every face in a thread pool (OpenCV releases the GIL); results keep the input order."""
    crops: list[_Crop] = []
    quarantined: list[Quarantined] = []
    step = max(1, len(faces) // 10)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        jobs = pool.map(lambda f: _prepare_face(f, f"{name}/{f.source}#{f.face_index}", crop_size, margin,
                                                normaliser), faces)
        for done, out in enumerate(jobs, start=1):
            (quarantined if isinstance(out, Quarantined) else crops).append(out)
            if done % step == 0 or done == len(faces):
                _log(name, f"cropped {done}/{len(faces)} faces")
    return crops, quarantined


def _chunks(rows: list[_Row], split: str, crop_size: int) -> Iterator[dict[str, list]]:
    """Column dicts of at most CHUNK_ROWS rows (one empty chunk for an empty split)."""
    for start in range(0, len(rows), CHUNK_ROWS):
        part = rows[start:start + CHUNK_ROWS]
        yield {
            "sample_id": [c.sample_id if k == 0 else f"{c.sample_id}#pdb{k}" for c, _, k in part],
            "image": [c.pixels for c, _, _ in part],
            "height": [crop_size] * len(part),
            "width": [crop_size] * len(part),
            "landmarks": [c.landmarks.reshape(-1) for c, _, _ in part],
            "visible": [np.asarray(c.face.visible, dtype=bool) for c, _, _ in part],
            "bbox": [c.bbox for c, _, _ in part],
            "norm": [c.norm for c, _, _ in part],
            "identity": [None] * len(part),
            "source": [c.face.source for c, _, _ in part],
            "split": [split] * len(part),
            "pose": [p for _, p, _ in part],
            "pdb_copy": [k for _, _, k in part],
        }
    if not rows:
        yield {n: [] for n in SAMPLE_SCHEMA.names}


def _check_unique_ids(name: str, by_split: dict[str, list[_Crop]]) -> None:
    seen: dict[str, str] = {}
    for split, items in by_split.items():
        for c in items:
            if c.sample_id in seen:
                raise ValueError(f"{name}: sample_id {c.sample_id} occurs twice (splits {seen[c.sample_id]} "
                                 f"and {split}); expected one face per source and face_index")
            seen[c.sample_id] = split


def _log(name: str, message: str) -> None:
    print(f"[prepare {name}] {message}", file=sys.stderr, flush=True)
