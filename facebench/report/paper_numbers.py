"""Published reference numbers, as plain data, each with its source and whether we checked it.

Values are NME x 100 exactly as printed. ``normaliser`` names the *kind* of distance, so the report
can set a paper figure beside our figure of the same kind only (DESIGN.md, "Protocol traps"):
- ``face_size``: AFLW-Full "face size"; the Wing author's AFLW protocol divides by the box width
  (datasets.md §2.3), which is our AFLW primary normaliser.
- ``inter_pupil``: 300-W eye-centre distance (eye-contour means), the Wing paper's 300-W normaliser.
- ``inter_ocular``: 300-W outer eye corners, our 300-W primary normaliser (the paper gives none).

``verified=False`` marks numbers we could not check against the paper or its author; the report
shows them with a dagger. ``pdb=None`` means the source does not say.
"""

from __future__ import annotations

from dataclasses import dataclass

WING_PAPER = "Feng et al., Wing loss, CVPR 2018"
AWING_PAPER = "Wang, Bo and Fuxin, Adaptive Wing loss, ICCV 2019"
COSFACE_PAPER = "Wang et al., CosFace, CVPR 2018"


@dataclass(frozen=True)
class PaperNumber:
    paper: str          # facebench paper key, e.g. "wing"
    dataset: str        # facebench dataset key: "w300" | "aflw"
    split: str          # facebench split name
    model: str          # "cnn6", or a model we do not train, e.g. "cnn6/7"
    loss: str           # facebench loss key
    pdb: bool | None
    normaliser: str     # "face_size" | "inter_pupil" | "inter_ocular"
    nme_percent: float
    source: str
    verified: bool
    note: str = ""


_LOSS_TABLE = f"{WING_PAPER}, loss-function comparison table (CNN-6 on AFLW-Full, no PDB)"
_ISSUE_3 = "author's reply in FengZhenhua/Wing-Loss GitHub issue #3 (2018-09-06)"
_PWC = "'Results from the Paper' on the paper's Papers with Code page"
_TWO_STAGE = "two-stage CNN-6/7 with Wing loss: the paper's full system, not a CNN-6 row"
_AWING_300W = (f"{AWING_PAPER}, 300-W results of the full model (4-stack hourglass, AWing, weighted loss map,"
               " boundary, CoordConv); read from a third-party benchmark listing of the paper's results")

PAPER_NUMBERS: tuple[PaperNumber, ...] = (
    # CNN-6 on AFLW-Full, one row per loss (the comparison this project reproduces).
    PaperNumber("wing", "aflw", "test", "cnn6", "l2", False, "face_size", 2.41, _LOSS_TABLE, verified=False),
    PaperNumber("wing", "aflw", "test", "cnn6", "l1", False, "face_size", 2.00,
                f"{_LOSS_TABLE}; confirmed in the {_ISSUE_3}", verified=True,
                note="the author: 'even the baseline method with L1 loss (without PDB) achieves NME of 2 on AFLW'"),
    PaperNumber("wing", "aflw", "test", "cnn6", "smooth_l1", False, "face_size", 2.02, _LOSS_TABLE, verified=False),
    PaperNumber("wing", "aflw", "test", "cnn6", "wing", False, "face_size", 1.88, _LOSS_TABLE, verified=False),
    # The effect of pose-based data balancing, as the author states it.
    PaperNumber("wing", "aflw", "test", "cnn6", "l1", True, "face_size", 1.89, _ISSUE_3, verified=True,
                note="CNN-6 + L1 on AFLW: 2.00 without PDB, 1.89 with PDB"),
    # The paper's best system: other models, shown apart from the CNN-6 rows.
    PaperNumber("wing", "aflw", "test", "cnn6/7", "wing", None, "face_size", 1.65,
                f"{WING_PAPER}, AFLW-Full results; listed in the {_PWC}", verified=True,
                note=f"{_TWO_STAGE}; Papers with Code labels this number 'NME_diag', the paper 'face size'"),
    PaperNumber("wing", "w300", "common", "cnn6/7", "wing", None, "inter_pupil", 3.27,
                f"{WING_PAPER}, 300-W results; listed in the {_PWC}", verified=True, note=_TWO_STAGE),
    PaperNumber("wing", "w300", "challenging", "cnn6/7", "wing", None, "inter_pupil", 7.18,
                f"{WING_PAPER}, 300-W results; listed in the {_PWC}", verified=True, note=_TWO_STAGE),
    PaperNumber("wing", "w300", "full", "cnn6/7", "wing", None, "inter_pupil", 4.04,
                f"{WING_PAPER}, 300-W results; listed in the {_PWC}", verified=True, note=_TWO_STAGE),
    # Adaptive Wing on 300-W, normalised by the outer eye corners (the paper's 300-W protocol).
    PaperNumber("awing", "w300", "common", "hourglass", "awing", False, "inter_ocular", 2.72, _AWING_300W,
                verified=False),
    PaperNumber("awing", "w300", "challenging", "hourglass", "awing", False, "inter_ocular", 4.52, _AWING_300W,
                verified=False),
    PaperNumber("awing", "w300", "full", "hourglass", "awing", False, "inter_ocular", 3.07, _AWING_300W,
                verified=False),
)


def lookup(dataset: str, split: str, model: str, loss: str, pdb: bool, normaliser: str) -> PaperNumber | None:
    """The paper's figure for exactly this setting and normaliser kind, or None where it gives none."""
    for number in PAPER_NUMBERS:
        if (number.dataset, number.split, number.model, number.loss, number.normaliser) == (
                dataset, split, model, loss, normaliser) and number.pdb in (None, pdb):  # None: either
            return number
    return None


@dataclass(frozen=True)
class PaperAccuracy:
    """A published LFW verification accuracy (%, 10-fold protocol) for one recognition head."""

    loss: str           # facebench head key: softmax, nsl, sphereface, cosface, arcface
    model: str          # the network the paper used, in words
    lfw_percent: float
    source: str
    verified: bool
    note: str = ""


_COSFACE_TABLE = (f"{COSFACE_PAPER}, comparison of loss functions (same 64-layer CNN and training data,"
                  " CASIA-WebFace); quoted from memory of the paper, not re-read here")

RECOGNITION_NUMBERS: tuple[PaperAccuracy, ...] = (
    PaperAccuracy("softmax", "64-layer residual CNN", 97.88, _COSFACE_TABLE, verified=False),
    PaperAccuracy("sphereface", "64-layer residual CNN", 99.42, _COSFACE_TABLE, verified=False,
                  note="A-Softmax, m=4: the SphereFace paper's own figure"),
    PaperAccuracy("cosface", "64-layer residual CNN", 99.33, _COSFACE_TABLE, verified=False,
                  note="LMCL, s=64, m=0.35"),
)


def recognition_lookup(loss: str) -> PaperAccuracy | None:
    return next((n for n in RECOGNITION_NUMBERS if n.loss == loss), None)
