"""The published MTCNN weights through our networks and batched cascade, on the one real test photograph."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facebench.papers.mtcnn import WEIGHTS_ENV, MTCNNDetector, default_weights_dir
from facebench.papers.mtcnn.boxes import nms
from facebench.papers.mtcnn.cli import detect_command
from facebench.papers.mtcnn.detect import grid_radius, level_size, pnet_cells, pyramid_scales
from facebench.papers.mtcnn.model import ONet, PNet, RNet, load_published

SHARED = Path(__file__).resolve().parents[3] / "shared"
WEIGHTS = SHARED / "models" / "mtcnn-published"
ASTRONAUT = SHARED / "images" / "astronaut.png"

# Tests that run the published networks or read the photograph skip without ../shared; the cascade's
# geometry (pyramid, grid NMS, pooling) is checked everywhere.
needs_shared = pytest.mark.skipif(not (WEIGHTS / "onet.pt").is_file() or not ASTRONAUT.is_file(),
                                  reason="published MTCNN weights / test image not available (../shared)")

# Face box found by inspection (x1, y1, x2, y2): hairline to chin, ear to ear. The reference implementation
# (facenet-pytorch 2.6.0) and facebench's cascade give (181.05, 62.16, 267.75, 172.05) (test_parity.py).
ASTRONAUT_BOX = np.array([178.0, 62.0, 265.0, 172.0])


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def detector() -> MTCNNDetector:
    return MTCNNDetector(WEIGHTS, "cpu")


def crop(image: np.ndarray, box, size: int) -> torch.Tensor:
    x1, y1, x2, y2 = box
    c = cv2.resize(image[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)
    return (torch.from_numpy(c).permute(2, 0, 1)[None].float() - 127.5) / 128


def check_face(face, tol: float = 0.1) -> None:
    size = ASTRONAUT_BOX[2:] - ASTRONAUT_BOX[:2]
    assert np.all(np.abs(face.box[:2] - ASTRONAUT_BOX[:2]) <= tol * size), face.box
    assert np.all(np.abs(face.box[2:] - ASTRONAUT_BOX[2:]) <= tol * size), face.box
    (lex, ley), (rex, rey), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert lex < nx < rex and mlx < mrx
    assert max(ley, rey) < ny < min(mly, mry)
    x1, y1, x2, y2 = face.box
    assert np.all((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2))
    assert np.all((face.landmarks[:, 1] > y1) & (face.landmarks[:, 1] < y2))


@needs_shared
def test_published_state_dicts_load_into_our_modules():
    for name, net in (("pnet", PNet()), ("rnet", RNet()), ("onet", ONet())):
        net.load_state_dict(torch.load(WEIGHTS / f"{name}.pt", weights_only=True))  # strict: names and shapes


@needs_shared
def test_networks_separate_face_from_background(image):
    pnet, rnet, onet = load_published(WEIGHTS)
    face, background = (170, 60, 280, 170), (300, 300, 410, 410)
    with torch.inference_mode():
        p, reg = pnet(crop(image, face, 12))
        assert p.shape == (1, 1, 1) and reg.shape == (1, 4, 1, 1)
        assert p.item() > 0.99 and pnet(crop(image, background, 12))[0].item() < 0.1
        # R-Net / O-Net also check the (W, H, C) flatten order of the fully connected layers
        assert rnet(crop(image, face, 24))[0].item() > 0.99
        assert rnet(crop(image, background, 24))[0].item() < 0.1
        prob, reg, lm = onet(crop(image, face, 48))
        assert prob.item() > 0.99 and reg.shape == (1, 4) and lm.shape == (1, 5, 2)
        assert onet(crop(image, background, 48))[0].item() < 0.1
        assert lm[0, 0, 0] < lm[0, 1, 0] and lm[0, 0, 1] < lm[0, 2, 1] < lm[0, 3, 1]  # x-then-y unpacked


@needs_shared
def test_astronaut_one_face(detector, image):
    faces = detector.detect([image])[0]
    confident = [f for f in faces if f.score > 0.9]
    assert len(confident) == 1
    check_face(confident[0])


@needs_shared
def test_wider_preset_finds_it_too(image):
    faces = MTCNNDetector.wider(WEIGHTS).detect([image])[0]
    assert faces[0].score > 0.9
    check_face(faces[0])


@needs_shared
def test_authors_zero_padding_option(image):
    """border='pad' changes only crops of boxes that leave the image: the astronaut's face is inside."""
    faces = MTCNNDetector(WEIGHTS, border="pad").detect([image])[0]
    assert len(faces) == 1 and faces[0].score > 0.9
    check_face(faces[0])
    with pytest.raises(ValueError, match="border"):
        MTCNNDetector(WEIGHTS, border="mirror")


