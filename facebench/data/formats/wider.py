"""WIDER FACE: the ``wider_face_{train,val}_bbx_gt.txt`` annotation and the eval kit's keep lists.

Annotation (datasets.md §5), repeated to the end of the file: an image path relative to
``WIDER_<split>/images/`` (``0--Parade/0_Parade_marchingband_1_849.jpg``); a face-count line n; n
lines ``x1 y1 w h blur expression illumination invalid occlusion pose`` (integers, often with a
trailing space). An image with n = 0 is followed by one all-zero line, which belongs to it and is
consumed. Some boxes have w or h = 0: they are kept and flagged (``degenerate``), never dropped
silently; whether they count is the evaluation's business.

Eval kit (``eval_tools/ground_truth/wider_{easy,medium,hard}_val.mat``): per event, per image, the
**1-based** indices of the faces that count in that subset; the others are ignored (a detection
matched to one is neither a true nor a false positive). Easy ⊂ Medium ⊂ Hard.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facebench.atomic import atomic_write_text, build_dir
from facebench.data.formats import DatasetFormatError
from facebench.data.parquet import ContentHash, file_digests, read_metadata, write_table

ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
ATTRIBUTE_RANGE = {"blur": 2, "expression": 1, "illumination": 1, "invalid": 1, "occlusion": 2, "pose": 1}


class WiderFormatError(DatasetFormatError):
    """A malformed annotation file; ``line`` is 1-based (0 for whole-file problems)."""

    def __init__(self, source: str, line: int, message: str):
        super().__init__(f"{source}:{line}: {message}" if line else f"{source}: {message}")
        self.line = line


@dataclass
class WiderImage:
    path: str               # relative to WIDER_<split>/images/, e.g. "0--Parade/0_Parade_marchingband_1_5.jpg"
    boxes: np.ndarray       # (n, 4) float32 x1, y1, w, h in pixels
    attributes: np.ndarray  # (n, 6) int16 in ATTRIBUTES order
    line: int               # 1-based line of the path in the annotation file

    @property
    def event(self) -> str:
        return self.path.split("/", 1)[0]

    @property
    def degenerate(self) -> np.ndarray:
        """Faces with zero width or height (present in the official files)."""
        return (self.boxes[:, 2] <= 0) | (self.boxes[:, 3] <= 0)


def parse_bbx_gt(text: str, source: str = "wider_face_bbx_gt.txt") -> list[WiderImage]:
    """Every image of a ``*_bbx_gt.txt`` text, in file order; errors name the line and what was expected."""
    lines = text.lstrip("\ufeff").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise WiderFormatError(source, 0, "empty file; expected an image path, a face count and the face lines")
    images: list[WiderImage] = []
    seen: dict[str, int] = {}
    i = 0
    while i < len(lines):
        path_line = i + 1
        path = lines[i].strip()
        if not path.lower().endswith((".jpg", ".jpeg", ".png")) or len(path.split()) != 1:
            raise WiderFormatError(source, path_line, f"expected an image path (…/name.jpg), got {lines[i]!r}")
        if path in seen:
            raise WiderFormatError(source, path_line, f"image {path} already listed at line {seen[path]}")
        seen[path] = path_line
        if i + 1 >= len(lines):
            raise WiderFormatError(source, path_line + 1, f"file ends after {path}; expected its face count")
        count_text = lines[i + 1].strip()
        if not count_text.isdigit():
            raise WiderFormatError(source, path_line + 1, f"expected the face count of {path}, got {lines[i + 1]!r}")
        n = int(count_text)
        rows = max(n, 1)  # n = 0 is followed by one all-zero line
        if i + 2 + rows > len(lines):
            raise WiderFormatError(source, len(lines) + 1,
                                   f"file ends inside {path}: {n} face line(s) announced at line {path_line + 1}")
        values = []
        for k in range(rows):
            number = path_line + 2 + k
            parts = lines[i + 2 + k].split()
            if len(parts) != 10 or not all(p.lstrip("-").isdigit() for p in parts):
                raise WiderFormatError(source, number, f"expected 10 integers 'x1 y1 w h blur expression illumination "
                                                       f"invalid occlusion pose' for {path}, got {lines[i + 2 + k]!r}")
            row = [int(p) for p in parts]
            if n == 0:
                if any(row):
                    raise WiderFormatError(source, number, f"{path} has 0 faces; expected the all-zero line, "
                                                           f"got {lines[i + 2 + k]!r}")
                continue
            if row[2] < 0 or row[3] < 0:
                raise WiderFormatError(source, number, f"negative box size w={row[2]} h={row[3]} for {path}")
            for name, value in zip(ATTRIBUTES, row[4:]):
                if not 0 <= value <= ATTRIBUTE_RANGE[name]:
                    raise WiderFormatError(source, number, f"{name}={value} for {path}; expected 0..{ATTRIBUTE_RANGE[name]}")
            values.append(row)
        table = np.asarray(values, dtype=np.int64).reshape(-1, 10)
        images.append(WiderImage(path, table[:, :4].astype(np.float32), table[:, 4:].astype(np.int16), path_line))
        i += 2 + rows
    return images


def read_bbx_gt(path: Path) -> list[WiderImage]:
    path = Path(path)
    if not path.is_file():
        raise WiderFormatError(str(path), 0, "annotation file not found (expected wider_face_split/"
                                             "wider_face_<split>_bbx_gt.txt)")
    return parse_bbx_gt(path.read_text(encoding="utf-8"), str(path))


def read_keep_lists(mat_path: Path) -> dict[str, np.ndarray]:
    """Eval-kit subset file (``wider_{easy,medium,hard}_val.mat``) -> {"event/image.jpg": 0-based face indices}."""
    import scipy.io

    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise WiderFormatError(str(mat_path), 0, "keep-list file not found (expected eval_tools/ground_truth/"
                                                 "wider_<subset>_val.mat)")
    mat = scipy.io.loadmat(str(mat_path))
    missing = [k for k in ("event_list", "file_list", "gt_list") if k not in mat]
    if missing:
        raise WiderFormatError(str(mat_path), 0, f"lacks {missing}; expected event_list, file_list and gt_list")
    events, files, keep = mat["event_list"], mat["file_list"], mat["gt_list"]
    out: dict[str, np.ndarray] = {}
    for e in range(len(events)):
        event = str(events[e][0][0])
        names, lists = files[e][0], keep[e][0]
        if len(names) != len(lists):
            raise WiderFormatError(str(mat_path), 0, f"event {event}: {len(names)} files but {len(lists)} keep lists")
        for j in range(len(names)):
            indices = np.asarray(lists[j][0], dtype=np.int64).reshape(-1)
            if indices.size and indices.min() < 1:
                raise WiderFormatError(str(mat_path), 0, f"{event}/{names[j][0][0]}: keep indices are 1-based; "
                                                         f"found {indices.min()}")
            out[f"{event}/{names[j][0][0]}.jpg"] = indices - 1
    return out


def read_landmarks(path: Path, images: list[WiderImage]) -> dict[str, np.ndarray]:
    """The five-point file beside a ``*_bbx_gt.txt`` (``wider_face_<split>_landmarks.txt``; ours, WIDER has
    none): ``path<TAB>x1 y1 ... x5 y5`` per face, in the bbx_gt file's face order. Returns path -> (n, 5, 2)
    for every image of ``images`` (NaN rows for faces the file does not mark); errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise WiderFormatError(str(path), 0, "landmark file not found (expected wider_face_split/"
                                             "wider_face_<split>_landmarks.txt)")
    faces = {im.path: len(im.boxes) for im in images}
    out = {p: np.full((n, 5, 2), np.nan, np.float32) for p, n in faces.items()}
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        name, _, values = line.partition("\t")
        if name not in faces:
            raise WiderFormatError(str(path), number, f"image {name!r} is not in the annotation file")
        try:
            points = np.asarray([float(v) for v in values.split()], dtype=np.float32)
        except ValueError:
            raise WiderFormatError(str(path), number, "expected ten numbers (x1 y1 ... x5 y5) after the tab") from None
        if points.size != 10:
            raise WiderFormatError(str(path), number, f"expected ten numbers (x1 y1 ... x5 y5), found {points.size}")
        face = seen.get(name, 0)
        if face >= faces[name]:
            raise WiderFormatError(str(path), number, f"{name}: more landmark lines than its {faces[name]} faces")
        out[name][face] = points.reshape(5, 2)
        seen[name] = face + 1
    return out


