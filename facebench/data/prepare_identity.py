"""Aligned face crops for recognition: CASIA-WebFace (training identities) and LFW (verification pairs).

Each face is warped by the five-point similarity transform (``data/align.py``) onto the template the
papers crop with (112x96 for SphereFace/CosFace, 112x112 for ArcFace) and stored as raw RGB8 in the
prepared-sample Parquet, with its class label (``identity``) and its five points in crop pixels. The
points come from the dataset's landmark list (``casia_landmark.txt`` / ``lfw_landmark.txt``: the
ground truth of the synthetic sets, or the lists the SphereFace authors published for the real ones),
or from MTCNN (``detector``): the five points of the detected face nearest the image centre (these
sets are centred on their subject, as SphereFace's preprocessing assumes). An image where the
detector finds no face is a miss: counted and listed in the manifest's quarantine.

Outputs (written whole into a folder beside ``out_dir``, swapped in at the end):
* CASIA: ``train.parquet`` (the training identities, labels 0..C-1), ``val_images.parquet`` and
  ``val_pairs.parquet`` (the held-out identities and verification pairs built like LFW's), and
  ``manifest.json``;
* LFW: ``images.parquet`` (each image any pair uses, once), ``pairs.parquet`` (left, right, same,
  fold: sample ids into images.parquet) and ``manifest.json``.
Images without a landmark entry, unreadable images and pairs that lose an image are counted and
listed in the manifest's quarantine, never dropped silently. Every file's metadata and the manifest
carry the set's ``content_hash`` (``parquet.ContentHash``).

Validation for recognition: LFW is the test set and CosFace trains on all of CASIA, so choosing a
margin or an epoch on LFW would report a tuned-on-test number. ``prepare_casia`` therefore holds a
seeded fraction of CASIA's *identities* out (never images of a training identity: verification
is about faces the network has not been trained to classify, as LFW's are) and builds their pairs
the way LFW's View 2 is laid out (``verification_pairs``), so the same protocol scores both.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from facebench.atomic import atomic_write_text, build_dir
from facebench.data.align import TEMPLATES, alignment_matrix
from facebench.data.formats.casia import LFW_OVERLAP_IDS, read_casia, read_landmark_list
from facebench.data.formats.lfw import read_lfw
from facebench.data.images import ImageError, read_image
from facebench.data.parquet import RAW_RGB8, ContentHash, file_digests, to_table, write_samples, write_table
from facebench.data.types import Quarantined

PREPARE_IDENTITY_VERSION = 2  # 2: CASIA's held-out validation identities and pairs; the content hash
FIVE_POINT_FLIP = [1, 0, 2, 4, 3]  # eyes and mouth corners swap under a horizontal flip
PAIR_SCHEMA = pa.schema([pa.field("left", pa.string(), nullable=False), pa.field("right", pa.string(), nullable=False),
                         pa.field("same", pa.bool_(), nullable=False), pa.field("fold", pa.int32(), nullable=False)])
# Validation pairs as LFW's View 2 lays them out: 10 folds of (at most) 300 matched then 300 mismatched pairs.
VAL_FOLDS = 10
VAL_PAIRS_PER_FOLD = 300
MIN_VAL_IDENTITIES = 2  # a mismatched pair needs two identities
MIN_TRAIN_IDENTITIES = 2  # a classifier needs two classes


def _log(name: str, message: str) -> None:
    print(f"[prepare {name}] {message}", file=sys.stderr, flush=True)


def _aligned(path: Path, points: np.ndarray, template: str) -> tuple[bytes, np.ndarray] | str:
    """(raw RGB8 crop, five points in crop pixels), or the reason the image cannot be used."""
    try:
        image = read_image(path)  # strict: a truncated file is refused, not half-decoded
    except ImageError as exc:
        return exc.reason
    if not np.isfinite(points).all():
        return "landmarks are not finite"
    matrix = alignment_matrix(points, template)
    height, width = TEMPLATES[template][1]
    crop = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    moved = np.c_[points, np.ones(5)] @ matrix.T
    return np.ascontiguousarray(crop).tobytes(), moved.astype(np.float32)


def _align_all(name: str, items: list[tuple[str, Path, np.ndarray]], template: str
               ) -> tuple[dict[str, tuple[bytes, np.ndarray]], list[Quarantined]]:
    """Align every (source, path, points) in a thread pool (OpenCV releases the GIL)."""
    done: dict[str, tuple[bytes, np.ndarray]] = {}
    quarantined: list[Quarantined] = []
    step = max(1, len(items) // 10)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for k, ((source, _, _), out) in enumerate(zip(items, pool.map(lambda it: _aligned(it[1], it[2], template),
                                                                      items)), start=1):
            if isinstance(out, str):
                quarantined.append(Quarantined(source, out))
            else:
                done[source] = out
            if k % step == 0 or k == len(items):
                _log(name, f"aligned {k}/{len(items)} faces")
    return done, quarantined


def _rows(sources: list[str], crops: dict[str, tuple[bytes, np.ndarray]], labels: dict[str, int] | None,
          split: str, template: str) -> dict[str, list]:
    height, width = TEMPLATES[template][1]
    n = len(sources)
    return {
        "sample_id": sources, "image": [crops[s][0] for s in sources], "height": [height] * n, "width": [width] * n,
        "landmarks": [crops[s][1].reshape(-1) for s in sources], "visible": [np.ones(5, bool)] * n,
        "bbox": [None] * n, "norm": [None] * n,
        "identity": [labels[s] for s in sources] if labels is not None else [None] * n,
        "source": sources, "split": [split] * n, "pose": [None] * n, "pdb_copy": [0] * n,
    }


def _metadata(name: str, template: str, params_hash: str, extra: dict[str, Any]) -> dict[str, Any]:
    height, width = TEMPLATES[template][1]
    return {"dataset": name, "num_landmarks": 5, "flip_permutation": FIVE_POINT_FLIP, "normaliser": "none",
            "params_hash": params_hash, "template": template, "crop_height": height, "crop_width": width,
            "image_encoding": RAW_RGB8, **extra}


def _landmarks(path: Path) -> dict[str, np.ndarray]:
    return {e.source: e.points for e in read_landmark_list(path)}


MISSED = "MTCNN found no face"


def detect_points(detector, items: list[tuple[str, Path]], batch: int = 16
                  ) -> tuple[dict[str, np.ndarray], list[Quarantined]]:
    """Five points per image from ``detector`` (an MTCNNDetector): the face whose box centre is nearest the
    image centre. Returns the points by source and the misses (no face, or an unreadable image)."""
    points: dict[str, np.ndarray] = {}
    misses: list[Quarantined] = []
    for start in range(0, len(items), batch):
        chunk, images = [], []
        for source, path in items[start:start + batch]:
            try:
                image = read_image(path)
            except ImageError as exc:
                misses.append(Quarantined(source, exc.reason))
                continue
            chunk.append(source)
            images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        for source, image, faces in zip(chunk, images, detector.detect(images) if images else []):
            if not faces:
                misses.append(Quarantined(source, MISSED))
                continue
            centre = np.array([image.shape[1], image.shape[0]], np.float64) / 2
            off = [np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre) for f in faces]
            points[source] = np.asarray(faces[int(np.argmin(off))].landmarks, np.float64)
        if (start // batch) % 10 == 9 or start + batch >= len(items):
            _log("detect", f"{min(start + batch, len(items))}/{len(items)} images, {len(misses)} misses")
    return points, misses


def _points(root: Path, landmarks: Path | None, default: str, detector, items: list[tuple[str, Path]]
            ) -> tuple[dict[str, np.ndarray], list[Quarantined], str]:
    """The five points of each image: from the landmark list, or detected. Returns (points, misses, how)."""
    if detector is None:
        return _landmarks(Path(landmarks) if landmarks else root / default), [], "list"
    points, misses = detect_points(detector, items)
    return points, misses, "mtcnn"


def prepare_casia(root: Path, out_dir: Path, *, template: str = "112x96", landmarks: Path | None = None,
                  exclude: Iterable[str] = LFW_OVERLAP_IDS, detector=None, val_fraction: float = 0.1, seed: int = 0,
                  val_folds: int = VAL_FOLDS, val_pairs_per_fold: int = VAL_PAIRS_PER_FOLD) -> dict[str, Any]:
    """CASIA-WebFace identity folders -> aligned crops (points from the landmark list, or from ``detector``):
    ``train.parquet`` with the training identities' images, labelled 0..C-1 in folder order, and the
    validation set of ``val_fraction`` of the identities with an aligned image (at least
    ``MIN_VAL_IDENTITIES``, rounded half up, drawn by a permutation of ``seed``): ``val_images.parquet`` and
    ``val_pairs.parquet`` (``verification_pairs``: up to ``val_folds`` folds of ``val_pairs_per_fold``
    matched and as many mismatched pairs)."""
    root = Path(root)
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose from {sorted(TEMPLATES)}")
    read = read_casia(root, exclude=exclude)
    points, misses, how = _points(root, landmarks, "casia_landmark.txt", detector,
                                  [(img.source, img.image_path) for img in read.images])
    items, quarantined = [], list(read.quarantined) + misses
    missed = {q.source for q in misses}
    for img in read.images:
        if img.source in points:
            items.append((img.source, img.image_path, points[img.source]))
        elif img.source not in missed:
            quarantined.append(Quarantined(img.source, "no entry in the landmark list"))
    labels = {img.source: img.identity for img in read.images}
    crops, bad = _align_all("casia", items, template)
    quarantined += bad
    sources = [s for s, _, _ in items if s in crops]
    return _write_casia(root, out_dir, template=template, sources=sources, crops=crops, labels=labels,
                        class_names=read.classes, quarantined=quarantined, how=how, misses=len(misses),
                        exclude=exclude, val_fraction=val_fraction, seed=seed, val_folds=val_folds,
                        val_pairs_per_fold=val_pairs_per_fold)


def prepare_casia_rec(root: Path, out_dir: Path, *, val_fraction: float = 0.1, seed: int = 0,
                      val_folds: int = VAL_FOLDS, val_pairs_per_fold: int = VAL_PAIRS_PER_FOLD) -> dict[str, Any]:
    """InsightFace's aligned CASIA-WebFace (``train.rec`` / ``train.idx``, and ``property`` when present):
    faces already aligned to the 112x112 ArcFace template, so each is decoded and kept as it is, with the
    template's five points. Then as ``prepare_casia`` (held-out identities, pairs, manifest). A record whose
    image does not decode to 112x112 RGB is quarantined as ``train.rec#<n>`` (its position among the images)."""
    from facebench.data.formats.casia import read_property, read_recordio

    root = Path(root)
    template = "112x112"
    points, (height, width) = TEMPLATES[template]
    if (root / "property").is_file():
        _, h, w = read_property(root / "property")
        if (h, w) != (height, width):
            raise ValueError(f"{root / 'property'}: images of {h}x{w}; expected the aligned {height}x{width} set")
    crops: dict[str, tuple[bytes, np.ndarray]] = {}
    labels: dict[str, int] = {}
    quarantined: list[Quarantined] = []
    for n, (label, data) in enumerate(read_recordio(root / "train.rec", root / "train.idx"), start=1):
        source = f"train.rec#{n}"
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None or image.shape != (height, width, 3):
            got = "undecodable image" if image is None else f"image of {image.shape[0]}x{image.shape[1]}"
            quarantined.append(Quarantined(source, f"{got}; expected an aligned {height}x{width} face"))
            continue
        crops[source] = (cv2.cvtColor(image, cv2.COLOR_BGR2RGB).tobytes(), points.astype(np.float32))
        labels[source] = label
    classes = sorted(set(labels.values()))
    return _write_casia(root, out_dir, template=template, sources=list(crops), crops=crops, labels=labels,
                        class_names=[str(c) for c in range(max(classes, default=-1) + 1)], quarantined=quarantined,
                        how="aligned", misses=0, exclude=(), val_fraction=val_fraction, seed=seed,
                        val_folds=val_folds, val_pairs_per_fold=val_pairs_per_fold)


