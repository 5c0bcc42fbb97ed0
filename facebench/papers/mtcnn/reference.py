"""The reference implementation, facenet-pytorch 2.6.0's MTCNN, loaded for the parity tests and the
side-by-side benchmark (``benchmarks/mtcnn_vs_reference.py``); nothing else in facebench imports it.

facenet-pytorch is a test-only peer (the Makefile installs it with ``--no-deps``). At import time it needs
``torchvision.ops.boxes.batched_nms`` (per-image NMS in its first two stages) and
``torchvision.transforms.functional`` (only ``extract_face`` uses it). PyPI's torchvision does not install
beside the torch this project pins, so where ``import torchvision`` fails, ``load_reference`` puts a small
stand-in into ``sys.modules`` first: ``batched_nms`` written here in plain torch with torchvision's
documented semantics (per group, greedy in descending score, a box is dropped when its IoU with a kept box
is > the threshold, IoU without the +1 pixel convention, kept indices returned in descending score).
A real torchvision, when importable, is used as it is.
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import torch

REFERENCE_VERSION = "2.6.0"


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
                ) -> torch.Tensor:
    """torchvision.ops.batched_nms semantics in plain torch/numpy (see the module docstring): each group in
    descending score (ties: input order), the best remaining box kept and every remaining box whose IoU with
    it is > ``iou_threshold`` dropped, one loop step per kept box. Arithmetic in the boxes' dtype, as
    torchvision's kernel does: area = (x2 - x1) * (y2 - y1), IoU = inter / (area_i + area_j - inter)."""
    b = boxes.detach().cpu().numpy()
    s = scores.detach().cpu().numpy()
    g = idxs.detach().cpu().numpy()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    kept = []
    for group in np.unique(g):
        members = np.flatnonzero(g == group)
        rest = members[np.argsort(-s[members], kind="stable")]
        while len(rest):
            i, rest = rest[0], rest[1:]
            kept.append(i)
            w = np.maximum(np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]), 0)
            h = np.maximum(np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]), 0)
            inter = w * h
            rest = rest[inter / (area[i] + area[rest] - inter) <= iou_threshold]
    kept = np.asarray(kept, dtype=np.int64)
    kept = kept[np.argsort(-s[kept], kind="stable")]
    return torch.as_tensor(kept, dtype=torch.long, device=boxes.device)


def install_torchvision_stand_in() -> None:
    """Make ``import torchvision`` give the stand-in (see the module docstring) unless a working torchvision
    imports; needed before ``import facenet_pytorch``."""
    try:
        importlib.import_module("torchvision")
        return
    except Exception:  # absent, or present but broken against this torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    root = types.ModuleType("torchvision")
    root.__path__ = []  # a package, so the submodules below import
    ops, ops_boxes = types.ModuleType("torchvision.ops"), types.ModuleType("torchvision.ops.boxes")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    ops_boxes.batched_nms = ops.batched_nms = batched_nms

    def to_tensor(pic):  # extract_face's only use: HWC array -> CHW float tensor (values as given)
        return torch.as_tensor(np.asarray(pic)).permute(2, 0, 1).contiguous()

    functional.to_tensor = to_tensor
    ops.boxes, transforms.functional = ops_boxes, functional
    root.ops, root.transforms = ops, transforms
    sys.modules.update({"torchvision": root, "torchvision.ops": ops, "torchvision.ops.boxes": ops_boxes,
                        "torchvision.transforms": transforms, "torchvision.transforms.functional": functional})


def load_reference(device: str | torch.device = "cpu", min_face: float = 20, factor: float = 0.709,
                   thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)):
    """facenet-pytorch's ``MTCNN`` with its shipped weights (the same published weights facebench reads),
    keeping every face (``keep_all``) and not reordering them by size (``select_largest=False``).
    Raises ImportError when facenet-pytorch is not installed (tests ``importorskip`` it)."""
    install_torchvision_stand_in()
    facenet = importlib.import_module("facenet_pytorch")
    version = getattr(facenet, "__version__", None)
    if version not in (None, REFERENCE_VERSION):
        raise ImportError(f"facebench/papers/mtcnn/reference.py expects facenet-pytorch {REFERENCE_VERSION}, "
                          f"got {version}")
    return facenet.MTCNN(min_face_size=min_face, thresholds=list(thresholds), factor=factor, keep_all=True,
                         select_largest=False, device=torch.device(device))


