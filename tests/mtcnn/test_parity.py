"""facebench's cascade against the reference implementation, facenet-pytorch 2.6.0, with the same published
weights and settings (min face 20, thresholds 0.6 / 0.7 / 0.7, factor 0.709).

Whole cascade: the same faces one to one, box IoU >= 0.98, every landmark within 1% of the box side, scores
within 1e-3 (issue 20's tolerances), on the astronaut photograph, on synthetic WIDER-format scenes (faces of
12 to 300 px, several per image, faces cut by the border, frames without faces) and on batches of mixed
sizes. Step by step: pyramid levels, crops, box generation, calibration, squaring and the last NMS against
the reference's own functions, bit for bit where the arithmetic is the same.

Where the batched path cannot be bit-exact: R-Net and O-Net run on channels-last crops (the reference's
crops are channels-first, whose max-pooling is several times slower on a CPU), and a batch runs each network
on several images at once; float32 convolutions then round differently in the last bit (scores differ by
~1e-6), which is why the whole-cascade checks use tolerances.

facenet-pytorch is a test-only peer (``make setup`` installs it with ``--no-deps``); torchvision, which it
imports, is stood in for by ``facebench.papers.mtcnn.reference``. Without facenet-pytorch these tests skip.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from facebench.papers.mtcnn.reference import (
    IOU_MIN, LANDMARK_FRACTION, SCORE_TOL, agreement, install_torchvision_stand_in, load_reference, reference_detect,
    reference_rows,
)

install_torchvision_stand_in()
pytest.importorskip("facenet_pytorch", reason="the reference MTCNN (make setup installs facenet-pytorch 2.6.0)")
ref_steps = importlib.import_module("facenet_pytorch.models.utils.detect_face")

from facebench.data.formats.wider import read_scenes  # noqa: E402
from facebench.data.synth.wider import synth_wider  # noqa: E402
from facebench.papers.mtcnn import MTCNNDetector  # noqa: E402
from facebench.papers.mtcnn.boxes import calibrate, nms, square  # noqa: E402
from facebench.papers.mtcnn.detect import cell_boxes, pyramid_scales  # noqa: E402
from facebench.papers.mtcnn.model import load_published  # noqa: E402

SHARED = Path(__file__).resolve().parents[3] / "shared"
WEIGHTS = SHARED / "models" / "mtcnn-published"
ASTRONAUT = SHARED / "images" / "astronaut.png"

pytestmark = pytest.mark.skipif(not (WEIGHTS / "onet.pt").is_file() or not ASTRONAUT.is_file(),
                                reason="published MTCNN weights / test image not available")

def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def reference():
    return load_reference("cpu")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return rgb(ASTRONAUT)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[np.ndarray]:
    """Synthetic WIDER-format scenes (faces 12-300 px), then frames cut from them so that faces cross the
    left, top, right or bottom border, and two frames without any face."""
    root = tmp_path_factory.mktemp("wider")
    synth_wider(root, {"val": 14}, seed=20, min_face=12, max_face=300)
    images = [rgb(s.image_path) for s in read_scenes(root, "val")]
    boxes = [s.boxes for s in read_scenes(root, "val")]
    cut = []
    for k, (im, bx) in enumerate(zip(images, boxes)):
        if not len(bx):
            continue
        x1, y1, x2, y2 = bx[np.argmax(bx[:, 2] - bx[:, 0])].astype(int)
        h, w = im.shape[:2]
        side = k % 4  # cut through 30% of the biggest face on one side
        if side == 0:
            cut.append(im[:, x1 + (x2 - x1) * 3 // 10:])
        elif side == 1:
            cut.append(im[y1 + (y2 - y1) * 3 // 10:])
        elif side == 2:
            cut.append(im[:, :x2 - (x2 - x1) * 3 // 10])
        else:
            cut.append(im[:y2 - (y2 - y1) * 3 // 10])
    rng = np.random.default_rng(0)
    empty = [np.full((480, 640, 3), 128, np.uint8), rng.integers(0, 256, (360, 500, 3), dtype=np.uint8)]
    return images + [np.ascontiguousarray(c) for c in cut if min(c.shape[:2]) >= 20] + empty


def assert_parity(ours: np.ndarray, ref: np.ndarray, n_images: int) -> dict:
    """Same faces one to one per image, IoU >= 0.98, landmarks within 1% of the reference box's longer side,
    scores within 1e-3 (``reference.agreement``). Returns the agreement, with the worst deviations seen."""
    check = agreement(ours, ref, n_images)
    for i in check["count_mismatch"]:
        a, b = ours[ours[:, 0] == i], ref[ref[:, 0] == i]
        pytest.fail(f"image {i}: facebench {len(a)} faces, reference {len(b)}:\n{a[:, 1:6]}\n{b[:, 1:6]}")
    bad = check["pairs"][(check["pairs"][:, 1] < IOU_MIN) | (check["pairs"][:, 2] > LANDMARK_FRACTION)
                         | (check["pairs"][:, 3] > SCORE_TOL)]
    assert check["agreeing"] == len(ref), f"pairs outside the tolerances (image, IoU, landmark, score):\n{bad}"
    return check


# ---------------------------------------------------------------------- whole cascade


def test_astronaut_same_single_face(reference, astronaut):
    ref = reference_detect(reference, [astronaut])
    ours = MTCNNDetector(WEIGHTS).detect_arrays([astronaut])
    assert len(ref) == 1  # the reference finds one face; the collar false positive of issue 20 is gone
    worst = assert_parity(ours, ref, 1)
    assert worst["worst_iou"] > 0.9999 and worst["worst_score"] < 1e-5  # the same arithmetic


def test_synthetic_scenes_one_image_at_a_time(reference, scenes):
    detector = MTCNNDetector(WEIGHTS)
    ours, ref = [], []
    for i, image in enumerate(scenes):
        for rows, out in ((detector.detect_arrays([image]), ours), (reference_detect(reference, [image]), ref)):
            rows[:, 0] = i
            out.append(rows)
    ours, ref = np.concatenate(ours), np.concatenate(ref)
    worst = assert_parity(ours, ref, len(scenes))
    # the scenes exercise what they are meant to: many faces, some crossing the border, empty frames
    heights = np.array([im.shape[0] for im in scenes])[ref[:, 0].astype(int)]
    widths = np.array([im.shape[1] for im in scenes])[ref[:, 0].astype(int)]
    outside = (ref[:, 1] < 1) | (ref[:, 2] < 1) | (ref[:, 3] > widths) | (ref[:, 4] > heights)
    assert worst["agreeing"] >= 20 and outside.sum() >= 2
    assert len(set(range(len(scenes))) - set(ref[:, 0].astype(int))) >= 3
    sides = ref[:, 3] - ref[:, 1]
    assert sides.min() < 25 and sides.max() > 150  # small and large faces


def test_mixed_size_batches(reference, scenes, astronaut):
    """One facebench call on images of different sizes (some without faces) == the reference per image."""
    detector = MTCNNDetector(WEIGHTS)
    batches = [scenes[:3] + [scenes[-1]] + [astronaut] + [scenes[-2][:200, :300]],
               [np.ascontiguousarray(s[::2, ::2]) for s in scenes[3:7]] + scenes[7:9] + scenes[14:17]]
    for images in batches:
        assert len({im.shape for im in images}) > 2
        assert_parity(detector.detect_arrays(images), reference_detect(reference, images), len(images))
    # equal sizes batched on both sides: the reference's own batching
    same = scenes[:6]
    assert_parity(detector.detect_arrays(same), reference_detect_batch(reference, same), len(same))


def reference_detect_batch(reference, images: list[np.ndarray]) -> np.ndarray:
    return reference_rows(reference, np.stack(images))


def test_graph_path_on_cpu_matches_reference(reference, scenes):
    """The CUDA-graph code path (static buffers, box buckets) run on a CPU: still the reference's faces."""
    graphed = MTCNNDetector(WEIGHTS)
    graphed.cuda_graphs = True
    for images in (scenes[:2], scenes[2:3], scenes[:2], scenes[3:4]):
        assert_parity(graphed.detect_arrays(images), reference_detect_batch(reference, images), len(images))
    assert any(key[0] == 3 for key in graphed._graphs)


