"""MTCNN's training crops, made as the paper makes them (Zhang et al., SPL 2016, Sec. III-A).

From WIDER-format scenes (``formats/wider.py``) and their five-point file, each stage gets square crops
resized to its input (P-Net 12, R-Net 24, O-Net 48 px), labelled by their best IoU with a face:

- negative: IoU < 0.3;  positive: IoU > 0.65;  part face: 0.4 < IoU < 0.65 (0.3-0.4 is left out, as
  in the paper: too close to call either way);
- landmark face: a positive crop of a face whose five points are known (O-Net only: the published
  P-Net and R-Net, and so ours, have no landmark head).

Crops come from three places: random squares anywhere in the scene (mostly negatives), jittered boxes
around each face (positives and parts), and, for R-Net and O-Net, the boxes the already-trained
earlier stages propose on the same scenes (``proposals``): their false positives are the hard
negatives the paper trains the next stage on. Kinds are then mixed at the paper's 3:1:1:2 ratio
(negative : positive : part : landmark); what the mix leaves out is counted in the manifest.

Targets: box offsets ``(face - crop) / side`` for (x1, y1, x2, y2), the inverse of the cascade's
calibration (``boxes.calibrate``); landmarks ``(point - crop corner) / side`` as x1..x5 then y1..y5,
the O-Net head's order.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import torch

from facebench.atomic import atomic_write_text, build_dir
from facebench.data.formats.wider import Scene
from facebench.data.images import read_image
from facebench.data.parquet import ContentHash, file_digests, write_table
from facebench.papers.mtcnn.boxes import iou
from facebench.papers.mtcnn.loss import KIND_NAMES, LANDMARK, NEGATIVE, PART, POSITIVE

IOU_NEGATIVE, IOU_PART, IOU_POSITIVE = 0.3, 0.4, 0.65
MIX_RATIO = {NEGATIVE: 3, POSITIVE: 1, PART: 1, LANDMARK: 2}
STAGE_SIZE = {"pnet": 12, "rnet": 24, "onet": 48}
MIN_FACE = 12  # faces smaller than P-Net's window give no positive or part crops (they stay in the IoU test)
# Mining (R-Net's and O-Net's crops): low cut-offs, so the next stage sees the earlier stages' doubtful
# boxes too, and a cap on P-Net's candidates per scene, best first (a barely trained P-Net passes nearly
# every window).
MINING_THRESHOLDS = (0.4, 0.4, 0.4)
MINING_MAX_CANDIDATES = 2000


def label(best_iou: np.ndarray) -> np.ndarray:
    """Kind per crop from its best IoU with any face; -1 for the left-out band (0.3 to 0.4)."""
    kind = np.full(best_iou.shape, -1, np.int64)
    kind[best_iou < IOU_NEGATIVE] = NEGATIVE
    kind[(best_iou > IOU_PART) & (best_iou <= IOU_POSITIVE)] = PART
    kind[best_iou > IOU_POSITIVE] = POSITIVE
    return kind


def box_targets(crops: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(face - crop) / crop side per corner: ``calibrate(crop, target)`` gives the face box back."""
    side = (crops[:, 2] - crops[:, 0])[:, None]
    return (faces - crops) / side


def landmark_targets(crops: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(K, 5, 2) points -> (K, 10): x1..x5 then y1..y5, as fractions of the crop from its top-left corner."""
    side = (crops[:, 2] - crops[:, 0])[:, None, None]
    rel = (points - crops[:, None, :2]) / side
    return np.concatenate([rel[:, :, 0], rel[:, :, 1]], axis=1)


def jittered(rng: np.random.Generator, faces: np.ndarray, per_face: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Square crops around each face: side 0.8-1.25 x the face's longer side, centre moved by up to
    ``spread`` of the face size. Returns the crops and which face each was drawn around."""
    if len(faces) == 0 or per_face == 0:
        return np.zeros((0, 4)), np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(faces)), per_face)
    f = faces[owner]
    w, h = f[:, 2] - f[:, 0], f[:, 3] - f[:, 1]
    side = np.maximum(w, h) * rng.uniform(0.8, 1.25, len(f))
    cx = (f[:, 0] + f[:, 2]) / 2 + rng.uniform(-spread, spread, len(f)) * w
    cy = (f[:, 1] + f[:, 3]) / 2 + rng.uniform(-spread, spread, len(f)) * h
    return np.column_stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]), owner


