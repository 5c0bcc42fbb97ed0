"""Augmentation keeps landmarks on the pixels they annotate; the resize convention is exact."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facebench.data.transforms import Augment, LandmarkBatchTransform, apply_affine, resize_matrix


def _blob_image(size: int, points: list[tuple[float, float]]) -> bytes:
    """A dark image with a Gaussian blob per point, each in its own colour channel."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.zeros((size, size, 3), np.float64)
    for c, (x, y) in enumerate(points):
        img[..., c] += 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0 ** 2))
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def _centroid(channel: np.ndarray) -> np.ndarray:
    w = np.clip(channel - channel.max() * 0.5, 0, None)
    yy, xx = np.mgrid[0:channel.shape[0], 0:channel.shape[1]]
    return np.array([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])


def test_resize_matrix_maps_pixel_centres():
    m = resize_matrix(128, 64)
    # pixel centre 0 and 127 of the source map to the edges' centres -0.25 and 63.25
    np.testing.assert_allclose(apply_affine(np.array([[0.0, 127.0]]), m), [[-0.25, 63.25]])
    # the image centre stays the centre
    np.testing.assert_allclose(apply_affine(np.array([[63.5, 63.5]]), m), [[31.5, 31.5]])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("flipped", [False, True])
def test_augmented_landmarks_follow_pixels_with_flip_permutation(seed, flipped):
    points = [(40.0, 50.0), (88.0, 52.0), (64.0, 90.0)]  # image-left eye, image-right eye, mouth
    flip = [1, 0, 2]  # mirroring swaps the two eyes
    augment = Augment(colour=0.0, blur_prob=0.0, flip_prob=1.0 if flipped else 0.0)
    transform = LandmarkBatchTransform(64, flip, augment, seed=seed)
    batch = {"image": np.array([_blob_image(128, points)], dtype=object),
             "landmarks": np.array([np.array(points, np.float32).reshape(-1)], dtype=object),
             "norm": np.array([10.0])}
    out = transform(batch)
    img = (out["image"][0] + 1.0) * 127.5  # (3, 64, 64)
    pts = out["landmarks"][0].reshape(-1, 2)
    assert pts[0, 0] < pts[1, 0]  # with the permutation, landmark 0 stays the image-left eye
    for i in range(3):  # after a flip, landmark i sits on the mirrored blob of original point flip[i]
        channel = img[flip[i] if flipped else i]
        np.testing.assert_allclose(_centroid(channel), pts[i], atol=0.6)
    assert out["norm"][0] == pytest.approx(10.0 * 0.5, rel=0.06)  # scale jitter is at most 5%


def test_flipping_twice_is_identity():
    from facebench.data.landmark_layouts import AFLW19_FLIP, W300_FLIP

    for perm in (W300_FLIP, AFLW19_FLIP):
        perm = np.asarray(perm)
        assert sorted(perm.tolist()) == list(range(len(perm)))
        np.testing.assert_array_equal(perm[perm], np.arange(len(perm)))
