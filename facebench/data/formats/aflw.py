"""AFLW-Full (CCL, Zhu et al. 2016): ``AFLWinfo_release.mat`` plus the AFLW images.

Field layout from datasets.md §2.2: ``data`` is N x 38 with all 19 x then all 19 y, ``bbox`` is
[left, right, top, bottom], ``ra`` a 1-based permutation whose first 20,000 entries are the
training faces. All coordinates are 1-based (MATLAB) and are shifted to 0-based at load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from facebench.data.formats import DatasetFormatError, landmark_problem
from facebench.data.images import image_sizes
from facebench.data.types import Quarantined, RawFace, ReadResult

MAT_NAME = "AFLWinfo_release.mat"
IMAGE_DIR = "data/flickr"
NUM_POINTS = 19
OFFICIAL_FACES = 24386
OFFICIAL_TRAIN = 20000
REQUIRED_FIELDS = ("data", "bbox", "mask_new", "ra", "nameList")
# Optional scalar a smaller (synthetic) set may carry to state its own train count; not in the real file.
TRAIN_COUNT_FIELD = "n_train"


def default_train_count(num_faces: int) -> int:
    """20,000 for the official 24,386 faces, else the same fraction (rounded half up)."""
    if num_faces == OFFICIAL_FACES:
        return OFFICIAL_TRAIN
    return int(np.floor(num_faces * OFFICIAL_TRAIN / OFFICIAL_FACES + 0.5))


def read_aflw_full(root: Path, frontal_only: bool = False, n_train: int | None = None) -> ReadResult:
    """Faces of AFLW-Full in ``ra`` order: the first ``n_train`` are "train", the rest "test".

    ``n_train``: explicit count, else the .mat's ``n_train`` scalar if it has one, else
    ``default_train_count(N)``. ``frontal_only`` keeps only test faces with all 19 points visible
    (AFLW-Frontal); training faces are never filtered. ``bbox`` is x, y, w, h with
    w = right - left, the raw box width that the AFLW-Full "face size" normaliser uses.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetFormatError(f"{root}: AFLW root not found; expected a folder holding {MAT_NAME} and {IMAGE_DIR}/")
    mat_path = root / MAT_NAME
    fields = _load_fields(mat_path)
    data, bbox, mask, ra, names = (fields[k] for k in REQUIRED_FIELDS)
    num = len(data)
    count = n_train if n_train is not None else fields.get(TRAIN_COUNT_FIELD, default_train_count(num))
    if not 0 <= count <= num:
        raise DatasetFormatError(f"{mat_path}: train count {count} outside 0..{num}")
    order = ra - 1
    is_train = np.zeros(num, dtype=bool)
    is_train[order[:count]] = True

    result = ReadResult()
    faces_by_row: dict[int, RawFace] = {}
    seen_per_image: dict[str, int] = {}
    for row in range(num):
        source = f"{IMAGE_DIR}/{names[row]}"
        face_index = seen_per_image.get(source, 0)
        seen_per_image[source] = face_index + 1
        points = np.stack([data[row, :NUM_POINTS], data[row, NUM_POINTS:]], axis=1) - 1.0
        left, right, top, bottom = bbox[row]
        box = np.array([left - 1.0, top - 1.0, right - left, bottom - top])
        record = f"{MAT_NAME}#{row}"
        if not names[row]:
            result.quarantined.append(Quarantined(record, f"record {row} (0-based row): empty nameList entry; "
                                                          "expected '<sub>/<file>.jpg'"))
            continue
        if not (np.isfinite(box).all() and box[2] > 0 and box[3] > 0):
            result.quarantined.append(Quarantined(record, f"record {row} ({source}): bbox [l r t b] "
                                                          f"{bbox[row].tolist()} has no area; expected right > left "
                                                          "and bottom > top"))
            continue
        faces_by_row[row] = RawFace(
            source=source, image_path=root / source, landmarks=points, visible=mask[row] != 0,
            bbox=box.astype(np.float32), split="train" if is_train[row] else "test", face_index=face_index)

    present = {f.image_path for f in faces_by_row.values() if f.image_path.is_file()}
    sizes = image_sizes(list(present))
    for row, face in list(faces_by_row.items()):
        if face.image_path not in present:
            problem, source = "image file not found; expected it under the dataset root", face.source
        elif isinstance(sizes[face.image_path], str):  # the reason the image cannot be used
            problem, source = sizes[face.image_path], face.source
        else:
            problem = landmark_problem(face.landmarks, sizes[face.image_path])
            source = f"{MAT_NAME}#{row}"
            if problem is not None:
                problem = f"{face.source}: {problem}"
        if problem is not None:
            result.quarantined.append(Quarantined(source, f"record {row} (0-based row): {problem}"))
            del faces_by_row[row]

    for row in order:
        face = faces_by_row.get(int(row))
        if face is None:
            continue
        if frontal_only and face.split == "test" and not face.visible.all():
            continue
        face.landmarks = face.landmarks.astype(np.float32)
        result.faces.append(face)
    return result


