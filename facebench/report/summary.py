"""The answer first: per paper, its claims, the paper's figures, ours, and whether the claim holds here.

One small table per paper, computed from the same rows as the detail below (so it cannot disagree with
it), each claim linking to the section that holds its evidence; then one figure of accuracy against
training cost, a panel per paper. A claim "holds" when our difference goes the paper's way by more than
the seeds' spread (the sum of the two rows' standard deviations); within the spread it is "no
difference"; with one seed per row there is no spread, and the verdict says so.
"""

from __future__ import annotations

import math

import pandas as pd

from facebench.report.cells import CLAIMS_LINK, DASH, model_label, run_metric
from facebench.report.document import Block, Heading, Image, Para, Table, anchor
from facebench.report.figures import LOSS_COLOR, new_figure, png_bytes
from facebench.report.paper_numbers import RECOGNITION_NUMBERS, lookup

WING_DETAIL = "Wing loss paper: the paper's tables"  # the headings the claims link to (landmarks.py, wing.py)
AWING_DETAIL = "300-W (`w300`)"
COSFACE_DETAIL = "Face recognition: CASIA-WebFace to LFW (CosFace paper)"
MTCNN_DETAIL = "MTCNN (WIDER-format scenes)"
HEAD_COLOR = {"softmax": "tab:blue", "nsl": "tab:orange", "sphereface": "tab:green", "cosface": "tab:red",
              "arcface": "tab:purple"}
HEAD_NAME = {"softmax": "Softmax", "nsl": "NSL", "sphereface": "A-Softmax", "cosface": "LMCL", "arcface": "ArcFace"}
LOSS_NAME = {"l2": "L2", "l1": "L1", "smooth_l1": "smooth L1", "wing": "Wing", "hm_mse": "MSE", "hm_l1": "L1",
             "hm_wing": "Wing", "awing": "AWing"}
STAGE_COLOR = {"pnet": "tab:blue", "rnet": "tab:orange", "onet": "tab:green"}


def _pick(runs: pd.DataFrame, **want) -> pd.Series | None:
    """The one row matching every column=value (variant "" unless given), or None."""
    if runs.empty:
        return None
    want.setdefault("variant", "")
    hit = runs
    for column, value in want.items():
        hit = hit[hit[column].fillna("") == value] if column == "variant" else hit[hit[column] == value]
    return None if hit.empty else hit.iloc[0]


def _sd(row: pd.Series, metric: str) -> float | None:
    sd = row.get(f"sd.{metric}")
    return None if sd is None or (isinstance(sd, float) and math.isnan(sd)) else float(sd)


def verdict(better: pd.Series, worse: pd.Series, metric: str, lower_is_better: bool) -> str:
    """Whether ``better`` beats ``worse`` on ``metric`` as the paper says, against the seeds' spread."""
    a, b = run_metric(better, metric), run_metric(worse, metric)
    if a is None or b is None:
        return DASH
    gain = (b - a) if lower_is_better else (a - b)
    sds = [s for s in (_sd(better, metric), _sd(worse, metric)) if s is not None]
    if sds:
        spread = sum(sds)
        if abs(gain) <= spread:
            return f"no difference (within the seeds' spread {100 * spread:.2f})"
        return ("**yes**" if gain > 0 else "**no**") + f" (by {100 * abs(gain):.2f}, spread {100 * spread:.2f})"
    if gain == 0:
        return "no difference (equal)"
    return ("**yes**" if gain > 0 else "**no**") + f" (by {100 * abs(gain):.2f}; one seed, no spread)"


def _ours(a: pd.Series | None, b: pd.Series | None, metric: str, name_a: str, name_b: str) -> str:
    va, vb = (None if r is None else run_metric(r, metric) for r in (a, b))
    if va is None or vb is None:
        return DASH
    return f"{name_a} {100 * va:.2f} vs {name_b} {100 * vb:.2f}"


def _claim(claim: str, paper: str, a: pd.Series | None, b: pd.Series | None, metric: str, names: tuple[str, str],
           lower: bool, detail: str) -> list[str] | None:
    if a is None or b is None:
        return None
    return [claim, paper, _ours(a, b, metric, *names), verdict(a, b, metric, lower), f"[detail](#{anchor(detail)})"]


def _paper_pair(dataset, split, model_a, loss_a, model_b, loss_b, pdb_a, pdb_b, kind) -> str:
    a, b = lookup(dataset, split, model_a, loss_a, pdb_a, kind), lookup(dataset, split, model_b, loss_b, pdb_b, kind)
    return DASH if a is None or b is None else f"{a.nme_percent:.2f} vs {b.nme_percent:.2f}"