def _write_casia(root: Path, out_dir: Path, *, template: str, sources: list[str],
                 crops: dict[str, tuple[bytes, np.ndarray]], labels: dict[str, int], class_names: list[str],
                 quarantined: list[Quarantined], how: str, misses: int, exclude: Iterable[str], val_fraction: float,
                 seed: int, val_folds: int, val_pairs_per_fold: int) -> dict[str, Any]:
    """CASIA's outputs from its aligned faces (``sources`` in class order, ``labels`` their classes):
    held-out validation identities and their pairs, the training identities relabelled 0..C-1."""
    if not sources:
        raise ValueError(f"{root}: no CASIA image could be aligned ({len(quarantined)} quarantined)")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"casia: val_fraction is {val_fraction}; expected a fraction of the identities strictly "
                         "between 0 and 1")
    params = {"dataset": "casia", "template": template, "exclude": sorted(exclude), "val_fraction": val_fraction,
              "seed": seed, "val_folds": val_folds, "val_pairs_per_fold": val_pairs_per_fold,
              "version": PREPARE_IDENTITY_VERSION, **({"points": how} if how != "list" else {})}
    params_hash = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    kept_classes = sorted({labels[s] for s in sources})
    rng = np.random.default_rng(seed)
    held = _held_out_identities(root, kept_classes, val_fraction, rng)
    train_classes = [c for c in kept_classes if c not in held]
    relabel = {c: i for i, c in enumerate(train_classes)}  # contiguous 0..C-1, in folder order
    train_sources = [s for s in sources if labels[s] in relabel]
    val_sources = sorted((s for s in sources if labels[s] in held), key=lambda s: (labels[s], s))
    pairs, pair_counts = verification_pairs([labels[s] for s in val_sources], rng, val_folds, val_pairs_per_fold)
    pair_table = pa.table({"left": [val_sources[i] for i in pairs[:, 0]],
                           "right": [val_sources[i] for i in pairs[:, 1]],
                           "same": pairs[:, 2].astype(bool), "fold": pairs[:, 3].astype(np.int32)}, schema=PAIR_SCHEMA)
    train_table = to_table(_rows(train_sources, crops, {s: relabel[labels[s]] for s in train_sources}, "train",
                                 template))
    val_table = to_table(_rows(val_sources, crops, None, "val", template))
    hasher = ContentHash(params)
    for split, table in (("train", train_table), ("val_images", val_table), ("val_pairs", pair_table)):
        hasher.add(split, table)
    content_hash = hasher.hexdigest()
    roles = {"train": "train", "val_images": "val", "val_pairs": "val"}
    counts = {"train": len(train_sources), "val_images": len(val_sources), "val_pairs": int(len(pairs))}
    manifest = {"dataset": "casia", "template": template, "points": how, "detector_misses": misses,
                "counts": counts,
                "splits": {k: {"rows": n, "role": roles[k]} for k, n in counts.items()},
                "val": {"fraction": val_fraction, "seed": seed, "unit": "identity",
                        "unit_definition": "identity folder: every image of a held-out identity is in val, none in "
                                           "train; pairs laid out as LFW's View 2",
                        "identities": len(held), "train_identities": len(train_classes),
                        "held_out": sorted(class_names[c] for c in held), **pair_counts},
                "classes": len(class_names), "classes_with_images": len(kept_classes),
                "num_classes": len(train_classes),
                "classes_without_images": sorted(class_names[c] for c in set(range(len(class_names)))
                                                 - set(kept_classes)),
                "quarantined_count": len(quarantined),
                "quarantined": [{"source": q.source, "reason": q.reason} for q in quarantined],
                "params": params, "params_hash": params_hash, "content_hash": content_hash}

    def write(tmp: Path) -> None:
        meta = _metadata("casia", template, params_hash, {"num_classes": len(train_classes),
                                                          "content_hash": content_hash})
        write_samples(tmp / "train.parquet", train_table, meta)
        write_samples(tmp / "val_images.parquet", val_table, meta)
        write_table(tmp / "val_pairs.parquet", pair_table, {"dataset": "casia", "params_hash": params_hash,
                                                            "content_hash": content_hash})
        manifest["files"] = file_digests(tmp)
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    build_dir(out_dir, write)
    _log("casia", f"wrote {len(train_sources)} aligned faces of {len(train_classes)} training identities, "
                  f"{len(val_sources)} of {len(held)} validation identities and {len(pairs)} validation pairs to "
                  f"{out_dir} ({len(quarantined)} quarantined)")
    return manifest


