"""Synthetic WIDER FACE scenes: several faces per image at many scales on cluttered backgrounds.

Written in the official layout (datasets.md §5), so ``formats/wider.py`` reads them as it reads the
real set:
* ``WIDER_<split>/images/<k>--<Event>/<k>_<Event>_synth_<n>.jpg``
* ``wider_face_split/wider_face_<split>_bbx_gt.txt``: path, face count, ``x1 y1 w h blur expression
  illumination invalid occlusion pose`` per face (the zero-face image with its all-zero line included)
* ``wider_face_split/wider_face_<split>_landmarks.txt`` (ours; WIDER has no landmarks): per face of the
  same file, in the same order, ``path<TAB>x1 y1 ... x5 y5`` with the five points MTCNN predicts (image-left
  eye, image-right eye, nose tip, left and right mouth corners), for the landmark task.

Face widths are log-uniform between ``min_face`` and ``max_face`` pixels, so tiny faces are as common
as large ones on a log scale, like WIDER's hard subset. Attributes say what was done to a face:
``occlusion`` 1 (partial) or 2 (heavy) when an occluder covers it, ``blur`` 1 or 2 when its region
was blurred (2 also for faces under 16 px, which WIDER annotators mark heavy), ``pose`` 1 beyond 45
degrees of yaw; ``expression``, ``illumination`` and ``invalid`` stay 0.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from facebench.atomic import build_dir
from facebench.data.synth import face3d
from facebench.data.synth.faces import (
    AFLW, JPEG_QUALITY, background, occluder, sample_expression, sample_identity, sample_pose, sample_style,
)

EVENTS = ("0--Parade", "1--Handshaking", "2--Demonstration", "3--Riot", "4--Dancing", "5--Car_Accident")
# The five points from the 68-point layout: eye centres (contour means), nose tip, mouth corners.
LEFT_EYE, RIGHT_EYE, NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT = slice(36, 42), slice(42, 48), 30, 48, 54


def five_points(lm68: np.ndarray) -> np.ndarray:
    """(68, 2) -> (5, 2): image-left eye, image-right eye, nose tip, image-left and -right mouth corners."""
    return np.stack([lm68[LEFT_EYE].mean(0), lm68[RIGHT_EYE].mean(0), lm68[NOSE_TIP], lm68[MOUTH_LEFT],
                     lm68[MOUTH_RIGHT]])


def face_box(lm68: np.ndarray) -> np.ndarray:
    """x1, y1, w, h: the 68 points' extent with the forehead added (a quarter of the chin-to-brow
    height above the brows), as WIDER annotators box the whole face."""
    x1, y1 = lm68.min(0)
    x2, y2 = lm68.max(0)
    y1 -= 0.25 * (y2 - y1)
    return np.array([x1, y1, x2 - x1, y2 - y1])


def _overlaps(box: np.ndarray, others: list[np.ndarray], limit: float = 0.2) -> bool:
    for o in others:
        w = min(box[0] + box[2], o[0] + o[2]) - max(box[0], o[0])
        h = min(box[1] + box[3], o[1] + o[3]) - max(box[1], o[1])
        if w > 0 and h > 0 and w * h > limit * min(box[2] * box[3], o[2] * o[3]):
            return True
    return False


def render_wider_scene(rng: np.random.Generator, width: int, height: int, max_faces: int, min_face: float,
                       max_face: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One scene: BGR image, boxes (n, 4) x1 y1 w h, attributes (n, 6), five points (n, 5, 2)."""
    img = np.ascontiguousarray(background(rng, max(width, height))[:height, :width])
    boxes, attrs, points = [], [], []
    for _ in range(int(rng.integers(0, max_faces + 1))):
        face_px = float(np.exp(rng.uniform(np.log(min_face), np.log(max_face))))
        identity = sample_identity(rng)
        expression = sample_expression(rng, 0.6)
        shape = face3d.face_shape(identity, expression)
        pose = sample_pose(rng, AFLW, 256)
        pose = replace(pose, scale=face_px / 2.0, cx=rng.uniform(0.05, 0.95) * width, cy=rng.uniform(0.08, 0.95) * height)
        lm68, _ = face3d.project(shape.landmarks, pose)
        box = face_box(lm68)
        inside = box[0] >= 0 and box[1] >= 0 and box[0] + box[2] <= width - 1 and box[1] + box[3] <= height - 1
        if not inside or _overlaps(box, boxes):
            continue  # a face cut by the border or hidden behind another is not drawn at all
        face3d.render_face(img, shape, pose, sample_style(rng))
        blur = 2 if box[2] < 16 else 0
        if rng.random() < 0.25:  # blur the face's region
            x1, y1 = int(box[0]), int(box[1])
            x2, y2 = int(np.ceil(box[0] + box[2])) + 1, int(np.ceil(box[1] + box[3])) + 1
            sigma = rng.uniform(0.04, 0.12) * box[2]
            img[y1:y2, x1:x2] = cv2.GaussianBlur(img[y1:y2, x1:x2], (0, 0), max(sigma, 0.5))
            blur = max(blur, 2 if sigma > 0.08 * box[2] else 1)
        occlusion = 0
        if rng.random() < 0.2:
            mask = occluder(rng, img, lm68, face_px, (120.0, 140.0, 180.0))
            x1, y1 = int(box[0]), int(box[1])
            covered = float(np.mean(mask[y1:y1 + int(box[3]) + 1, x1:x1 + int(box[2]) + 1] > 0))
            occlusion = 0 if covered < 0.02 else (2 if covered > 0.35 else 1)
        boxes.append(box)
        attrs.append([blur, 0, 0, 0, occlusion, int(abs(pose.yaw) > 45.0)])
        points.append(five_points(lm68))
    return (img, np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(attrs, np.int64).reshape(-1, 6),
            np.asarray(points, np.float64).reshape(-1, 5, 2))


