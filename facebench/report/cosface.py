"""The recognition leaderboard (CosFace paper): five heads on one backbone, verified by the LFW protocol.

Rows are the newest finished recognition runs, one per head: the validation accuracy (the same protocol on
pairs of the training set's held-out identities, after the last epoch), then LFW-protocol accuracy (10 folds, threshold
chosen on the other nine, image + mirror embeddings, cosine score), its spread over the folds, TAR at
FAR 1e-3 and 1e-4 over all pairs, and the paper's LFW figure for that head where it gives one.
Figure: the ROC curve of every head (the margin sweep is drawn with the other sweeps, sweeps.sweep_figure).
"""

from __future__ import annotations

import pandas as pd

from facebench.report.cells import (
    DAGGER, DASH, cited_cell, cost_cell, cost_note, other_code_note, pct, run_cell, run_metric,
)
from facebench.report.document import Block, Heading, Image, Para, Table
from facebench.report.figures import new_figure, png_bytes
from facebench.report.paper_numbers import RECOGNITION_NUMBERS, recognition_lookup

HEAD_ORDER = ("softmax", "nsl", "sphereface", "cosface", "arcface")
HEAD_LABEL = {"softmax": "Softmax", "nsl": "NSL (normalised softmax)", "sphereface": "A-Softmax (SphereFace)",
              "cosface": "LMCL (CosFace)", "arcface": "ArcFace"}
HEAD_COLOR = {"softmax": "tab:blue", "nsl": "tab:orange", "sphereface": "tab:green", "cosface": "tab:red",
              "arcface": "tab:purple"}
FARS = ("0.001", "0.0001")


def recognition_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The recognition rows of ``collect_runs``, in the papers' order of heads."""
    if runs.empty:
        return runs
    rec = runs[runs["task"] == "recognition"].copy()
    rec["_order"] = [HEAD_ORDER.index(h) if h in HEAD_ORDER else len(HEAD_ORDER) for h in rec["loss"]]
    return rec.sort_values(["dataset", "_order", "experiment", "profile"], kind="mergesort").drop(columns="_order")


def backbone_label(row: pd.Series) -> str:
    depth = row.get("params.backbone_depth")
    return f"SphereFace-{depth}" if isinstance(depth, str) and depth else "SphereFace"


def _paper_cell(loss: str) -> str:
    number = recognition_lookup(loss)
    return DASH if number is None else cited_cell(number.lfw_percent, number.verified)


def leaderboard_table(runs: pd.DataFrame, with_profile: bool) -> Table:
    headers = (["head", "backbone", "train set", "verified on"] + (["profile"] if with_profile else [])
               + ["run", "cost", "val accuracy (%)", "LFW accuracy (%)", "± over folds", "TAR@FAR 1e-3 (%)",
                  "TAR@FAR 1e-4 (%)", "paper LFW (%)"])
    rows = []
    for _, row in runs.iterrows():
        rows.append([HEAD_LABEL.get(row["loss"], row["loss"]), backbone_label(row), f"`{row['dataset']}`",
                     f"`{row.get('params.eval_dataset') or DASH}`"]
                    + ([f"`{row['profile']}`"] if with_profile else [])
                    + [run_cell(row), cost_cell(row), pct(run_metric(row, "val_accuracy")), pct(run_metric(row, "lfw_accuracy")),
                       pct(run_metric(row, "lfw_accuracy_std"))]
                    + [pct(run_metric(row, f"lfw_tar_at_far_{far}")) for far in FARS] + [_paper_cell(row["loss"])])
    n_text = 6 + (1 if with_profile else 0)
    return Table(headers, rows, [False] * n_text + [True] * (len(headers) - n_text))


def roc_figure(curves: list[tuple[str, str, pd.DataFrame]]) -> bytes:
    """ROC of each head (label, head key, fpr/tpr table), log-scaled FAR; PNG bytes without metadata."""
    fig = new_figure(8.4, 3.8)
    ax = fig.add_subplot()
    for text, head, curve in curves:
        fpr = curve["fpr"].to_numpy().clip(min=1e-4)  # a log axis cannot show 0: the left edge stands for it
        ax.plot(fpr, curve["tpr"].to_numpy(), label=text, color=HEAD_COLOR.get(head, "tab:gray"), linewidth=1.6,
                drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate (log; 1e-4 stands for 0)")
    ax.set_ylabel("true accept rate")
    ax.grid(True, alpha=0.3)
    ax.set_title("LFW-protocol pairs: ROC", fontsize=10)
    if curves:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    return png_bytes(fig)


def recognition_section(runs: pd.DataFrame, figures: list[Image], with_profile: bool) -> list[Block]:
    """Nothing when there is no recognition run (a landmark-only project's report has no such section)."""
    if runs.empty:
        return []
    blocks: list[Block] = [Heading(2, "Face recognition: CASIA-WebFace to LFW (CosFace paper)")]
    blocks.append(Para(
        "Each head trains the same backbone on the identity set and is verified on LFW-layout pairs: every image is"
        " embedded with its mirror (summed), a pair's score is the cosine of the two embeddings, and accuracy is the"
        " mean over the folds of the accuracy at the threshold chosen on the other folds (**higher is better**;"
        " chance is 50%). **val accuracy**: the same protocol on pairs of the identities held out of the training"
        " set (the split per-epoch checks and the margin sweep see), after the last epoch; LFW is the test set,"
        " evaluated once at the end. TAR@FAR is over all pairs: with n impostor pairs, a FAR below 1/n allows no"
        " false accept."
        f" Paper figures are LFW accuracies of a 64-layer network trained on the real CASIA-WebFace; {DAGGER} marks"
        " a figure not verified against the paper."))
    blocks.append(leaderboard_table(runs, with_profile))
    blocks.extend(cost_note(runs))
    blocks.extend(other_code_note(runs))
    cited = [n for n in RECOGNITION_NUMBERS if n.loss in set(runs["loss"])]
    if cited:
        blocks.append(Para("Sources: " + "; ".join(
            f"{HEAD_LABEL.get(n.loss, n.loss)} {cited_cell(n.lfw_percent, n.verified)} — {n.source}"
            + (f" ({n.note})" if n.note else "") for n in cited) + "."))
    blocks.extend(figures)
    return blocks