def test_pad_border_option_zero_pads_like_the_authors(astronaut):
    """border='pad': a box leaving the image is cropped with black outside it (the authors' pad.m); the
    crop equals the area resampling of an explicitly zero-padded array. border='clip' stretches the
    in-image part, which is the reference's resampling of the clipped region."""
    det = MTCNNDetector(WEIGHTS, border="pad")
    image = astronaut[:300, :400]
    box = torch.tensor([[-20.7, 30.2, 60.9, 111.8], [100.0, 250.0, 180.0, 330.0]])  # left and bottom out
    src = det._sources([(torch.tensor([0]), det._summed_area(torch.from_numpy(image)[None]))])
    crops, valid = det._crops(src, box, torch.tensor([0, 0]), 24)
    assert valid.all()
    for k, (x, y, ex, ey) in enumerate(box.trunc().long().tolist()):
        canvas = np.zeros((ey - y + 1, ex - x + 1, 3), np.float32)
        ys, xs = slice(max(y - 1, 0), min(ey, 300)), slice(max(x - 1, 0), min(ex, 400))
        canvas[ys.start - (y - 1):ys.stop - (y - 1), xs.start - (x - 1):xs.stop - (x - 1)] = image[ys, xs]
        want = F.interpolate(torch.from_numpy(canvas).permute(2, 0, 1)[None], size=(24, 24), mode="area")
        assert torch.equal(crops[k:k + 1], (want - 127.5) * 0.0078125)
    clip = MTCNNDetector(WEIGHTS)._crops(src, box, torch.tensor([0, 0]), 24)[0]
    assert not torch.equal(clip, crops)


