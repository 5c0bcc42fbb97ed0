"""300-W in its official layout: folders of images with ``.pts`` files, optional iBUG box ``.mat`` files.

Layout, split names and conventions follow datasets.md §1: the ``.pts`` coordinates and the
``bb_ground_truth`` boxes are 1-based (MATLAB) and are shifted to 0-based pixel centres at load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from facebench.data.formats import DatasetFormatError, landmark_problem
from facebench.data.images import image_sizes
from facebench.data.types import Quarantined, RawFace, ReadResult

NUM_POINTS = 68
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
BOX_FOLDERS = ("Bounding Boxes", "Bounding_Boxes")  # both spellings exist in public loaders

# (folder, split, name of its bounding_boxes_<name>.mat or None). The first six are required.
SETS: list[tuple[str, str, str | None]] = [
    ("afw", "train", "afw"),
    ("helen/trainset", "train", "helen_trainset"),
    ("lfpw/trainset", "train", "lfpw_trainset"),
    ("helen/testset", "common", "helen_testset"),
    ("lfpw/testset", "common", "lfpw_testset"),
    ("ibug", "challenging", "ibug"),
    ("300W/01_Indoor", "private", None),
    ("300W/02_Outdoor", "private", None),
]
REQUIRED_FOLDERS = [folder for folder, _, _ in SETS[:6]]


class PtsError(ValueError):
    """A ``.pts`` file that does not parse; ``line`` is 1-based."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line