def _held_out_identities(root: Path, classes: list[int], fraction: float, rng: np.random.Generator) -> set[int]:
    """``fraction`` of ``classes`` (at least MIN_VAL_IDENTITIES, rounded half up), the first of a permutation
    drawn from ``rng``; at least MIN_TRAIN_IDENTITIES stay to train on."""
    n_val = max(MIN_VAL_IDENTITIES, math.floor(fraction * len(classes) + 0.5))
    if len(classes) - n_val < MIN_TRAIN_IDENTITIES:
        raise ValueError(f"{root}: {len(classes)} identities have an aligned image; holding {n_val} out for "
                         f"validation (val_fraction {fraction}, at least {MIN_VAL_IDENTITIES}) would leave fewer "
                         f"than {MIN_TRAIN_IDENTITIES} to train on; expected at least "
                         f"{MIN_VAL_IDENTITIES + MIN_TRAIN_IDENTITIES} identities")
    return {classes[i] for i in rng.permutation(len(classes))[:n_val]}


def verification_pairs(identity: list[int], rng: np.random.Generator, folds: int = VAL_FOLDS,
                       per_fold: int = VAL_PAIRS_PER_FOLD) -> tuple[np.ndarray, dict[str, int]]:
    """Pairs over images grouped by identity (``identity[i]`` of image i, equal values adjacent), laid out as
    LFW's View 2: (left, right, same, fold) rows, fold by fold, each fold ``p`` matched pairs (two images of
    one identity) then ``p`` mismatched (images of two identities).

    The count per kind is T = min(matched available, mismatched available, folds * per_fold), cut to a
    multiple of the folds used (min(folds, T)); each kind is drawn uniformly without replacement from all
    its unordered pairs by ``rng`` (pairs are numbered, not listed: image u's partners after it are the rest
    of its identity, or every later identity's images, so even a paper-size set draws in a moment).
    Returns the rows (int64, left < right as image indices) and the counts for the manifest; raises when
    fewer than two of either kind exist (two folds need one of each per fold)."""
    ident = np.asarray(identity)
    n = len(ident)
    if n and np.any(ident[1:] < ident[:-1]):
        raise ValueError("verification_pairs: images must be grouped by identity in ascending order")
    ends = np.searchsorted(ident, ident, side="right")  # one past the last image of each image's identity
    index = np.arange(n)
    matched_after = ends - index - 1
    mismatched_after = n - ends
    available = {"available_matched": int(matched_after.sum()), "available_mismatched": int(mismatched_after.sum())}
    per_kind = min(*available.values(), folds * per_fold)
    if per_kind < 2:
        raise ValueError(f"the {len(set(ident.tolist()))} validation identities ({n} images) give "
                         f"{available['available_matched']} matched and {available['available_mismatched']} "
                         "mismatched pairs; expected at least 2 of each (2 folds); raise val_fraction or use "
                         "identities with more images")
    used_folds = min(folds, per_kind)
    p = per_kind // used_folds

    def draw(after: np.ndarray, first_partner: np.ndarray) -> np.ndarray:
        picks = rng.choice(int(after.sum()), size=p * used_folds, replace=False)
        cum = np.cumsum(after)
        u = np.searchsorted(cum, picks, side="right")
        v = first_partner[u] + (picks - (cum[u] - after[u]))
        return np.stack([u, v], axis=1)

    matched = draw(matched_after, index + 1)
    mismatched = draw(mismatched_after, ends)
    rows = []
    for k in range(used_folds):
        block = slice(k * p, (k + 1) * p)
        rows.append(np.column_stack([matched[block], np.ones(p, np.int64), np.full(p, k)]))
        rows.append(np.column_stack([mismatched[block], np.zeros(p, np.int64), np.full(p, k)]))
    counts = {"pairs": 2 * p * used_folds, "matched": p * used_folds, "mismatched": p * used_folds,
              "folds": used_folds, "pairs_per_fold": 2 * p, **available}
    return np.concatenate(rows).astype(np.int64), counts


