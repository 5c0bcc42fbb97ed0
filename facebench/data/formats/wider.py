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

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facebench.atomic import build_dir
from facebench.data.formats import DatasetFormatError

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


def prepare_scenes(root: Path, out_dir: Path, splits: tuple[str, ...] = ("train", "val")) -> dict:
    """A WIDER-layout root -> ``out_dir``/<split>.parquet, one row per image (its faces as x1, y1, x2, y2 and
    their five points), and manifest.json. Faces of zero width or height (the official files have some) are
    left out of the boxes, counted and listed by image, face and line; an image file that is missing is an
    error naming it. Written whole or not at all."""
    manifest: dict = {"format": "wider", "splits": {}}

    def write(tmp: Path) -> None:
        for split in splits:
            scenes, skipped = read_scenes(root, split, with_skipped=True)
            missing = [s.name for s in scenes if not s.image_path.is_file()]
            if missing:
                raise FileNotFoundError(f"{root}/WIDER_{split}/images: {len(missing)} images of the annotation file "
                                        f"are missing, e.g. {missing[:3]}")
            table = pa.table({
                "name": pa.array([s.name for s in scenes], type=pa.string()),
                "boxes": pa.array([s.boxes.reshape(-1).tolist() for s in scenes], type=pa.list_(pa.float32())),
                "landmarks": pa.array([s.landmarks.reshape(-1).tolist() for s in scenes], type=pa.list_(pa.float32())),
                "face_ids": pa.array([s.face_ids.tolist() for s in scenes], type=pa.list_(pa.int32())),
            })
            pq.write_table(table, tmp / f"{split}.parquet")
            manifest["splits"][split] = {"images": len(scenes), "faces": int(sum(len(s.boxes) for s in scenes)),
                                         "faces_with_landmarks": int(sum(np.isfinite(s.landmarks).all(axis=(1, 2)).sum()
                                                                         for s in scenes)),
                                         "zero_face_images": sum(len(s.boxes) == 0 for s in scenes),
                                         "skipped_faces": len(skipped), "skipped": skipped}
            print(f"[prepare wider] {split}: {len(scenes)} images, {manifest['splits'][split]['faces']} faces, "
                  f"{len(skipped)} degenerate faces skipped", flush=True)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    build_dir(Path(out_dir), write)
    return manifest


def load_scenes(prepared_dir: Path, split: str, raw_root: Path) -> list[Scene]:
    """The scenes ``prepare_scenes`` wrote, with image paths under ``raw_root``."""
    path = Path(prepared_dir) / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prepared WIDER split not found (run `facebench prepare` on the dataset)")
    out = []
    for row in pq.read_table(path).to_pylist():
        boxes = np.asarray(row["boxes"], np.float64).reshape(-1, 4)
        out.append(Scene(Path(raw_root) / f"WIDER_{split}" / "images" / row["name"], row["name"], boxes,
                         np.asarray(row["landmarks"], np.float64).reshape(-1, 5, 2),
                         np.asarray(row["face_ids"], np.int64) if "face_ids" in row else None))
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