def parse_pts(text: str) -> np.ndarray:
    """PTS "version 1" text -> (n_points, 2) float64 landmarks, converted to 0-based pixel centres.

    Tolerant of what real files contain: any spacing after ``n_points:``, CRLF line ends, a missing
    final newline, blank lines and a third (visibility) column. Strict about the rest, because a
    silently misread file would poison training: raises ``PtsError`` naming the line.
    """
    lines = text.lstrip("\ufeff").splitlines()
    n_points: int | None = None
    open_line: int | None = None
    for number, line in enumerate(lines, start=1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("{"):
            if s != "{":
                raise PtsError(number, f"expected '{{' alone on its line, got {s!r}")
            open_line = number
            break
        key, sep, value = s.partition(":")
        if not sep:
            raise PtsError(number, f"expected a 'key: value' header line or '{{', got {s!r}")
        if key.strip().lower() == "n_points":
            tokens = value.split()
            if len(tokens) != 1 or not tokens[0].isdigit():
                raise PtsError(number, f"expected 'n_points: <integer>', got {s!r}")
            n_points = int(tokens[0])
    if open_line is None:
        raise PtsError(max(len(lines), 1), "no opening '{' before the points")
    if n_points is None:
        raise PtsError(open_line, "no 'n_points:' header before '{'")

    points: list[tuple[float, float]] = []
    close_line: int | None = None
    for number in range(open_line + 1, len(lines) + 1):
        s = lines[number - 1].strip()
        if not s:
            continue
        if s.startswith("}"):
            close_line = number
            break
        tokens = s.split()
        try:
            if len(tokens) not in (2, 3):
                raise ValueError
            values = [float(t) for t in tokens]
        except ValueError:
            raise PtsError(number, f"expected two numbers 'x y' (optionally a third column), got {s!r}") from None
        points.append((values[0], values[1]))
    if close_line is None:
        raise PtsError(max(len(lines), 1), "no closing '}' after the points")
    if len(points) != n_points:
        raise PtsError(close_line, f"header says n_points {n_points} but {len(points)} points were found")
    return np.asarray(points, dtype=np.float64).reshape(-1, 2) - 1.0


def read_boxes(path: Path) -> dict[str, np.ndarray]:
    """``bounding_boxes_<set>.mat`` -> image file name -> raw 1-based ``bb_ground_truth`` [x1, y1, x2, y2]."""
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises several types for a bad file
        raise DatasetFormatError(f"{path}: not a readable MATLAB .mat file ({exc})") from exc
    if "bounding_boxes" not in mat:
        raise DatasetFormatError(f"{path}: expected a variable 'bounding_boxes' (1xN cell of structs), "
                                 f"found {sorted(k for k in mat if not k.startswith('__'))}")
    boxes: dict[str, np.ndarray] = {}
    for i, entry in enumerate(np.atleast_1d(mat["bounding_boxes"])):
        try:
            name = str(entry.imgName)
            gt = np.asarray(entry.bb_ground_truth, dtype=np.float64).reshape(-1)
        except (AttributeError, TypeError, ValueError) as exc:
            raise DatasetFormatError(f"{path}: entry {i} should be a struct with imgName and a numeric "
                                     f"bb_ground_truth ({exc})") from exc
        if gt.shape != (4,):
            raise DatasetFormatError(f"{path}: entry {i} ({name}) bb_ground_truth has {gt.size} values; "
                                     "expected 4 [x1, y1, x2, y2]")
        boxes[name] = gt
    return boxes


@dataclass
class _Candidate:
    pts_rel: str
    image_path: Path
    image_rel: str
    split: str
    points: np.ndarray
    box: np.ndarray | None  # 0-based x, y, w, h from the box file, None to use the landmarks' box
    box_source: str


def read_w300(root: Path) -> ReadResult:
    """Every face of the official 300-W layout under ``root`` (plus the private 300W set if present).

    Splits: afw + helen/trainset + lfpw/trainset -> "train"; helen/testset + lfpw/testset ->
    "common"; ibug -> "challenging"; 300W/01_Indoor + 02_Outdoor -> "private". The box is the
    iBUG ``bb_ground_truth`` where a box file lists the image, else the tight landmark box.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetFormatError(f"{root}: 300-W root not found; expected a folder holding {REQUIRED_FOLDERS}")
    missing = [f for f in REQUIRED_FOLDERS if not (root / f).is_dir()]
    if missing:
        raise DatasetFormatError(f"{root}: 300-W folders {missing} are missing; expected all of {REQUIRED_FOLDERS}")
    box_dir = next((root / b for b in BOX_FOLDERS if (root / b).is_dir()), None)

    result = ReadResult()
    candidates: list[_Candidate] = []
    for folder, split, box_name in SETS:
        if not (root / folder).is_dir():
            continue
        box_file = box_dir / f"bounding_boxes_{box_name}.mat" if box_dir is not None and box_name else None
        boxes = read_boxes(box_file) if box_file is not None and box_file.is_file() else {}
        box_rel = box_file.relative_to(root).as_posix() if box_file is not None else ""
        candidates += _read_folder(root, folder, split, boxes, box_rel, result.quarantined)

    sizes = image_sizes([c.image_path for c in candidates])
    for c in candidates:
        size = sizes[c.image_path]
        if isinstance(size, str):  # the reason the image cannot be used
            result.quarantined.append(Quarantined(c.image_rel, size))
            continue
        problem = landmark_problem(c.points, size)
        if problem is not None:
            result.quarantined.append(Quarantined(c.pts_rel, problem))
            continue
        if c.box is None:
            lo, hi = c.points.min(axis=0), c.points.max(axis=0)
            box = np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])
        else:
            box = c.box
        if not (np.isfinite(box).all() and box[2] > 0 and box[3] > 0):
            result.quarantined.append(Quarantined(
                c.box_source or c.pts_rel, f"face box {box.tolist()} of {c.image_rel} has no area; "
                                           "expected x2 > x1 and y2 > y1"))
            continue
        result.faces.append(RawFace(
            source=c.image_rel, image_path=c.image_path, landmarks=c.points.astype(np.float32),
            visible=np.ones(NUM_POINTS, dtype=bool), bbox=box.astype(np.float32), split=c.split))
    return result


def _read_folder(root: Path, folder: str, split: str, boxes: dict[str, np.ndarray], box_rel: str,
                 quarantined: list[Quarantined]) -> list[_Candidate]:
    """Pair images and .pts files by stem and parse the annotations; images are checked later."""
    images: dict[str, list[Path]] = {}
    annotations: dict[str, Path] = {}
    for path in sorted((root / folder).iterdir()):
        if not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.setdefault(path.stem, []).append(path)
        elif path.suffix.lower() == ".pts":
            annotations[path.stem] = path

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    out: list[_Candidate] = []
    for stem in sorted(set(images) | set(annotations)):
        pts_path = annotations.get(stem)
        found = images.get(stem, [])
        if pts_path is None:
            quarantined.append(Quarantined(rel(found[0]), f"no annotation beside the image; expected {stem}.pts"))
            continue
        if not found:
            quarantined.append(Quarantined(rel(pts_path), f"image missing; expected {stem}.jpg or {stem}.png "
                                                          f"beside the .pts"))
            continue
        if len(found) > 1:
            quarantined.append(Quarantined(rel(pts_path), f"several images share the stem: "
                                                          f"{[p.name for p in found]}; expected exactly one"))
            continue
        try:
            points = parse_pts(pts_path.read_bytes().decode("utf-8", errors="replace"))
        except PtsError as exc:
            quarantined.append(Quarantined(rel(pts_path), f"{exc} (PTS version 1 expected)"))
            continue
        if len(points) != NUM_POINTS:
            quarantined.append(Quarantined(rel(pts_path), f"{len(points)} points; expected the {NUM_POINTS}-point "
                                                          "300-W markup"))
            continue
        image = found[0]
        box, box_source = None, ""
        if image.name in boxes:
            x1, y1, x2, y2 = boxes[image.name]
            box = np.array([x1 - 1.0, y1 - 1.0, x2 - x1, y2 - y1])  # 1-based corners -> 0-based x, y, w, h
            box_source = f"{box_rel}#{image.name}"
        out.append(_Candidate(rel(pts_path), image, rel(image), split, points, box, box_source))
    return out