def random_squares(rng: np.random.Generator, width: int, height: int, count: int, min_side: float) -> np.ndarray:
    """Squares anywhere in the image, side log-uniform from ``min_side`` to half the shorter image side."""
    top = max(min_side + 1, min(width, height) / 2)
    side = np.exp(rng.uniform(np.log(min_side), np.log(top), count))
    x1 = rng.uniform(0, np.maximum(width - side, 1))
    y1 = rng.uniform(0, np.maximum(height - side, 1))
    return np.column_stack([x1, y1, x1 + side, y1 + side])


def cut(image: np.ndarray, crops: np.ndarray, size: int) -> np.ndarray:
    """(K, size, size, 3) uint8 crops of an RGB image; parts outside the image are black (the cascade pads
    its crops the same way)."""
    out = np.zeros((len(crops), size, size, 3), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(crops):
        s = size / (x2 - x1)
        m = np.array([[s, 0, -x1 * s], [0, size / (y2 - y1), -y1 * size / (y2 - y1)]], np.float64)
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        out[i] = cv2.warpAffine(image, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


def scene_samples(rng: np.random.Generator, scene: Scene, stage: str, proposals: np.ndarray | None,
                  negatives: int, per_face: int) -> dict[str, np.ndarray]:
    """Every labelled crop of one scene (before mixing): its box, kind, targets, IoU, and whether a
    previous stage proposed it (a mined example). No pixels yet: only the crops the mix keeps are cut."""
    height, width = _rgb(scene).shape[:2]
    size = STAGE_SIZE[stage]
    big = scene.boxes[_side(scene.boxes) >= MIN_FACE]
    parts = [random_squares(rng, width, height, negatives, size), jittered(rng, big, per_face, 0.2)[0]]
    mined = [np.zeros(len(parts[0]), bool), np.zeros(len(parts[1]), bool)]
    if proposals is not None and len(proposals):
        sq = proposals[(proposals[:, 2] - proposals[:, 0]) >= size / 2]
        parts.append(sq)
        mined.append(np.ones(len(sq), bool))
    crops = np.concatenate(parts)
    is_mined = np.concatenate(mined)
    if len(scene.boxes):
        overlap = iou(torch.from_numpy(crops), torch.from_numpy(scene.boxes)).numpy()
        best, which = overlap.max(1), overlap.argmax(1)
    else:
        best, which = np.zeros(len(crops)), np.zeros(len(crops), np.int64)
    kind = label(best)
    faces = scene.boxes[which] if len(scene.boxes) else crops
    boxes_t = box_targets(crops, faces)
    lm_t = np.zeros((len(crops), 10))
    if stage == "onet" and len(scene.boxes):  # landmark faces: tight jitters of faces with known points
        known = np.isfinite(scene.landmarks).all(axis=(1, 2))
        marked = np.flatnonzero(known & (_side(scene.boxes) >= MIN_FACE))
        lm_crops, owner = jittered(rng, scene.boxes[marked], per_face, 0.1)
        if len(lm_crops):
            lm_iou = iou(torch.from_numpy(lm_crops), torch.from_numpy(scene.boxes)).numpy()
            tight = lm_iou[np.arange(len(lm_crops)), marked[owner]] > IOU_POSITIVE
            lm_crops, owner = lm_crops[tight], owner[tight]
            crops = np.concatenate([crops, lm_crops])
            kind = np.concatenate([kind, np.full(len(lm_crops), LANDMARK)])
            best = np.concatenate([best, lm_iou[tight].max(1) if len(lm_crops) else np.zeros(0)])
            boxes_t = np.concatenate([boxes_t, box_targets(lm_crops, scene.boxes[marked[owner]])])
            lm_t = np.concatenate([lm_t, landmark_targets(lm_crops, scene.landmarks[marked[owner]])])
            is_mined = np.concatenate([is_mined, np.zeros(len(lm_crops), bool)])
    use = kind >= 0
    return {"kind": kind[use].astype(np.int8),
            "box_target": boxes_t[use].astype(np.float32), "landmark_target": lm_t[use].astype(np.float32),
            "iou": best[use].astype(np.float32), "mined": is_mined[use], "crop_box": crops[use].astype(np.float32),
            "source": np.array([scene.name] * int(use.sum()), dtype=object),
            "left_out": np.array([int((~use).sum())])}


def _side(boxes: np.ndarray) -> np.ndarray:
    """The longer side of each (x1, y1, x2, y2) box."""
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def _rgb(scene: Scene) -> np.ndarray:
    image = read_image(scene.image_path)  # ImageError (a ValueError) naming the file and what is wrong
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def mix(kind: np.ndarray, rng: np.random.Generator, kinds: tuple[int, ...]) -> np.ndarray:
    """Row indices in the paper's ratio over ``kinds`` (3:1:1:2 negative:positive:part:landmark), as many as
    the scarcest kind allows; raises if a kind has no crop at all."""
    counts = {k: int((kind == k).sum()) for k in kinds}
    empty = [KIND_NAMES[k] for k, n in counts.items() if n == 0]
    if empty:
        raise ValueError(f"no {', '.join(empty)} crops to mix (too few faces or scenes for this stage)")
    unit = min(counts[k] // MIX_RATIO[k] for k in kinds)
    if unit == 0:
        raise ValueError(f"too few crops for the {':'.join(str(MIX_RATIO[k]) for k in kinds)} mix: {counts}")
    keep = [rng.choice(np.flatnonzero(kind == k), MIX_RATIO[k] * unit, replace=False) for k in kinds]
    return np.sort(np.concatenate(keep))


def build_split(scenes: list[Scene], stage: str, rng: np.random.Generator, negatives: int, per_face: int,
                proposals: list[np.ndarray] | None = None, label_text: str = "") -> tuple[pa.Table, dict]:
    """All scenes' crops of one split, mixed; the table and its counts (made, kept, left out, per kind)."""
    chunks = []
    for i, scene in enumerate(scenes):
        chunk = scene_samples(rng, scene, stage, None if proposals is None else proposals[i], negatives, per_face)
        chunk["scene"] = np.full(len(chunk["kind"]), i)
        chunks.append(chunk)
        if (i + 1) % 200 == 0:
            print(f"[mtcnn data {stage}] {label_text}{i + 1}/{len(scenes)} scenes", file=sys.stderr, flush=True)
    data = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]} if chunks else {}
    if not data:
        raise ValueError(f"no scenes to make {stage} crops from")
    kinds = (NEGATIVE, POSITIVE, PART) + ((LANDMARK,) if stage == "onet" else ())
    keep = mix(data["kind"], rng, kinds)
    made = {KIND_NAMES[k]: int((data["kind"] == k).sum()) for k in kinds}
    kept = {KIND_NAMES[k]: int((data["kind"][keep] == k).sum()) for k in kinds}
    size = STAGE_SIZE[stage]
    pixels = np.zeros((len(keep), size, size, 3), np.uint8)  # cut only what the mix kept, a scene at a time
    for i in np.unique(data["scene"][keep]):
        rows = np.flatnonzero(data["scene"][keep] == i)
        pixels[rows] = cut(_rgb(scenes[i]), data["crop_box"][keep][rows].astype(np.float64), size)
    table = pa.table({
        "image": pa.array([row.tobytes() for row in pixels], type=pa.binary(size * size * 3)),
        "kind": pa.array(data["kind"][keep], type=pa.int8()),
        "box_target": pa.FixedSizeListArray.from_arrays(pa.array(data["box_target"][keep].reshape(-1)), 4),
        "landmark_target": pa.FixedSizeListArray.from_arrays(pa.array(data["landmark_target"][keep].reshape(-1)), 10),
        "iou": pa.array(data["iou"][keep]),
        "crop_box": pa.FixedSizeListArray.from_arrays(pa.array(data["crop_box"][keep].reshape(-1)), 4),
        "mined": pa.array(data["mined"][keep]),
        "source": pa.array(list(data["source"][keep]), type=pa.string()),
    }).replace_schema_metadata({"stage": stage, "input_size": str(size), "layout": "raw_rgb8_hwc"})
    counts = {"scenes": len(scenes), "made": made, "kept": kept,
              "mined_kept": int(data["mined"][keep].sum()),
              "left_out_iou_0.3_to_0.4": int(data["left_out"].sum()),
              "dropped_by_mix": {k: made[k] - kept[k] for k in made}}
    return table, counts


def write_training_data(scenes_of: Callable[[str], list[Scene]], out_dir: Path, stage: str, seed: int,
                        negatives: int, per_face: int,
                        proposer: Callable[[list[np.ndarray], int], list[np.ndarray]] | None = None,
                        splits: tuple[str, ...] = ("train", "val"), scenes_content_hash: str | None = None) -> dict:
    """``out_dir``/{train,val}.parquet and manifest.json for one stage, written whole or not at all.

    ``scenes_of(split)`` gives a split's scenes (``load_scenes`` or ``read_scenes``): from a prepared WIDER
    set, "train" and "val" are WIDER_train's training and held-out scenes, so no crop comes from the test
    scenes (WIDER_val) the cascade is scored on. ``proposer(images, stage)`` gives the boxes the trained
    earlier stages propose (R-Net: P-Net's, O-Net: P-Net's and R-Net's); P-Net's data needs none. The
    manifest and each file's metadata carry the crops' content hash (``parquet.ContentHash``; its params
    include ``scenes_content_hash``, the prepared scenes' own, when given)."""
    if stage not in STAGE_SIZE:
        raise ValueError(f"unknown MTCNN stage {stage!r}; expected one of {sorted(STAGE_SIZE)}")
    if stage != "pnet" and proposer is None:
        raise ValueError(f"{stage} training data mines the earlier stages' proposals: a proposer is required")
    params = {"stage": stage, "seed": seed, "negatives": negatives, "per_face": per_face, "splits": list(splits),
              "iou": [IOU_NEGATIVE, IOU_PART, IOU_POSITIVE], "mix_ratio": {KIND_NAMES[k]: v for k, v in MIX_RATIO.items()},
              "mined": proposer is not None, "scenes_content_hash": scenes_content_hash}
    manifest: dict = {"stage": stage, "seed": seed, "iou": {
        "negative_below": IOU_NEGATIVE, "part_above": IOU_PART, "positive_above": IOU_POSITIVE},
        "mix_ratio": {KIND_NAMES[k]: v for k, v in MIX_RATIO.items()}, "splits": {}, "params": params,
        "params_hash": hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()}

    def write(tmp: Path) -> None:
        tables = {}
        for index, split in enumerate(splits):
            scenes = scenes_of(split)
            rng = np.random.default_rng([seed, index, STAGE_SIZE[stage]])
            proposals = None
            if proposer is not None:
                proposals = []
                for i in range(0, len(scenes), 16):
                    batch = [cv2.cvtColor(read_image(s.image_path), cv2.COLOR_BGR2RGB)
                             for s in scenes[i:i + 16]]
                    proposals += proposer(batch, 1 if stage == "rnet" else 2)
            try:
                table, counts = build_split(scenes, stage, rng, negatives, per_face, proposals, f"{split}: ")
            except ValueError as exc:
                raise ValueError(f"{stage} crops of the {split!r} scenes ({len(scenes)} scenes, "
                                 f"{sum(len(sc.boxes) for sc in scenes)} faces): {exc}") from exc
            if proposals is not None:
                counts["proposals"] = int(sum(len(p) for p in proposals))
            tables[split] = table
            manifest["splits"][split] = counts
            print(f"[mtcnn data {stage}] {split}: {table.num_rows} crops {counts['kept']}", flush=True)
        hasher = ContentHash(params)
        for split in sorted(tables):
            hasher.add(split, tables[split])
        manifest["content_hash"] = hasher.hexdigest()
        for split, table in tables.items():
            write_table(tmp / f"{split}.parquet", table, {"stage": stage, "split": split,
                                                         "params_hash": manifest["params_hash"],
                                                         "content_hash": manifest["content_hash"]})
        manifest["files"] = file_digests(tmp)
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2) + "\n")

    build_dir(Path(out_dir), write)
    return manifest