# ---------------------------------------------------------------------- step by step


def test_wider_preset_matches_the_reference_with_the_same_settings(scenes):
    """The WIDER preset (min face 10: the first level upsamples the image; factor 0.79; thresholds
    0.5 / 0.5 / 0.3), against the reference given the same settings."""
    reference = load_reference("cpu", min_face=10, factor=0.79, thresholds=(0.5, 0.5, 0.3))
    images = scenes[:3] + scenes[-3:-1]
    ours = MTCNNDetector.wider(WEIGHTS).detect_arrays(images)
    check = assert_parity(ours, reference_detect(reference, images), len(images))
    assert check["agreeing"] >= 5


@pytest.mark.parametrize("min_face", [20, 10])
def test_pyramid_levels_are_the_reference_resampling(scenes, monkeypatch, min_face):
    """The reference's pyramid (sizes and area-resampled pixels, recorded as it runs) == ours, bit for bit;
    min face 10 starts with an upsampled level (12 / 10 = 1.2)."""
    image = scenes[0]
    reference = load_reference("cpu", min_face=min_face)
    calls = []
    original = ref_steps.imresample

    def record(img, sz):
        out = original(img, sz)
        if img.shape[2:] == image.shape[:2]:  # pyramid levels (crops are smaller than the frame)
            calls.append((tuple(sz), out))
        return out

    monkeypatch.setattr(ref_steps, "imresample", record)
    reference_detect(reference, [image])
    det = MTCNNDetector(WEIGHTS, min_face=min_face)
    lay = det._layout(*image.shape[:2])
    assert [size for size, _ in calls] == lay.sizes
    assert lay.scales == pyramid_scales(*image.shape[:2], min_face, 0.709)
    pyramid = det._pyramid(det._summed_area(torch.from_numpy(image)[None]), lay, det._buffer)
    for (size, want), start in zip(calls, lay.pixels):
        level = pyramid[:, 3 * start:3 * (start + size[0] * size[1])].view(1, *size, 3).permute(0, 3, 1, 2)
        assert torch.equal(level, (want - 127.5) * 0.0078125)


def test_pnet_on_a_level_equals_the_reference_pnet(reference):
    """Same networks, same input: the published weights give bit-identical P-Net maps in both."""
    x = (torch.rand(1, 3, 61, 83, generator=torch.Generator().manual_seed(0)) * 255 - 127.5) * 0.0078125
    x = x.contiguous(memory_format=torch.channels_last)
    pnet = load_published(WEIGHTS)[0]
    with torch.inference_mode():
        reg, prob = reference.pnet(x)
        ours_prob, ours_reg = pnet(x)
    assert torch.equal(prob[:, 1], ours_prob) and torch.equal(reg, ours_reg)


def test_cell_boxes_equal_generate_bounding_box():
    gen = torch.Generator().manual_seed(3)
    for scale in pyramid_scales(1080, 1920, 12, 0.709):
        probs = torch.rand(2, 37, 53, generator=gen)
        reg = torch.rand(2, 4, 37, 53, generator=gen)
        want, _ = ref_steps.generateBoundingBox(reg, probs, scale, 0.6)
        n, ii, jj = (probs >= 0.6).nonzero().unbind(1)
        s32 = torch.full((len(ii),), scale, dtype=torch.float32)
        assert torch.equal(cell_boxes(ii, jj, s32, 1 / s32), want[:, :4])


