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
* CASIA: ``train.parquet`` and ``manifest.json``;
* LFW: ``images.parquet`` (each image any pair uses, once), ``pairs.parquet`` (left, right, same,
  fold: sample ids into images.parquet) and ``manifest.json``.
Images without a landmark entry, unreadable images and pairs that lose an image are counted and
listed in the manifest's quarantine, never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
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
from facebench.data.parquet import RAW_RGB8, write_samples, write_table
from facebench.data.types import Quarantined

PREPARE_IDENTITY_VERSION = 1
FIVE_POINT_FLIP = [1, 0, 2, 4, 3]  # eyes and mouth corners swap under a horizontal flip
PAIR_SCHEMA = pa.schema([pa.field("left", pa.string(), nullable=False), pa.field("right", pa.string(), nullable=False),
                         pa.field("same", pa.bool_(), nullable=False), pa.field("fold", pa.int32(), nullable=False)])


def _log(name: str, message: str) -> None:
    print(f"[prepare {name}] {message}", file=sys.stderr, flush=True)


def _aligned(path: Path, points: np.ndarray, template: str) -> tuple[bytes, np.ndarray] | str:
    """(raw RGB8 crop, five points in crop pixels), or the reason the image cannot be used."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return "OpenCV cannot decode the image"
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
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                misses.append(Quarantined(source, "OpenCV cannot decode the image"))
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
                  exclude: Iterable[str] = LFW_OVERLAP_IDS, detector=None) -> dict[str, Any]:
    """CASIA-WebFace identity folders -> aligned ``train.parquet`` with 0-based class labels (points from
    the landmark list, or from ``detector``)."""
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
    if not sources:
        raise ValueError(f"{root}: no CASIA image could be aligned ({len(quarantined)} quarantined)")
    params = {"dataset": "casia", "template": template, "exclude": sorted(exclude),
              "version": PREPARE_IDENTITY_VERSION, **({"points": how} if how != "list" else {})}
    params_hash = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    kept_classes = sorted({labels[s] for s in sources})
    manifest = {"dataset": "casia", "template": template, "points": how, "detector_misses": len(misses),
                "counts": {"train": len(sources)},
                "classes": len(read.classes), "classes_with_images": len(kept_classes),
                "quarantined_count": len(quarantined),
                "quarantined": [{"source": q.source, "reason": q.reason} for q in quarantined],
                "params": params, "params_hash": params_hash}

    def write(tmp: Path) -> None:
        meta = _metadata("casia", template, params_hash, {"num_classes": len(read.classes)})
        write_samples(tmp / "train.parquet", _rows(sources, crops, labels, "train", template), meta)
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    build_dir(out_dir, write)
    _log("casia", f"wrote {len(sources)} aligned faces of {len(kept_classes)} identities to {out_dir} "
                  f"({len(quarantined)} quarantined)")
    return manifest


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
    if not kept_pairs:
        raise ValueError(f"{root}: no LFW pair has both images aligned ({len(quarantined)} quarantined)")
    sources = [s for s in used if s in crops]
    params = {"dataset": "lfw", "template": template, "version": PREPARE_IDENTITY_VERSION,
              **({"points": how} if how != "list" else {})}
    params_hash = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    manifest = {"dataset": "lfw", "template": template, "points": how, "detector_misses": len(misses),
                "counts": {"images": len(sources), "pairs": len(kept_pairs),
                           "matched": sum(p.same for p in kept_pairs), "folds": len({p.fold for p in kept_pairs})},
                "quarantined_count": len(quarantined),
                "quarantined": [{"source": q.source, "reason": q.reason} for q in quarantined],
                "params": params, "params_hash": params_hash}

    def write(tmp: Path) -> None:
        write_samples(tmp / "images.parquet", _rows(sources, crops, None, "test", template),
                      _metadata("lfw", template, params_hash, {}))
        table = pa.table({"left": [p.left for p in kept_pairs], "right": [p.right for p in kept_pairs],
                          "same": [p.same for p in kept_pairs], "fold": [p.fold for p in kept_pairs]},
                         schema=PAIR_SCHEMA)
        write_table(tmp / "pairs.parquet", table)
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    build_dir(out_dir, write)
    _log("lfw", f"wrote {len(sources)} aligned images and {len(kept_pairs)} pairs to {out_dir} "
                f"({len(quarantined)} quarantined)")
    return manifest
