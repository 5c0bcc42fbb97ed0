"""A whole cascade on WIDER-format scenes: average precision per subset and O-Net's landmark error.

Real WIDER FACE validation ground truth carries per-face keep lists for easy, medium and hard
(``formats/wider.read_keep_lists``): given them, the subsets are the official ones. Synthetic scenes
have none, so there the subsets are an approximation by face height: easy counts faces of 50 px and more, medium 30 and more, hard all
faces of 10 and more (nested, as WIDER's are); the faces a subset leaves out are ignored, neither
hits nor misses. AP is the official kit's (metrics/detection.py: +1 pixel IoU, scores normalised over the
whole set, 1,000 thresholds, images without faces skipped). The landmark error is O-Net's five points on the faces
the cascade found (IoU >= 0.5), mean point distance over the face box's sqrt(w * h), in %.
"""

from __future__ import annotations

import cv2
import numpy as np

from facebench.data.formats.wider import Scene
from facebench.metrics.detection import ImageDetections, ImageTruth, average_precision, iou_xywh

SUBSET_MIN_HEIGHT = {"easy": 50.0, "medium": 30.0, "hard": 10.0}  # px; ours, for scenes without keep lists


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """Scene boxes (x1, y1, x2, y2 from WIDER's x, y, w, h) back to x, y, w, h."""
    return np.column_stack([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]]) if len(boxes) else np.zeros((0, 4))


def detections_xywh(boxes: np.ndarray) -> np.ndarray:
    """The cascade's boxes as WIDER submission x, y, w, h: its x1, y1 are 1-based and x2, y2 the last
    pixel (``detect.Face``), so the box spans 0-based pixels x1 - 1 .. x2 - 1, which the kit's convention
    (x..x + w inclusive) writes as x = x1 - 1, w = x2 - x1."""
    return np.column_stack([boxes[:, :2] - 1, boxes[:, 2:4] - boxes[:, :2]]) if len(boxes) else np.zeros((0, 4))


def subset_counts(scenes: list[Scene], keep_lists: dict[str, dict[str, np.ndarray]] | None
                  ) -> dict[str, list[np.ndarray]]:
    """Per subset, per scene, which faces count: the official keep lists (by the faces' annotation-file
    index) when given, else the face-height approximation."""
    if keep_lists is not None:
        return {subset: [np.isin(s.face_ids, lists.get(s.name, np.zeros(0, np.int64))) for s in scenes]
                for subset, lists in keep_lists.items()}
    return {subset: [(s.boxes[:, 3] - s.boxes[:, 1]) >= h for s in scenes] for subset, h in SUBSET_MIN_HEIGHT.items()}


def evaluate_cascade(detector, scenes: list[Scene], batch: int = 8,
                     keep_lists: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, float]:
    """AP per subset and landmark NME of ``detector`` (an MTCNNDetector) on ``scenes``; ``keep_lists``
    (``formats.wider.official_keep_lists``) replaces the face-height subsets. ``official_subsets`` in the
    result says which were used (1 or 0)."""
    detections: list[np.ndarray] = []
    for start in range(0, len(scenes), batch):
        images = []
        for scene in scenes[start:start + batch]:
            image = cv2.imread(str(scene.image_path), cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f"{scene.image_path}: image missing or unreadable")
            images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        rows = detector.detect_arrays(images)
        detections += [rows[rows[:, 0] == i, 1:] for i in range(len(images))]
    out: dict[str, float] = {"images": float(len(scenes)), "official_subsets": float(keep_lists is not None),
                             "detections": float(sum(len(d) for d in detections))}
    dets = [ImageDetections(detections_xywh(d[:, :4]), d[:, 4]) for d in detections]
    for subset, counts in subset_counts(scenes, keep_lists).items():
        truths = [ImageTruth(_xywh(s.boxes), c) for s, c in zip(scenes, counts)]
        if sum(int(t.counts.sum()) for t in truths) == 0:
            continue
        out[f"ap_{subset}"] = float(average_precision(dets, truths)["ap"])
        out[f"faces_{subset}"] = float(sum(int(t.counts.sum()) for t in truths))
    errors = []
    for scene, det in zip(scenes, detections):
        known = np.isfinite(scene.landmarks).all(axis=(1, 2))
        if not len(det) or not known.any():
            continue
        overlap = iou_xywh(_xywh(scene.boxes), detections_xywh(det[:, :4]))
        for face in np.flatnonzero(known):
            best = int(overlap[face].argmax())
            if overlap[face, best] < 0.5:
                continue
            box = scene.boxes[face]
            size = np.sqrt((box[2] - box[0]) * (box[3] - box[1]))
            points = det[best, 5:15].reshape(5, 2)
            errors.append(float(np.linalg.norm(points - scene.landmarks[face], axis=1).mean() / size))
    if errors:
        out["landmark_nme"] = float(np.mean(errors))
        out["landmark_faces"] = float(len(errors))
    return out