def test_calibration_and_squaring_equal_bbreg_and_rerec():
    gen = torch.Generator().manual_seed(4)
    xy = torch.rand(200, 2, generator=gen) * 500 - 50
    boxes = torch.cat((xy, xy + torch.rand(200, 2, generator=gen) * 200 + 1), 1)
    offsets = torch.randn(200, 4, generator=gen) * 0.1
    with_score = torch.cat((boxes, torch.rand(200, 1, generator=gen)), 1)
    assert torch.equal(square(boxes), ref_steps.rerec(with_score.clone())[:, :4])
    assert torch.equal(calibrate(boxes, offsets, plus_one=True), ref_steps.bbreg(with_score.clone(), offsets)[:, :4])
    # after P-Net the reference calibrates with x2 - x1 (its inline qq1..qq4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    want = torch.stack([boxes[:, 0] + offsets[:, 0] * w, boxes[:, 1] + offsets[:, 1] * h,
                        boxes[:, 2] + offsets[:, 2] * w, boxes[:, 3] + offsets[:, 3] * h], 1)
    assert torch.equal(calibrate(boxes, offsets), want)


def test_crops_equal_the_reference_crop_loop(astronaut):
    """Our summed-area crops == the reference's pad() + per-box area resampling of the clipped region,
    bit for bit, for boxes inside, across every border, tiny and larger than the image."""
    image = np.ascontiguousarray(astronaut[:300, :400])
    h, w = image.shape[:2]
    gen = torch.Generator().manual_seed(5)
    xy = torch.rand(60, 2, generator=gen) * torch.tensor([w + 60.0, h + 60.0]) - 40
    side = torch.rand(60, 1, generator=gen) * 200 + 0.5
    boxes = torch.cat((xy, xy + side), 1)
    boxes = torch.cat((boxes, torch.tensor([[-30.5, -20.2, 450.0, 350.0], [5.2, 5.9, 5.8, 6.1]])))
    det = MTCNNDetector(WEIGHTS)
    src = det._sources([(torch.tensor([0]), det._summed_area(torch.from_numpy(image)[None]))])
    imgs = torch.from_numpy(image)[None].permute(0, 3, 1, 2).float()
    y, ey, x, ex = ref_steps.pad(boxes.clone(), w, h)
    for size in (24, 48):
        crops, valid = det._crops(src, boxes, torch.zeros(len(boxes), dtype=torch.long), size)
        for k in range(len(boxes)):
            nonempty = ey[k] > y[k] - 1 and ex[k] > x[k] - 1
            assert bool(valid[k]) == nonempty
            if nonempty:
                want = ref_steps.imresample(imgs[:, :, y[k] - 1:ey[k], x[k] - 1:ex[k]], (size, size))
                assert torch.equal(crops[k:k + 1], (want - 127.5) * 0.0078125), k


def test_last_nms_equals_the_reference_min_nms():
    """'Min' overlap with the +1 pixel convention, > 0.7 suppresses: the same picks as the reference."""
    gen = torch.Generator().manual_seed(6)
    centres = torch.rand(6, 2, generator=gen) * 200
    xy = centres[torch.randint(0, 6, (120,), generator=gen)] + torch.randn(120, 2, generator=gen) * 4
    boxes = torch.cat((xy, xy + torch.rand(120, 2, generator=gen) * 30 + 5), 1)
    scores = torch.rand(120, generator=gen)
    groups = torch.randint(0, 3, (120,), generator=gen)
    ours = nms(boxes, scores, 0.7, "min", groups=groups, plus_one=True)
    for g in range(3):
        members = (groups == g).nonzero().squeeze(1)
        want = ref_steps.nms_numpy(boxes[members].numpy(), scores[members].numpy(), 0.7, "Min")
        assert sorted(members[torch.as_tensor(want, dtype=torch.long)].tolist()) == sorted(
            i for i in ours.tolist() if groups[i] == g)


# ---------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [False, True])
def test_cuda_matches_reference_on_cuda(scenes, astronaut, graphs):
    """On a GPU, eager and graphed: the reference on the same device, same faces within tolerance."""
    reference = load_reference("cuda")
    detector = MTCNNDetector(WEIGHTS, "cuda", cuda_graphs=graphs)
    for images in ([astronaut], scenes[:4], scenes[:4], scenes[4:5], scenes[-4:]):
        same = len({im.shape for im in images}) == 1
        ref = reference_detect_batch(reference, images) if same else reference_detect(reference, images)
        assert_parity(detector.detect_arrays(images), ref, len(images))
    if graphs:
        assert detector.cuda_graphs and detector._graphs  # captured, not fallen back to eager