# --- scenes: what detection training and evaluation read -----------------------------------------------
@dataclass
class Scene:
    image_path: Path
    name: str                # relative path, as the annotation file names it
    boxes: np.ndarray        # (n, 4) float64 x1, y1, x2, y2 of the faces
    landmarks: np.ndarray    # (n, 5, 2), NaN where unknown
    face_ids: np.ndarray | None = None  # (n,) each face's index in the annotation file (the keep lists' numbering)

    def __post_init__(self) -> None:
        if self.face_ids is None:
            self.face_ids = np.arange(len(self.boxes))


# Prepared scene splits -> (the WIDER split their images come from, what they are for). WIDER FACE's test
# annotations are not public, so WIDER_val is our test set (the eval kit's keep lists name its faces), and
# validation is a seeded share of the WIDER_train scenes, never used to train.
SCENE_SPLITS = {"train": ("train", "train"), "val": ("train", "val"), "test": ("val", "test")}
PREPARE_SCENES_VERSION = 2  # 2: val held out of WIDER_train, WIDER_val as test, image digests, content hash


def prepare_scenes(root: Path, out_dir: Path, *, val_fraction: float = 0.1, seed: int = 0,
                   name: str = "wider") -> dict:
    """A WIDER-layout root -> ``out_dir``/{train,val,test}.parquet, one row per image (its faces as x1, y1,
    x2, y2, their five points, their indices in the annotation file, the image file's sha256), and
    manifest.json.

    ``train`` is WIDER_train less the held-out scenes; ``val`` is ``val_fraction`` of the WIDER_train
    scenes (at least one, rounded half up, at least one left to train), the first of a permutation of the
    sorted scene names drawn with ``seed``; ``test`` is WIDER_val. Each file's metadata names the folder
    its images live in (``images_dir``, read by ``load_scenes``) and carries the set's content hash
    (``parquet.ContentHash``; with the images' digests it covers the pixels too). Faces of zero width or
    height (the official files have some) are left out of the boxes, counted and listed by image, face
    and line; an image file that is missing is an error naming it. Written whole or not at all."""
    root = Path(root)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"{name}: val_fraction is {val_fraction}; expected a fraction of the WIDER_train scenes "
                         "strictly between 0 and 1")
    raw = {}
    for raw_split in ("train", "val"):
        scenes, skipped = read_scenes(root, raw_split, with_skipped=True)
        if not scenes:
            raise ValueError(f"{root}/wider_face_split/wider_face_{raw_split}_bbx_gt.txt lists no image; expected the "
                             f"scenes of WIDER_{raw_split} (our {'test' if raw_split == 'val' else 'train and val'} "
                             "splits)")
        missing = [sc.name for sc in scenes if not sc.image_path.is_file()]
        if missing:
            raise FileNotFoundError(f"{root}/WIDER_{raw_split}/images: {len(missing)} images of the annotation file "
                                    f"are missing, e.g. {missing[:3]}")
        raw[raw_split] = (scenes, skipped)
    train_all, train_skipped = raw["train"]
    held, val_entry = _held_out_scenes(name, [sc.name for sc in train_all], val_fraction, seed)
    parts = {"train": ([sc for sc in train_all if sc.name not in held], train_skipped),
             "val": ([sc for sc in train_all if sc.name in held], train_skipped),
             "test": raw["val"]}
    params = {"dataset": name, "format": "wider", "val_fraction": val_fraction, "seed": seed,
              "version": PREPARE_SCENES_VERSION}
    params_hash = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    tables = {split: _scene_table(scenes) for split, (scenes, _) in parts.items()}
    hasher = ContentHash(params)
    for split in sorted(tables):
        hasher.add(split, tables[split])
    content_hash = hasher.hexdigest()
    manifest: dict = {"format": "wider", "dataset": name, "splits": {}, "val": val_entry, "params": params,
                      "params_hash": params_hash, "content_hash": content_hash}
    for split, (scenes, skipped) in parts.items():
        raw_split, role = SCENE_SPLITS[split]
        names = {sc.name for sc in scenes}
        mine = [entry for entry in skipped if entry["image"] in names]
        manifest["splits"][split] = {
            "role": role, "images_dir": f"WIDER_{raw_split}/images", "images": len(scenes),
            "faces": int(sum(len(sc.boxes) for sc in scenes)),
            "faces_with_landmarks": int(sum(np.isfinite(sc.landmarks).all(axis=(1, 2)).sum() for sc in scenes)),
            "zero_face_images": sum(len(sc.boxes) == 0 for sc in scenes),
            "skipped_faces": len(mine), "skipped": mine}
        print(f"[prepare {name}] {split} ({role}, WIDER_{raw_split}): {len(scenes)} images, "
              f"{manifest['splits'][split]['faces']} faces, {len(mine)} degenerate faces skipped", flush=True)
    manifest["counts"] = {split: entry["images"] for split, entry in manifest["splits"].items()}

    def write(tmp: Path) -> None:
        for split, table in tables.items():
            raw_split, role = SCENE_SPLITS[split]
            write_table(tmp / f"{split}.parquet", table, {"dataset": name, "split": split, "role": role,
                                                         "images_dir": f"WIDER_{raw_split}/images",
                                                         "params_hash": params_hash, "content_hash": content_hash})
        manifest["files"] = file_digests(tmp)
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2) + "\n")

    build_dir(Path(out_dir), write)
    return manifest