def prepare_lfw(root: Path, out_dir: Path, *, template: str = "112x96", landmarks: Path | None = None,
                pairs: Path | None = None, detector=None) -> dict[str, Any]:
    """LFW pairs -> aligned ``images.parquet`` (each used image once) and ``pairs.parquet`` (points from
    the landmark list, or from ``detector``)."""
    root = Path(root)
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose from {sorted(TEMPLATES)}")
    read = read_lfw(root, pairs)
    used = sorted({rel for p in read.pairs for rel in (p.left, p.right)})
    points, misses, how = _points(root, landmarks, "lfw_landmark.txt", detector, [(rel, root / rel) for rel in used])
    quarantined = [Quarantined(q.source, q.reason) for q in read.quarantined] + misses
    missed = {q.source for q in misses}
    items = []
    for rel in used:
        if rel in points:
            items.append((rel, root / rel, points[rel]))
        elif rel not in missed:
            quarantined.append(Quarantined(rel, "no entry in the landmark list"))
    crops, bad = _align_all("lfw", items, template)
    quarantined += bad
    kept_pairs = []
    for p in read.pairs:
        if p.left in crops and p.right in crops:
            kept_pairs.append(p)
        else:
            quarantined.append(Quarantined(f"pairs.txt#{p.line}", "an image of the pair could not be aligned"))
    return _write_lfw(root, out_dir, template=template, sources=[s for s in used if s in crops], crops=crops,
                      pairs=[(p.left, p.right, p.same, p.fold) for p in kept_pairs], quarantined=quarantined,
                      how=how, misses=len(misses))


