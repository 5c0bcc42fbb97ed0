"""Synthetic WIDER FACE scenes, read back with the official-format reader."""

from __future__ import annotations

import cv2
import numpy as np

from facebench.data.formats.wider import read_bbx_gt
from facebench.data.synth.wider import five_points, synth_wider


def test_scenes_in_the_wider_layout_read_back(tmp_path):
    root = tmp_path / "wider"
    summary = synth_wider(root, n_images=10, seed=3, max_faces=4, min_face=12, max_face=120)
    images = read_bbx_gt(root / "wider_face_split" / "wider_face_val_bbx_gt.txt")
    assert len(images) == 10
    assert sum(len(im.boxes) for im in images) == summary["faces"] > 0
    assert sum(len(im.boxes) == 0 for im in images) == summary["zero_face_images"]
    landmark_lines = (root / "wider_face_split" / "wider_face_val_landmarks.txt").read_text().splitlines()
    assert len(landmark_lines) == summary["faces"]
    by_image: dict[str, list[np.ndarray]] = {}
    for line in landmark_lines:
        path, numbers = line.split("\t")
        by_image.setdefault(path, []).append(np.array(numbers.split(), dtype=float).reshape(5, 2))
    for im in images:
        img = cv2.imread(str(root / "WIDER_val" / "images" / im.path))
        assert img is not None and img.shape == (480, 640, 3)
        pts = by_image.get(im.path, [])
        assert len(pts) == len(im.boxes)
        for box, p in zip(im.boxes, pts):
            assert box[2] >= 6 and box[3] >= 6
            x1, y1, w, h = box
            # the five points sit inside their face's box (rounded to whole pixels in the file)
            assert np.all(p[:, 0] >= x1 - 1) and np.all(p[:, 0] <= x1 + w + 1)
            assert np.all(p[:, 1] >= y1 - 1) and np.all(p[:, 1] <= y1 + h + 1)
            assert p[0, 0] < p[1, 0] and p[3, 0] < p[4, 0] or abs(p[0, 0] - p[1, 0]) < 0.3 * w  # left before right
    again = tmp_path / "again"
    synth_wider(again, n_images=10, seed=3, max_faces=4, min_face=12, max_face=120)
    assert (again / "wider_face_split" / "wider_face_val_bbx_gt.txt").read_bytes() == \
        (root / "wider_face_split" / "wider_face_val_bbx_gt.txt").read_bytes()


def test_five_points_from_the_68_layout():
    lm = np.zeros((68, 2))
    lm[36:42] = [10, 20]
    lm[42:48] = [30, 20]
    lm[30] = [20, 30]
    lm[48], lm[54] = [12, 40], [28, 40]
    np.testing.assert_array_equal(five_points(lm), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])
