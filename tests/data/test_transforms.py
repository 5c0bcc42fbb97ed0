"""Batched augmentation keeps landmarks on the pixels they annotate; the resize convention is exact."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from facebench.data.transforms import (Augment, LandmarkBatchTransform, apply_affine, gaussian_blur,
                                       random_similarity, resize_matrix, transform_points, warp_crops)


def _blob_image(size: int, points: list[tuple[float, float]]) -> np.ndarray:
    """A dark uint8 RGB image with a Gaussian blob per point, each in its own colour channel."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.zeros((size, size, 3), np.float64)
    for c, (x, y) in enumerate(points):
        img[..., c] += 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0 ** 2))
    return img.astype(np.uint8)


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


def test_warp_matches_opencv_warp_affine():
    """grid_sample with our pixel-centre grid samples the points cv2.warpAffine samples."""
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (96, 96, 3)).astype(np.uint8), (0, 0), 2.0)
    m = cv2.getRotationMatrix2D((40.0, 50.0), 17.0, 0.6)
    m[:, 2] += [3.25, -2.5]
    expected = cv2.warpAffine(img, m, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    got = warp_crops(torch.from_numpy(img)[None], torch.tensor(m, dtype=torch.float32)[None], 48)
    got = got[0].permute(1, 2, 0).numpy()
    # OpenCV interpolates with 5-bit fixed-point weights, so allow a couple of grey levels
    assert np.abs(got - expected).max() <= 2.5


def test_random_similarity_matches_opencv_rotation_matrix():
    aug = Augment(max_rotation=30.0, max_scale=0.1, max_shift=0.0)
    gen = torch.Generator().manual_seed(3)
    m = random_similarity(1, 64, aug, torch.device("cpu"), gen)[0].double().numpy()
    scale = np.sqrt(np.linalg.det(m[:, :2]))
    angle = np.degrees(np.arctan2(m[0, 1], m[0, 0]))
    np.testing.assert_allclose(m, cv2.getRotationMatrix2D((31.5, 31.5), angle, scale), atol=1e-5)


def test_gaussian_blur_matches_opencv_and_sigma_zero_is_identity():
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 255, (2, 3, 32, 32)).astype(np.float32)
    out = gaussian_blur(torch.from_numpy(img), torch.tensor([1.2, 0.0])).numpy()
    np.testing.assert_array_equal(out[1], img[1])
    ksize = 2 * int(np.ceil(3 * 1.2)) + 1
    expected = cv2.GaussianBlur(img[0].transpose(1, 2, 0), (ksize, ksize), 1.2, borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_allclose(out[0].transpose(1, 2, 0), expected, atol=1e-2)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("flipped", [False, True])
def test_augmented_landmarks_follow_pixels_with_flip_permutation(seed, flipped):
    points = [(40.0, 50.0), (88.0, 52.0), (64.0, 90.0)]  # image-left eye, image-right eye, mouth
    flip = [1, 0, 2]  # mirroring swaps the two eyes
    augment = Augment(colour=0.0, blur_prob=0.0, flip_prob=1.0 if flipped else 0.0)
    transform = LandmarkBatchTransform(64, flip, augment, generator=torch.Generator().manual_seed(seed))
    images = torch.from_numpy(_blob_image(128, points))[None]
    landmarks = torch.tensor(points, dtype=torch.float32).reshape(1, -1)
    out = transform(images, landmarks, torch.tensor([10.0]))
    img = ((out["image"][0] + 1.0) * 127.5).numpy()  # (3, 64, 64)
    pts = out["landmarks"][0].reshape(-1, 2).numpy()
    assert pts[0, 0] < pts[1, 0]  # with the permutation, landmark 0 stays the image-left eye
    for i in range(3):  # after a flip, landmark i sits on the mirrored blob of original point flip[i]
        channel = img[flip[i] if flipped else i]
        np.testing.assert_allclose(_centroid(channel), pts[i], atol=0.6)
    assert float(out["norm"][0]) == pytest.approx(10.0 * 0.5, rel=0.06)  # scale jitter is at most 5%


def test_without_augmentation_it_only_resizes():
    """Test-time path: crop pixels -> input pixels by the resize convention, image = area-consistent resize."""
    points = torch.tensor([[0.0, 0.0, 127.0, 63.5]])
    images = torch.full((1, 128, 128, 3), 200, dtype=torch.uint8)
    out = LandmarkBatchTransform(64, None, None)(images, points, torch.tensor([8.0]))
    np.testing.assert_allclose(out["landmarks"].numpy(), [[-0.25, -0.25, 63.25, 31.5]], atol=1e-5)
    np.testing.assert_allclose(out["image"].numpy(), 200 / 127.5 - 1.0, atol=1e-5)
    assert float(out["norm"][0]) == pytest.approx(4.0)


def test_transform_points_is_the_numpy_affine():
    rng = np.random.default_rng(2)
    pts, m = rng.normal(size=(5, 2)), rng.normal(size=(2, 3))
    got = transform_points(torch.tensor(pts)[None], torch.tensor(m)[None])[0].numpy()
    np.testing.assert_allclose(got, apply_affine(pts, m), atol=1e-12)


def test_flipping_twice_is_identity():
    from facebench.data.landmark_layouts import AFLW19_FLIP, W300_FLIP

    for perm in (W300_FLIP, AFLW19_FLIP):
        perm = np.asarray(perm)
        assert sorted(perm.tolist()) == list(range(len(perm)))
        np.testing.assert_array_equal(perm[perm], np.arange(len(perm)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_device_transform_on_cuda_matches_cpu():
    """Training warps batches where the model runs: the GPU result must be the CPU one."""
    rng = np.random.default_rng(4)
    images = torch.from_numpy(rng.integers(0, 256, (8, 128, 128, 3), dtype=np.uint8))
    points = torch.from_numpy(rng.uniform(20, 100, (8, 10)).astype(np.float32))
    m = random_similarity(8, 64, Augment(), torch.device("cpu"), torch.Generator().manual_seed(0))
    cpu = warp_crops(images, m, 64)
    gpu = warp_crops(images.cuda(), m.cuda(), 64).cpu()
    assert (cpu - gpu).abs().max() < 1e-2
    out = LandmarkBatchTransform(64, list(range(5))[::-1], Augment())(images.cuda(), points.cuda(),
                                                                         torch.ones(8, device="cuda"))
    assert out["image"].is_cuda and out["image"].shape == (8, 3, 64, 64)
    assert torch.isfinite(out["landmarks"]).all() and out["image"].abs().max() <= 1.0


def test_invert_affine_is_the_matrix_inverse():
    from facebench.data.transforms import compose, invert_affine

    m = random_similarity(4, 64, Augment(), torch.device("cpu"), torch.Generator().manual_seed(1)).double()
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64).expand(4, 2, 3)
    torch.testing.assert_close(compose(invert_affine(m), m), identity)