def synth_wider(root: Path, n_images: int | dict[str, int], seed: int, split: str = "val", width: int = 640,
                height: int = 480, max_faces: int = 6, min_face: float = 10.0, max_face: float = 200.0) -> dict:
    """Write scenes under ``root`` in the WIDER FACE layout (whole or not at all): ``n_images`` of ``split``,
    or a dict split -> image count for several splits (each split draws from its own random stream)."""
    counts_in = n_images if isinstance(n_images, dict) else {split: n_images}
    summary: dict = {"format": "wider", "root": str(root), "seed": int(seed), "splits": {}}

    def write(tmp: Path) -> None:
        for index, (name, n) in enumerate(sorted(counts_in.items())):
            rng = np.random.default_rng([seed, 0x51DE] + ([] if len(counts_in) == 1 else [index]))
            summary["splits"][name] = _write_split(tmp, name, int(n), rng, width, height, max_faces, min_face,
                                                   max_face)

    build_dir(Path(root), write)
    if len(counts_in) == 1:  # the single-split summary, as before: split, images, faces, zero_face_images
        ((name, counts),) = summary.pop("splits").items()
        summary.update({"split": name, **counts})
    return summary


def _write_split(tmp: Path, split: str, n_images: int, rng: np.random.Generator, width: int, height: int,
                 max_faces: int, min_face: float, max_face: float) -> dict:
    counts = {"images": n_images, "faces": 0, "zero_face_images": 0}
    gt_lines, lm_lines = [], []
    for k in range(n_images):
        event = EVENTS[k % len(EVENTS)]
        rel = f"{event}/{event.replace('--', '_')}_synth_{k}.jpg"
        img, boxes, attrs, pts = render_wider_scene(rng, width, height, max_faces, min_face, max_face)
        out = tmp / f"WIDER_{split}" / "images" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok
        out.write_bytes(buf.tobytes())
        gt_lines += [rel, str(len(boxes))]
        if len(boxes) == 0:
            gt_lines.append("0 0 0 0 0 0 0 0 0 0 ")
            counts["zero_face_images"] += 1
        for box, attr, p in zip(boxes, attrs, pts):
            x1, y1, w, h = (int(round(v)) for v in box)  # WIDER boxes are integers
            gt_lines.append(" ".join(str(v) for v in (x1, y1, w, h, *attr)) + " ")
            lm_lines.append(rel + "\t" + " ".join(f"{v:.2f}" for v in p.reshape(-1)))
        counts["faces"] += len(boxes)
        if (k + 1) % 100 == 0:
            print(f"[synth wider] {split}: {k + 1}/{n_images} images", file=sys.stderr, flush=True)
    split_dir = tmp / "wider_face_split"
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / f"wider_face_{split}_bbx_gt.txt").write_text("\n".join(gt_lines) + "\n")
    (split_dir / f"wider_face_{split}_landmarks.txt").write_text("\n".join(lm_lines) + ("\n" if lm_lines else ""))
    return counts
