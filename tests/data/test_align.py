"""5-point similarity alignment: exact recovery of a known transform, no reflections, template landing."""

from __future__ import annotations

import numpy as np
import pytest

from facebench.data.align import (
    ARCFACE_112x112,
    SPHEREFACE_112x96,
    TEMPLATES,
    align_face,
    alignment_matrix,
    similarity_transform,
)
from facebench.data.transforms import apply_affine


def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.concatenate([scale * rot, [[tx], [ty]]], axis=1)


def test_templates_match_datasets_md():
    assert SPHEREFACE_112x96[0] == pytest.approx([30.2946, 51.6963])
    assert SPHEREFACE_112x96[4] == pytest.approx([62.7299, 92.2041])
    assert np.allclose(ARCFACE_112x112 - SPHEREFACE_112x96, [[8, 0]] * 5)
    assert TEMPLATES["112x96"][1] == (112, 96) and TEMPLATES["112x112"][1] == (112, 112)


@pytest.mark.parametrize("scale,angle,tx,ty", [(1.0, 0.0, 0.0, 0.0), (0.37, 23.0, -40.0, 12.5),
                                                (2.5, -170.0, 300.0, -80.0)])
def test_recovers_known_similarity_exactly(scale, angle, tx, ty):
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 200, (5, 2))
    want = similarity(scale, angle, tx, ty)
    got = similarity_transform(src, apply_affine(src, want))
    assert np.allclose(got, want, atol=1e-9)


def test_least_squares_with_noise_beats_perturbations():
    rng = np.random.default_rng(4)
    src = rng.uniform(0, 100, (5, 2))
    dst = apply_affine(src, similarity(1.3, 10, 5, -7)) + rng.normal(0, 1.0, (5, 2))
    m = similarity_transform(src, dst)
    best = ((apply_affine(src, m) - dst) ** 2).sum()
    for _ in range(20):  # any nearby similarity fits worse
        s, a, tx, ty = 1.3 + rng.normal(0, 0.02), 10 + rng.normal(0, 1), 5 + rng.normal(0, 0.5), -7 + rng.normal(0, .5)
        assert ((apply_affine(src, similarity(s, a, tx, ty)) - dst) ** 2).sum() >= best - 1e-9


def test_no_reflection_for_mirrored_points():
    src = SPHEREFACE_112x96.copy()
    dst = src * np.array([-1.0, 1.0])  # a mirror image: the best similarity must stay a rotation
    m = similarity_transform(src, dst)
    assert np.linalg.det(m[:, :2]) > 0


def test_landmarks_map_onto_template():
    m_true = similarity(2.0, 15.0, 130.0, 70.0)
    for name, (points, _) in TEMPLATES.items():
        # landmarks of a face in a big image = the template pushed through a known similarity
        landmarks = apply_affine(points, m_true)
        assert np.allclose(apply_affine(landmarks, alignment_matrix(landmarks, name)), points, atol=1e-9)


@pytest.mark.parametrize("template", ["112x96", "112x112"])
def test_align_face_puts_landmark_pixels_on_template(template):
    points, (height, width) = TEMPLATES[template]
    m_true = similarity(2.2, -12.0, 140.0, 90.0)
    landmarks = apply_affine(points, m_true)
    image = np.zeros((500, 500, 3), np.uint8)
    for x, y in landmarks:  # a bright blob at each landmark
        yy, xx = np.mgrid[0:500, 0:500]
        image[(xx - x) ** 2 + (yy - y) ** 2 <= 9] = 255
    out = align_face(image, landmarks, template)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
    gray = out[:, :, 0].astype(float)
    for x, y in points:  # centroid of the blob near each template point
        x0, y0 = int(round(x)), int(round(y))
        win = gray[y0 - 4:y0 + 5, x0 - 4:x0 + 5]
        yy, xx = np.mgrid[y0 - 4:y0 + 5, x0 - 4:x0 + 5]
        cx, cy = (win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()
        assert abs(cx - x) < 0.5 and abs(cy - y) < 0.5


def test_bad_inputs():
    with pytest.raises(ValueError):
        alignment_matrix(np.zeros((4, 2)))
    with pytest.raises(ValueError):
        alignment_matrix(np.zeros((5, 2)), "128x128")
    with pytest.raises(ValueError):
        similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))