def _held_out_scenes(name: str, scenes: list[str], fraction: float, seed: int) -> tuple[set[str], dict]:
    """The WIDER_train scenes held out for validation and the manifest's account of the draw."""
    ordered = sorted(scenes)
    if len(ordered) < 2:
        raise ValueError(f"{name}: WIDER_train has {len(ordered)} scene(s); holding validation scenes out needs at "
                         "least 2 (one for val, one left to train on)")
    n_val = min(len(ordered) - 1, max(1, math.floor(fraction * len(ordered) + 0.5)))
    held = {ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))[:n_val]}
    return held, {"fraction": fraction, "seed": seed, "unit": "scene", "from": "WIDER_train",
                  "unit_definition": "one WIDER_train image with all its faces", "scenes": n_val,
                  "train_scenes": len(ordered) - n_val}


def _scene_table(scenes: list[Scene]) -> pa.Table:
    return pa.table({
        "name": pa.array([sc.name for sc in scenes], type=pa.string()),
        "boxes": pa.array([sc.boxes.reshape(-1).tolist() for sc in scenes], type=pa.list_(pa.float32())),
        "landmarks": pa.array([sc.landmarks.reshape(-1).tolist() for sc in scenes], type=pa.list_(pa.float32())),
        "face_ids": pa.array([sc.face_ids.tolist() for sc in scenes], type=pa.list_(pa.int32())),
        "image_sha256": pa.array([hashlib.sha256(sc.image_path.read_bytes()).hexdigest() for sc in scenes],
                                 type=pa.string()),
    })