HEADERS = ["claim", "paper", "ours", "holds here?", "evidence"]


def wing_claims(runs: pd.DataFrame) -> list[list[str]]:
    rows = []
    for dataset, metric, kind, split, where in (("aflw", "test_test_nme", "face_size", "test", "AFLW-Full test"),
                                                ("w300", "test_full_nme_ip", "inter_pupil", "full", "300-W full (ip)")):
        wing = _pick(runs, dataset=dataset, model="cnn6", loss="wing", pdb=False)
        for other in ("l2", "l1", "smooth_l1"):
            row = _claim(f"CNN-6: Wing below {LOSS_NAME[other]}, {where} NME",
                         _paper_pair(dataset, split, "cnn6", "wing", "cnn6", other, False, False, kind),
                         wing, _pick(runs, dataset=dataset, model="cnn6", loss=other, pdb=False), metric,
                         ("Wing", LOSS_NAME[other]), True, WING_DETAIL)
            if row:
                rows.append(row)
        row = _claim(f"Two-stage CNN-6/7 below CNN-6 (Wing), {where} NME",
                     _paper_pair(dataset, split, "cnn6/7", "wing", "cnn6", "wing", False, False, kind),
                     _pick(runs, dataset=dataset, model="cnn7", loss="wing", pdb=False), wing, metric,
                     ("CNN-6/7", "CNN-6"), True, WING_DETAIL)
        if row:
            rows.append(row)
        for loss in ("l1", "wing"):
            row = _claim(f"PDB lowers CNN-6 + {LOSS_NAME[loss]}, {where} NME",
                         _paper_pair(dataset, split, "cnn6", loss, "cnn6", loss, True, False, kind),
                         _pick(runs, dataset=dataset, model="cnn6", loss=loss, pdb=True),
                         _pick(runs, dataset=dataset, model="cnn6", loss=loss, pdb=False), metric,
                         ("PDB", "no PDB"), True, WING_DETAIL)
            if row:
                rows.append(row)
    return rows


def awing_claims(runs: pd.DataFrame) -> list[list[str]]:
    rows = []
    full = _pick(runs, dataset="w300", model="hourglass", loss="awing", pdb=False)
    for other in ("hm_mse", "hm_l1", "hm_wing"):
        row = _claim(f"AWing below {LOSS_NAME[other]} on heatmaps, 300-W full NME (io)", DASH, full,
                     _pick(runs, dataset="w300", model="hourglass", loss=other, pdb=False), "test_full_nme",
                     ("AWing", LOSS_NAME[other]), True, AWING_DETAIL)
        if row:
            rows.append(row)
    for part, name in (("weight map", "The weighted loss map"), ("boundary", "The boundary map"),
                       ("CoordConv", "CoordConv")):
        row = _claim(f"{name} lowers the AWing hourglass's 300-W full NME (io)", DASH, full,
                     _pick(runs, dataset="w300", model="hourglass", loss="awing", pdb=False, variant=f"no {part}"),
                     "test_full_nme", ("with", "without"), True, "Adaptive Wing ablation")
        if row:
            rows.append(row)
    return rows


def cosface_claims(runs: pd.DataFrame) -> list[list[str]]:
    paper = {n.loss: n.lfw_percent for n in RECOGNITION_NUMBERS}
    rows = []
    cosface = _pick(runs, loss="cosface")
    for other in ("softmax", "nsl"):  # the paper's claims (its A-Softmax figure is above LMCL's: no claim there)
        known = "cosface" in paper and other in paper
        row = _claim(f"LMCL (CosFace) above {HEAD_NAME[other]}, LFW accuracy",
                     f"{paper['cosface']:.2f} vs {paper[other]:.2f}" if known else DASH, cosface,
                     _pick(runs, loss=other), "lfw_accuracy", ("LMCL", HEAD_NAME[other]), False, COSFACE_DETAIL)
        if row:
            rows.append(row)
    return rows


def mtcnn_claims(runs: pd.DataFrame) -> list[list[str]]:
    onet = _pick(runs, model="onet")
    if onet is None or run_metric(onet, "test_trained_ap_hard") is None:
        return []
    trained = " / ".join(f"{100 * (run_metric(onet, f'test_trained_ap_{s}') or 0):.1f}" for s in ("easy", "medium", "hard"))
    published = " / ".join(f"{100 * v:.1f}" if (v := run_metric(onet, f"test_published_ap_{s}")) is not None else DASH
                           for s in ("easy", "medium", "hard"))
    return [["The trained cascade detects the test faces: AP easy / medium / hard (%)", DASH,
             f"trained {trained}; published weights {published}",
             "not a paper comparison: the paper's figures are on the real WIDER FACE",
             f"[detail](#{anchor(MTCNN_DETAIL)})"]]


