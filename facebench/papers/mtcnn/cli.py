"""``facebench detect``: run the MTCNN cascade on image files and report boxes, scores and landmarks.

The typer command in ``facebench.cli`` is a thin wrapper around ``detect_command`` so that the logic is
testable without a CLI runner.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from facebench.papers.mtcnn import default_weights_dir
from facebench.papers.mtcnn.detect import PRESETS, MTCNNDetector


def read_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def detect_command(paths: list[Path], weights: Path | None = None, device: str = "cpu",
                   min_face: int | None = None, preset: str = "paper", as_json: bool = True,
                   batch_size: int = 8) -> str:
    """Detect faces in ``paths``; JSON (one entry per image: {"image", "faces": [{"box", "score",
    "landmarks"}]}) or, with ``as_json=False``, one human-readable line per face.

    ``preset`` is 'paper' (min face 20, thresholds 0.6/0.7/0.7) or 'wider' (min face 10, factor 0.79,
    thresholds 0.5/0.5/0.3); ``min_face`` overrides the preset's. ``weights`` defaults to
    $FACEBENCH_MTCNN_WEIGHTS or the shared published weights. ``batch_size`` images go to the cascade per
    call on every device: on a 2-core CPU a batch of 8 costs ~10% less per frame than single images
    (benchmarks/results/2026-12-05-cpu), and images of different sizes in a batch are grouped by size.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    detector = MTCNNDetector.preset(preset, weights or default_weights_dir(), device, min_face=min_face)
    results = []
    for start in range(0, len(paths), batch_size):
        chunk = [Path(p) for p in paths[start:start + batch_size]]
        faces = detector.detect([read_rgb(p) for p in chunk])
        results += [{"image": str(p), "faces": [f.to_dict() for f in fs]} for p, fs in zip(chunk, faces)]
    if as_json:
        return json.dumps(results, indent=2)
    lines = []
    for entry in results:
        lines.append(f"{entry['image']}: {len(entry['faces'])} face(s)")
        for face in entry["faces"]:
            x1, y1, x2, y2 = face["box"]
            lines.append(f"  box=({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}) score={face['score']:.4f}")
    return "\n".join(lines)