def reference_detect(mtcnn, images: list[np.ndarray]) -> np.ndarray:
    """The reference's detections for ``images`` (RGB uint8, any sizes; each image is its own call, as the
    reference only batches equal sizes) as one (K, 16) array in ``MTCNNDetector.detect_arrays``' layout:
    image index, x1, y1, x2, y2, score, five (x, y)."""
    rows = []
    for i, image in enumerate(images):
        rows.append(reference_rows(mtcnn, np.ascontiguousarray(image)[None], i))
    return np.concatenate(rows) if rows else np.zeros((0, 16))


def reference_rows(mtcnn, batch: np.ndarray, first_index: int = 0) -> np.ndarray:
    """The reference on one (N, H, W, 3) batch of equal-size images, as (K, 16) rows (see reference_detect)."""
    boxes, probs, points = mtcnn.detect(batch, landmarks=True)
    rows = []
    for i, (b, p, pt) in enumerate(zip(boxes, probs, points)):
        if b is None:
            continue
        b = np.asarray(b, dtype=np.float64)
        rows.append(np.column_stack([np.full(len(b), first_index + i, np.float64), b,
                                     np.asarray(p, dtype=np.float64), np.asarray(pt, np.float64).reshape(len(b), 10)]))
    return np.concatenate(rows) if rows else np.zeros((0, 16))


# Issue 20's parity tolerances: same faces one to one, box IoU, landmark distance over the box side, score.
IOU_MIN, LANDMARK_FRACTION, SCORE_TOL = 0.98, 0.01, 1e-3


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of (n, 4) and (m, 4) boxes x1, y1, x2, y2."""
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area_a, area_b = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return w * h / (area_a[:, None] + area_b[None] - w * h)


def agreement(ours: np.ndarray, ref: np.ndarray, n_images: int) -> dict:
    """How facebench's rows (``detect_arrays`` layout) agree with the reference's, image by image: faces paired
    one to one greedily by IoU; per pair the IoU, the largest landmark distance over the reference box's
    longer side and the score difference. ``agreeing`` counts pairs within the tolerances above;
    ``count_mismatch`` lists images whose face counts differ (their unpaired faces disagree)."""
    pairs, mismatch = [], []
    for i in range(n_images):
        a, b = ours[ours[:, 0] == i], ref[ref[:, 0] == i]
        if len(a) != len(b):
            mismatch.append(i)
        if not len(a) or not len(b):
            continue
        overlap = box_iou(a[:, 1:5], b[:, 1:5])
        for _ in range(min(len(a), len(b))):
            p, q = np.unravel_index(np.argmax(overlap), overlap.shape)
            side = max(b[q, 3] - b[q, 1], b[q, 4] - b[q, 2])
            landmark = np.linalg.norm((a[p, 6:16] - b[q, 6:16]).reshape(5, 2), axis=1).max() / side
            pairs.append((i, overlap[p, q], landmark, abs(a[p, 5] - b[q, 5])))
            overlap[p, :], overlap[:, q] = -1.0, -1.0
    table = np.array(pairs, dtype=np.float64).reshape(-1, 4)
    ok = (table[:, 1] >= IOU_MIN) & (table[:, 2] <= LANDMARK_FRACTION) & (table[:, 3] <= SCORE_TOL)
    return {"images": n_images, "faces_ours": len(ours), "faces_reference": len(ref), "count_mismatch": mismatch,
            "agreeing": int(ok.sum()), "pairs": table,
            "worst_iou": float(table[:, 1].min()) if len(table) else 1.0,
            "worst_landmark": float(table[:, 2].max()) if len(table) else 0.0,
            "worst_score": float(table[:, 3].max()) if len(table) else 0.0}