def _load_fields(path: Path) -> dict:
    """The required fields as plain arrays, shapes checked, or a DatasetFormatError saying what is wrong."""
    if not path.is_file():
        raise DatasetFormatError(f"{path}: not found; expected the CCL AFLW-Full annotation file {MAT_NAME}")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for a bad file
        raise DatasetFormatError(f"{path}: not a readable MATLAB .mat file ({exc})") from exc
    missing = [k for k in REQUIRED_FIELDS if k not in mat]
    if missing:
        raise DatasetFormatError(f"{path}: fields {missing} missing; expected {list(REQUIRED_FIELDS)}")
    try:
        data = np.asarray(mat["data"], dtype=np.float64)
        bbox = np.asarray(mat["bbox"], dtype=np.float64)
        mask = np.asarray(mat["mask_new"], dtype=np.float64)
        ra = np.asarray(mat["ra"], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DatasetFormatError(f"{path}: data, bbox, mask_new and ra must be numeric ({exc})") from exc
    num = len(data)
    expected = {"data": (data, (num, 2 * NUM_POINTS)), "bbox": (bbox, (num, 4)), "mask_new": (mask, (num, NUM_POINTS))}
    for key, (value, shape) in expected.items():
        if value.shape != shape:
            raise DatasetFormatError(f"{path}: {key} has shape {value.shape}; expected {shape} "
                                     f"(N faces x {shape[1]})")
    if not np.array_equal(np.sort(ra), np.arange(1, num + 1)):
        raise DatasetFormatError(f"{path}: ra must be a permutation of 1..{num} (1-based), it is not")
    names = _strings(mat["nameList"])
    if len(names) != num:
        raise DatasetFormatError(f"{path}: nameList has {len(names)} entries; expected {num}")
    fields = {"data": data, "bbox": bbox, "mask_new": mask, "ra": ra.astype(np.int64), "nameList": names}
    if TRAIN_COUNT_FIELD in mat:
        value = np.asarray(mat[TRAIN_COUNT_FIELD]).reshape(-1)
        if value.size != 1 or value[0] != int(value[0]):
            raise DatasetFormatError(f"{path}: {TRAIN_COUNT_FIELD} must be one integer, got {value.tolist()}")
        fields[TRAIN_COUNT_FIELD] = int(value[0])
    return fields


def _strings(cell: np.ndarray) -> list[str]:
    """A MATLAB cell of strings (N x 1, each a 1-element array) or a char matrix -> list of str."""
    cell = np.asarray(cell)
    if cell.dtype.kind == "U":
        return [str(s).strip() for s in cell.reshape(-1)]
    out = []
    for item in cell.reshape(-1):
        flat = np.asarray(item).reshape(-1)
        out.append(str(flat[0]).strip() if flat.size else "")
    return out