def load_scenes(prepared_dir: Path, split: str, raw_root: Path) -> list[Scene]:
    """The scenes of a split ``prepare_scenes`` wrote ("train", "val" or "test"), with image paths under
    ``raw_root`` in the folder the file's metadata names (val's images are WIDER_train's, test's WIDER_val's)."""
    path = Path(prepared_dir) / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prepared WIDER split not found (run `facebench prepare` on the dataset; "
                                f"splits: {sorted(SCENE_SPLITS)})")
    try:
        images_dir = read_metadata(path)["images_dir"]
    except (ValueError, KeyError):
        raise ValueError(f"{path}: no images_dir in the file's metadata; expected a scene index written by "
                         "prepare_scenes (re-run `facebench prepare` on the dataset)") from None
    out = []
    for row in pq.read_table(path).to_pylist():
        boxes = np.asarray(row["boxes"], np.float64).reshape(-1, 4)
        out.append(Scene(Path(raw_root) / images_dir / row["name"], row["name"], boxes,
                         np.asarray(row["landmarks"], np.float64).reshape(-1, 5, 2),
                         np.asarray(row["face_ids"], np.int64)))
    return out


def read_scenes(root: Path, split: str, with_skipped: bool = False):
    """The scenes of one split of a WIDER-layout root, with the five points of each face (NaN if none)."""
    root = Path(root)
    images = read_bbx_gt(root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt")
    lm_path = root / "wider_face_split" / f"wider_face_{split}_landmarks.txt"
    points = read_landmarks(lm_path, images) if lm_path.is_file() else {}
    scenes, skipped = [], []
    for im in images:
        keep = ~im.degenerate
        skipped += [{"image": im.path, "face": int(j), "line": im.line, "why": "zero width or height"}
                    for j in np.flatnonzero(~keep)]
        xywh = im.boxes[keep].astype(np.float64)
        boxes = np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]) if len(xywh) else np.zeros((0, 4))
        lms = points.get(im.path, np.full((len(im.boxes), 5, 2), np.nan))[keep].astype(np.float64)
        scenes.append(Scene(root / f"WIDER_{split}" / "images" / im.path, im.path, boxes, lms, np.flatnonzero(keep)))
    return (scenes, skipped) if with_skipped else scenes


KEEP_LIST_SUBSETS = ("easy", "medium", "hard")


def official_keep_lists(root: Path) -> dict[str, dict[str, np.ndarray]] | None:
    """The eval kit's per-face keep lists (``eval_tools/ground_truth/wider_<subset>_val.mat``) when the root
    has all three; None otherwise (synthetic scenes have none)."""
    folder = Path(root) / "eval_tools" / "ground_truth"
    paths = {s: folder / f"wider_{s}_val.mat" for s in KEEP_LIST_SUBSETS}
    if not all(p.is_file() for p in paths.values()):
        return None
    return {s: read_keep_lists(p) for s, p in paths.items()}
