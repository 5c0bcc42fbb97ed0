"""MTCNN (Zhang et al., 2016): face detection and 5-point landmarks. model.py (P-, R-, O-Net), loss.py,
task.py (a stage's training and evaluation); beside them box operations, the batched cascade, the training
crops of each stage, the AP evaluation, the published-weights reference and the detect command.
Alignment to recognition templates is shared: ``facebench.data.align``.
"""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS_ENV = "FACEBENCH_MTCNN_WEIGHTS"
REPO_ROOT = Path(__file__).resolve().parents[3]


def default_weights_dir() -> Path:
    """$FACEBENCH_MTCNN_WEIGHTS, else the published weights shared next to the repository
    (``<repo>/../shared/models/mtcnn-published``)."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    return (REPO_ROOT / ".." / "shared" / "models" / "mtcnn-published").resolve()


from facebench.papers.mtcnn.detect import PRESETS, Face, MTCNNDetector  # noqa: E402

__all__ = ["Face", "MTCNNDetector", "PRESETS", "WEIGHTS_ENV", "default_weights_dir"]