def prepare_lfw_bin(path: Path, out_dir: Path, folds: int = 10) -> dict[str, Any]:
    """InsightFace's ``lfw.bin`` (faces aligned to the 112x112 ArcFace template; pair i is images 2i and 2i+1,
    in pairs.txt's order): each image decoded and kept as it is, with the template's five points, as
    ``images.parquet`` (``lfw.bin#<k>``) and ``pairs.parquet`` with LFW View 2's ``folds`` contiguous folds.
    A pair with an image that does not decode to 112x112 RGB is quarantined (``lfw.bin:pair<i>``)."""
    from facebench.data.formats.lfw import load_verification_bin

    path = Path(path)
    template = "112x112"
    points, (height, width) = TEMPLATES[template]
    loaded = load_verification_bin(path)
    n_pairs = len(loaded.issame)
    if n_pairs == 0 or n_pairs % folds:
        raise ValueError(f"{path}: {n_pairs} pairs; expected a positive multiple of {folds} (View 2's folds, "
                         "in order)")
    crops: dict[str, tuple[bytes, np.ndarray]] = {}
    quarantined: list[Quarantined] = []
    pairs = []
    for i, same in enumerate(loaded.issame):
        names = []
        for k in (2 * i, 2 * i + 1):
            image = cv2.imdecode(np.frombuffer(loaded.images[k], np.uint8), cv2.IMREAD_COLOR)
            if image is not None and image.shape == (height, width, 3):
                crops[f"lfw.bin#{k}"] = (cv2.cvtColor(image, cv2.COLOR_BGR2RGB).tobytes(), points.astype(np.float32))
                names.append(f"lfw.bin#{k}")
        if len(names) == 2:
            pairs.append((names[0], names[1], bool(same), i // (n_pairs // folds)))
        else:
            quarantined.append(Quarantined(f"lfw.bin:pair{i}", f"an image does not decode to an aligned "
                                                               f"{height}x{width} face"))
    used = {name for left, right, _, _ in pairs for name in (left, right)}
    return _write_lfw(path, out_dir, template=template, sources=[s for s in crops if s in used], crops=crops,
                      pairs=pairs, quarantined=quarantined, how="aligned", misses=0)


def _write_lfw(root: Path, out_dir: Path, *, template: str, sources: list[str],
               crops: dict[str, tuple[bytes, np.ndarray]], pairs: list[tuple[str, str, bool, int]],
               quarantined: list[Quarantined], how: str, misses: int) -> dict[str, Any]:
    """LFW's outputs from its aligned images and its (left, right, same, fold) pairs."""
    if not pairs:
        raise ValueError(f"{root}: no LFW pair has both images aligned ({len(quarantined)} quarantined)")
    params = {"dataset": "lfw", "template": template, "version": PREPARE_IDENTITY_VERSION,
              **({"points": how} if how != "list" else {})}
    params_hash = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    images = to_table(_rows(sources, crops, None, "test", template))
    left, right, same, fold = (list(column) for column in zip(*pairs))
    pair_table = pa.table({"left": left, "right": right, "same": same, "fold": fold}, schema=PAIR_SCHEMA)
    hasher = ContentHash(params)
    hasher.add("images", images)
    hasher.add("pairs", pair_table)
    content_hash = hasher.hexdigest()
    manifest = {"dataset": "lfw", "template": template, "points": how, "detector_misses": misses,
                "counts": {"images": len(sources), "pairs": len(pairs), "matched": int(sum(same)),
                           "folds": len(set(fold))},
                "splits": {"images": {"rows": len(sources), "role": "test"},
                           "pairs": {"rows": len(pairs), "role": "test"}},
                "quarantined_count": len(quarantined),
                "quarantined": [{"source": q.source, "reason": q.reason} for q in quarantined],
                "params": params, "params_hash": params_hash, "content_hash": content_hash}

    def write(tmp: Path) -> None:
        write_samples(tmp / "images.parquet", images, _metadata("lfw", template, params_hash,
                                                                {"content_hash": content_hash}))
        write_table(tmp / "pairs.parquet", pair_table, {"dataset": "lfw", "params_hash": params_hash,
                                                        "content_hash": content_hash})
        manifest["files"] = file_digests(tmp)
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    build_dir(out_dir, write)
    _log("lfw", f"wrote {len(sources)} aligned images and {len(pairs)} pairs to {out_dir} "
                f"({len(quarantined)} quarantined)")
    return manifest