@needs_shared
def test_batch_matches_single_and_handles_mixed_sizes(detector, image):
    single = detector.detect([image])[0]
    mirrored = np.ascontiguousarray(image[:, ::-1])
    framed = np.zeros((480, 640, 3), np.uint8)
    framed[:, 80:560] = cv2.resize(image, (480, 480), interpolation=cv2.INTER_AREA)
    blank = np.full((200, 300, 3), 128, np.uint8)
    out = detector.detect([image, mirrored, blank, framed])
    assert len(out) == 4
    # same image in a padded mixed-size batch: same detections
    assert len(out[0]) == len(single)
    assert np.allclose(out[0][0].box, single[0].box, atol=1.0)
    assert abs(out[0][0].score - single[0].score) < 1e-3
    # mirrored face: mirrored box, still found
    top = max(out[1], key=lambda f: f.score)
    assert top.score > 0.9
    assert np.allclose([512 - top.box[2], 512 - top.box[0]], single[0].box[[0, 2]], atol=9)  # 10% of the box
    assert out[2] == []
    top = max(out[3], key=lambda f: f.score)
    scaled = ASTRONAUT_BOX * 480 / 512 + np.array([80, 0, 80, 0])
    assert np.all(np.abs(top.box - scaled) <= 0.1 * (scaled[2] - scaled[0]))


@needs_shared
def test_face_at_border_is_padded_not_lost(detector, image):
    cut = np.ascontiguousarray(image[80:, 200:])  # left part of the face and forehead cut away
    faces = [f for f in detector.detect([cut])[0] if f.score > 0.9]
    assert len(faces) == 1
    assert faces[0].box[0] < 5 and faces[0].box[1] < 5  # box reaches out of the image


def test_grid_nms_equals_box_nms():
    """P-Net's per-level NMS through grid neighbours == greedy IoU NMS on the cells' floor()-ed boxes (ties
    included), for several levels, thresholds and a neighbourhood radius derived by grid_radius."""
    det = MTCNNDetector.__new__(MTCNNDetector)
    det.device = torch.device("cpu")
    det._constants = {}
    for thr in (0.5, 0.3, 0.7):
        det.nms_thresholds = (thr, 0.7, 0.7)
        for scale in (1.2, 0.6, 0.6 * 0.709 ** 3):
            hc, wc = 30, 40
            radius = grid_radius([scale], [(hc, wc)], thr)
            assert radius is not None and radius >= 1
            gen = torch.Generator().manual_seed(1)
            prob = torch.rand(2, hc, wc, generator=gen).mul(10).round().div(10)  # many ties
            flat = (prob >= 0.6).view(-1).nonzero().squeeze(1)
            ni, ii, jj = torch.unravel_index(flat, prob.shape)
            score = prob.view(-1)[flat]
            xy = torch.stack((jj, ii), 1).float() * 2
            boxes = (torch.cat((xy + 1, xy + 12), 1) / torch.tensor(scale, dtype=torch.float32)).floor()
            hh, ww = torch.full_like(flat, hc), torch.full_like(flat, wc)
            keep = det._grid_nms(flat, boxes, score, ii, jj, hh, ww, radius)
            want = torch.zeros(len(ni), dtype=torch.bool)
            want[nms(boxes, score, thr, groups=ni)] = True
            assert torch.equal(keep, want), (thr, scale)
    assert grid_radius([0.6], [(30, 40)], 0.5) == 2  # 0.5: neighbours up to two cells apart can overlap


def test_pyramid_as_the_reference_builds_it():
    """Scales 12 / 20 * 0.709^k while min side * scale (running product) >= 12; level sizes int(x * s + 1);
    P-Net cells ceil((n - 2) / 2) - 4 (hand-computed for a 640x480 frame)."""
    scales = pyramid_scales(480, 640, 20, 0.709)
    assert len(scales) == 10 and scales[0] == 0.6
    assert scales[-1] == pytest.approx(0.6 * 0.709 ** 9)  # 480 * 0.6 * 0.709^9 = 13.6 >= 12; ^10 = 9.6
    assert level_size(480, 640, 0.6) == (289, 385)  # 288 + 1, 384 + 1: int(x * s + 1), not ceil
    assert level_size(480, 640, scales[1]) == (205, 273)  # 204.19, 272.26
    assert pnet_cells(289) == 140 and pnet_cells(12) == 1 and pnet_cells(13) == 2  # ceil-mode pooling
    assert pyramid_scales(480, 640, 10, 0.79)[0] == 1.2


@needs_shared
def test_detect_command_json(image):
    out = json.loads(detect_command([ASTRONAUT], WEIGHTS, "cpu", None, "paper", True))
    assert len(out) == 1 and out[0]["image"] == str(ASTRONAUT)
    face = out[0]["faces"][0]
    assert face["score"] > 0.9 and len(face["box"]) == 4 and np.array(face["landmarks"]).shape == (5, 2)
    text = detect_command([ASTRONAUT], WEIGHTS, "cpu", 40, "wider", False)
    assert "1 face(s)" in text


