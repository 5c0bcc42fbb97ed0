"""5-point face alignment for recognition: a similarity transform from detected landmarks to a template.

The templates are the ones the recognition papers crop with (shared/datasets.md §3.3; point order left eye,
right eye, nose, left mouth corner, right mouth corner, image-left first, as MTCNN gives them):

- SphereFace / CosFace ``coord5point``: 96 wide x 112 high (wy1iu/sphereface face_align_demo.m);
- ArcFace ``arcface_src``: 112 x 112, the same points shifted 8 px right (insightface face_align.py).

The transform is a least-squares similarity (rotation, uniform scale, translation; no reflection and no
shear, so faces are never mirrored or distorted) in closed form after Umeyama (IEEE TPAMI 1991), the
fit that skimage's ``SimilarityTransform`` / MATLAB's ``cp2tform(..., 'similarity')`` perform. Coordinates
are 0-based pixel coordinates (pixel centres at integers, ``cv2.warpAffine``'s grid), as in InsightFace;
SphereFace's MATLAB code uses a 1-based grid, a 1-pixel difference that only needs to be the same at
training and test time.
"""

from __future__ import annotations

import cv2
import numpy as np

SPHEREFACE_112x96 = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                              [33.5493, 92.3655], [62.7299, 92.2041]], dtype=np.float64)
ARCFACE_112x112 = SPHEREFACE_112x96 + np.array([8.0, 0.0])

# name -> (points, (height, width)); names are height x width as in "CASIA-WebFace-112X96"
TEMPLATES: dict[str, tuple[np.ndarray, tuple[int, int]]] = {
    "112x96": (SPHEREFACE_112x96, (112, 96)),
    "112x112": (ARCFACE_112x112, (112, 112)),
}


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix M = [s R | t] minimising sum ||dst_i - (s R src_i + t)||^2 with R a rotation.

    Umeyama's solution: R from the SVD of the cross-covariance, with the last singular direction flipped
    when the best orthogonal fit would be a reflection; s = trace(D S) / variance(src).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two matching (K>=2, 2) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc ** 2).sum() / len(src)
    if var_s <= 0:
        raise ValueError("source points are all identical; no transform is defined")
    cov = dc.T @ sc / len(src)
    u, d, vt = np.linalg.svd(cov)
    flip = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        flip[1, 1] = -1.0
    rot = u @ flip @ vt
    scale = np.trace(np.diag(d) @ flip) / var_s
    t = mu_d - scale * rot @ mu_s
    return np.concatenate([scale * rot, t[:, None]], axis=1)


def alignment_matrix(landmarks5: np.ndarray, template: str = "112x96") -> np.ndarray:
    """The 2x3 matrix taking image coordinates to the template crop's."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose from {sorted(TEMPLATES)}")
    landmarks5 = np.asarray(landmarks5, dtype=np.float64).reshape(-1, 2)
    if landmarks5.shape != (5, 2):
        raise ValueError(f"need 5 landmarks (5, 2), got {landmarks5.shape}")
    return similarity_transform(landmarks5, TEMPLATES[template][0])


def align_face(image: np.ndarray, landmarks5: np.ndarray, template: str = "112x96",
               border_value: int | tuple[int, ...] = 0) -> np.ndarray:
    """The face warped onto the template: (112, 96, C) or (112, 112, C), same dtype as ``image``."""
    matrix = alignment_matrix(landmarks5, template)
    height, width = TEMPLATES[template][1]
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)