def summary_section(landmarks: pd.DataFrame, recognition: pd.DataFrame, detection: pd.DataFrame,
                    cost_figure: Image | None) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Summary: do the papers' claims hold here?"),
                           Para("Per paper, each claim as the paper makes it, the paper's two figures (NME %, lower"
                                " is better; LFW accuracy %, higher is better), ours on the test split, and whether"
                                " our difference goes the paper's way. A difference within the seeds' spread is no"
                                " difference; with one seed per row there is no spread to weigh it against."
                                " Figures a paper does not give are dashes. Evidence links to the detail. Where"
                                " an ordering fails here, whether it appears with longer training, more identities"
                                " or a larger network, with several seeds, is the claims study's question:"
                                f" [claims.md]({CLAIMS_LINK}).")]
    for title, rows in (("Wing loss (Feng et al., CVPR 2018)", wing_claims(landmarks)),
                        ("Adaptive Wing loss (Wang et al., ICCV 2019)", awing_claims(landmarks)),
                        ("CosFace (Wang et al., CVPR 2018)", cosface_claims(recognition)),
                        ("MTCNN (Zhang et al., 2016)", mtcnn_claims(detection))):
        if rows:
            blocks += [Heading(3, title), Table(HEADERS, rows, [False] * len(HEADERS))]
    if cost_figure is not None:
        blocks += [Heading(3, "Accuracy against training cost"), cost_figure]
    return blocks


# --- accuracy against cost ---------------------------------------------------------------------------------
MARKER = {"cnn6": "o", "cnn7": "s", "hourglass": "^", "resnet50": "D"}


def cost_points(landmarks: pd.DataFrame, recognition: pd.DataFrame, detection: pd.DataFrame
                ) -> list[tuple[str, str, list[tuple[str, str, str, float, float]]]]:
    """Per paper panel: (title, y label, [(label, colour, marker, wall seconds, metric %)]) for every row
    that logged its cost and the panel's metric."""
    panels = []
    for title, rows, metric, ylabel, label, color in (
            ("Wing: AFLW-Full test", landmarks[landmarks["paper"] == "wing"] if not landmarks.empty else landmarks,
             "test_test_nme", "NME (%), lower is better",
             lambda r: f"{model_label(r)} {LOSS_NAME.get(r['loss'], r['loss'])}", lambda r: LOSS_COLOR.get(r["loss"])),
            ("AWing: 300-W full (io)", landmarks[landmarks["paper"] == "awing"] if not landmarks.empty else landmarks,
             "test_full_nme", "NME (%), lower is better",
             lambda r: f"{model_label(r)} {LOSS_NAME.get(r['loss'], r['loss'])}", lambda r: LOSS_COLOR.get(r["loss"])),
            ("CosFace: LFW-protocol pairs", recognition, "lfw_accuracy", "accuracy (%), higher is better",
             lambda r: HEAD_NAME.get(r["loss"], r["loss"]), lambda r: HEAD_COLOR.get(r["loss"])),
            ("MTCNN: each stage, validation crops", detection, "val_crop_accuracy", "accuracy (%), higher is better",
             lambda r: str(r["model"]), lambda r: STAGE_COLOR.get(r["model"]))):
        points = []
        for _, row in rows.iterrows():
            wall, value = run_metric(row, "train_wall_s"), run_metric(row, metric)
            if wall is not None and value is not None:
                points.append((label(row), color(row) or "tab:gray", MARKER.get(row["model"], "o"), wall, 100 * value))
        if points:
            panels.append((title, ylabel, points))
    return panels


def cost_figure(panels) -> bytes:
    """A panel per paper (two per row): each row's metric against its training wall time, labelled beside
    its point. The time axis is logarithmic where the times span more than 20x, else linear."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = new_figure(5.2 * cols, 3.6 * rows)
    for i, (title, ylabel, points) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for text, color, marker, wall, value in points:
            ax.scatter([wall], [value], color=color, marker=marker, s=30, zorder=3)
            ax.annotate(text, (wall, value), textcoords="offset points", xytext=(5, 3), fontsize=7, color="0.25")
        walls = [p[3] for p in points]
        if max(walls) > 20 * min(walls):
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("training wall time (s, log scale)", fontsize=8)
        else:
            ax.set_xlabel("training wall time (s)", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.3, y=0.12)
    return png_bytes(fig)