@needs_shared
def test_default_weights_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert default_weights_dir() == WEIGHTS.resolve()
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    assert default_weights_dir() == tmp_path
    with pytest.raises(FileNotFoundError):
        MTCNNDetector()


@needs_shared
@pytest.mark.gpu
def test_cuda_matches_cpu(detector, image):
    gpu = MTCNNDetector(WEIGHTS, "cuda").detect([image, image])
    cpu = detector.detect([image])[0]
    for faces in gpu:
        assert len(faces) == len(cpu)
        assert np.allclose(faces[0].box, cpu[0].box, atol=2.0)
        assert abs(faces[0].score - cpu[0].score) < 1e-2


def _graph_sequence(image: np.ndarray) -> list[list[np.ndarray]]:
    """Calls of varying batch and box counts, so that captured buffers hold leftovers from earlier calls."""
    mirrored = np.ascontiguousarray(image[:, ::-1])
    crowd = np.concatenate([image[:256], mirrored[256:]])
    return [[image], [crowd], [mirrored], [image, mirrored, crowd], [crowd], [np.ascontiguousarray(image[:300])]]


def _assert_same_detections(a: np.ndarray, b: np.ndarray, atol: float) -> None:
    assert a.shape == b.shape
    assert np.array_equal(a[:, 0], b[:, 0])  # image index
    assert np.allclose(a[:, 1:], b[:, 1:], atol=atol)


@needs_shared
@pytest.mark.parametrize("preset", ["paper", "wider"])
def test_graph_buffers_match_eager(image, preset):
    """The captured-graph path (static buffers, power-of-two box buckets, outputs cut to the boxes) gives
    the eager cascade's detections; on a CPU it runs the same code with every replay a plain call."""
    eager = MTCNNDetector.preset(preset, WEIGHTS)
    graphed = MTCNNDetector.preset(preset, WEIGHTS)
    graphed.cuda_graphs = True
    for images in _graph_sequence(image):
        _assert_same_detections(eager.detect_arrays(images), graphed.detect_arrays(images), atol=1e-3)
    assert any(key[0] == 3 for key in graphed._graphs)  # O-Net buffers were used, not only the front


@needs_shared
@pytest.mark.gpu
def test_cuda_graphs_match_eager_cuda(image):
    eager = MTCNNDetector(WEIGHTS, "cuda", cuda_graphs=False)
    graphed = MTCNNDetector(WEIGHTS, "cuda")
    for images in _graph_sequence(image) * 2:  # the second round replays graphs captured in the first
        _assert_same_detections(eager.detect_arrays(images), graphed.detect_arrays(images), atol=1e-2)
    assert graphed.cuda_graphs and graphed._graphs  # captured, not fallen back to eager


def test_pnet_pool_without_autograd_equals_the_pooling_layer():
    """MaxPool2x2Ceil's inference path (maxima of strided views) gives max_pool2d(2, 2, ceil_mode=True)'s
    values for even and odd sizes, keeps channels-last, and with autograd is the pooling layer itself."""
    from torch.nn import functional as F

    from facebench.papers.mtcnn.model import MaxPool2x2Ceil

    pool = MaxPool2x2Ceil()
    gen = torch.Generator().manual_seed(0)
    for h, w in ((120, 90), (121, 90), (120, 91), (121, 91)):
        x = torch.randn(2, 10, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = pool(x)
        assert torch.equal(out, F.max_pool2d(x, 2, 2, ceil_mode=True)) and out.shape[-2:] == ((h + 1) // 2, (w + 1) // 2)
        assert out.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(1, 10, 121, 91, generator=gen, requires_grad=True)
    pool(x).sum().backward()
    assert x.grad.sum().item() == 10 * 61 * 46 and x.grad.max().item() == 1  # one per window, as max-pooling routes it


@needs_shared
def test_capped_proposals_of_a_batch_are_each_images_own(image):
    """Mining caps P-Net's candidates per image (papers/mtcnn/samples.py): a batch must propose, for each image, what
    that image alone would (a cap over the whole batch once left most of a batch's scenes with no proposals
    and O-Net's smoke training data with no mined example)."""
    detector = MTCNNDetector(min_face=12, thresholds=(0.05, 0.05, 0.05))
    detector.max_candidates = 300
    rng = np.random.default_rng(0)
    images = [image, image[::-1].copy(), (rng.random(image.shape) * 255).astype(np.uint8), image[:300, :400].copy()]
    for stage in (1, 2):
        alone = [detector.proposals([im], stage)[0] for im in images]
        together = detector.proposals(images, stage)
        assert all(len(a) > 0 for a in alone)
        for a, b in zip(alone, together):
            np.testing.assert_array_equal(a, b)
    first = detector.proposals([images[0]], 1)[0]
    detector.max_candidates = None
    assert len(detector.proposals([images[0]], 1)[0]) > len(first)  # the cap did cut
