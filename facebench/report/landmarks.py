"""The landmark sections, one per dataset (300-W, AFLW-Full): the Wing paper's coordinate regression and the
Adaptive Wing paper's heatmap regression side by side, NME per split beside the papers' figures,
robustness (AUC and failure rate), the AWing ablation, and the papers' figures for models no run trains.
"""

from __future__ import annotations

import pandas as pd

from facebench.report.awing import ablation_table
from facebench.report.cells import (
    DAGGER, DATASET_LABEL, KIND_NAME, LOSS_LABEL, MODEL_LABEL, NORMALISER_TEXT, OUR_LABEL, PAPER_LABEL, PAPER_MODEL,
    PRIMARY, TRAINED_MODELS, cost_note, head_columns, label, metric_cell, other_code_note, paper_cell, row_head,
    run_metric,
)
from facebench.report.document import Block, Bullets, Heading, Image, Para, Table
from facebench.report.leaderboard import splits_of
from facebench.report.paper_numbers import PAPER_NUMBERS, PaperNumber, lookup


def _kinds(dataset: str, frames: list[pd.DataFrame]) -> list[tuple[str, str]]:
    """(metric suffix, normaliser kind) for each NME column this dataset has: primary, then inter-pupil."""
    kinds = [("nme", PRIMARY.get(dataset, "primary"))]
    if any(c.endswith("_nme_ip") and f[c].notna().any() for f in frames for c in f.columns):
        kinds.append(("nme_ip", "inter_pupil"))
    return kinds


def _papered(dataset: str, kind: str) -> bool:
    """Whether the paper publishes any figure of this kind on this dataset (else no paper column)."""
    return any(n.dataset == dataset and n.normaliser == kind for n in PAPER_NUMBERS)


def _rows(runs: pd.DataFrame, baseline: pd.DataFrame) -> list[tuple[pd.Series, bool]]:
    return [(r, False) for _, r in runs.iterrows()] + [(r, True) for _, r in baseline.iterrows()]


def _val_kinds(dataset: str, frames: list[pd.DataFrame]) -> list[tuple[str, str]]:
    """(metric suffix, normaliser kind) of each validation NME the rows logged: ``val_nme`` (primary) and,
    on 300-W, ``val_nme_ip``."""
    return [(suffix, kind) for suffix, kind in (("nme", PRIMARY.get(dataset, "primary")), ("nme_ip", "inter_pupil"))
            if any(f"metrics.val_{suffix}" in f.columns and f[f"metrics.val_{suffix}"].notna().any() for f in frames)]


def nme_table(dataset: str, runs: pd.DataFrame, baseline: pd.DataFrame, with_profile: bool
              ) -> tuple[Table, list[PaperNumber]]:
    """Rows = (model, loss, PDB) and the baseline; the validation NME(s) after the last epoch, then per
    test split our NME(s), each paper column beside its kind."""
    splits = splits_of(dataset, [runs, baseline])
    kinds = _kinds(dataset, [runs, baseline])
    val_kinds = _val_kinds(dataset, [runs, baseline])
    headers = head_columns(with_profile, cost=True) + [f"val NME {OUR_LABEL[kind]}" for _, kind in val_kinds]
    for split in splits:
        for _, kind in kinds:
            headers.append(f"{split} NME {OUR_LABEL[kind]}")
            if _papered(dataset, kind):
                headers.append(f"{split} paper NME {PAPER_LABEL[kind]}")
    rows, cited = [], []
    for row, is_baseline in _rows(runs, baseline):
        cells = row_head(row, is_baseline, with_profile, cost=True)
        cells += [metric_cell(row, f"val_{suffix}") for suffix, _ in val_kinds]
        for split in splits:
            for suffix, kind in kinds:
                cells.append(metric_cell(row, f"test_{split}_{suffix}"))
                if _papered(dataset, kind):
                    ablated = bool(row.get("variant", ""))  # the papers' figures are for the full model
                    model = PAPER_MODEL.get(row["model"], row["model"])
                    number = None if is_baseline or ablated else lookup(dataset, split, model, row["loss"],
                                                                        bool(row["pdb"]), kind)
                    cells.append(paper_cell(number))
                    if number is not None and number not in cited:
                        cited.append(number)
        rows.append(cells)
    n_head = len(head_columns(with_profile, cost=True))
    return Table(headers, rows, [False] * n_head + [True] * (len(headers) - n_head)), cited


def robustness_table(dataset: str, runs: pd.DataFrame, baseline: pd.DataFrame, with_profile: bool) -> Table:
    """AUC and failure rate at 0.08 and 0.10 (primary normaliser), one row per (split, row)."""
    splits = splits_of(dataset, [runs, baseline])
    headers = ["split"] + head_columns(with_profile) + ["AUC@0.08 (%)", "FR@0.08 (%)", "AUC@0.1 (%)",
                                                          "FR@0.1 (%)"]
    rows = []
    for split in splits:
        for row, is_baseline in _rows(runs, baseline):
            if run_metric(row, f"test_{split}_nme") is None:
                continue
            rows.append([split] + row_head(row, is_baseline, with_profile)
                        + [metric_cell(row, f"test_{split}_{m}") for m in ("auc08", "fr08", "auc10", "fr10")])
    n_head = 1 + len(head_columns(with_profile))
    return Table(headers, rows, [False] * n_head + [True] * (len(headers) - n_head))


def other_models_table(dataset: str, trained: set[str] = frozenset()) -> Table | None:
    """The paper's figures for models no run here trains: shown apart, never beside a CNN-6 row."""
    shown = set(TRAINED_MODELS) | {PAPER_MODEL.get(m, m) for m in trained}
    numbers = [n for n in PAPER_NUMBERS if n.dataset == dataset and n.model not in shown]
    if not numbers:
        return None
    rows = [[label(MODEL_LABEL, n.model), label(LOSS_LABEL, n.loss), n.split, KIND_NAME[n.normaliser],
             paper_cell(n), n.source] for n in numbers]
    return Table(["model", "loss", "split", "normaliser", "paper NME (%)", "source"], rows,
                 [False, False, False, False, True, False])


def sources(cited: list[PaperNumber]) -> list[str]:
    items = []
    for n in cited:
        what = f"{label(MODEL_LABEL, n.model)} + {label(LOSS_LABEL, n.loss)}" + (" + PDB" if n.pdb else "")
        mark = "" if n.verified else f" {DAGGER} not verified against the paper"
        note = f" ({n.note})" if n.note else ""
        items.append(f"{what}, {n.split}: {paper_cell(n)} — {n.source}{note}.{mark}")
    return items


def dataset_section(dataset: str, runs: pd.DataFrame, baseline: pd.DataFrame, figures: list[Image],
                    with_profile: bool) -> list[Block]:
    kind = PRIMARY.get(dataset, "primary")
    blocks: list[Block] = [Heading(2, f"{DATASET_LABEL.get(dataset, dataset)} (`{dataset}`)")]
    text = (f"NME in % of {NORMALISER_TEXT.get(kind, 'the dataset normaliser')}, mean over the faces of a split;"
            " lower is better. **val**: the validation split (held out from training), after the last epoch;"
            " the test splits are evaluated once, after the last epoch.")
    if dataset == "w300":
        text += (" 300-W is shown with both normalisers: **io** divides by the outer eye corners (300-W challenge,"
                 " HRNet, MMPose, Adaptive Wing), **ip** by the eye centres (the Wing paper's 300-W figures)."
                 " The two are not comparable; each paper column stands beside our column of its own kind.")
    blocks.append(Para(text))
    table, cited = nme_table(dataset, runs, baseline, with_profile)
    blocks.append(table)
    blocks.extend(cost_note(runs))
    blocks.extend(other_code_note(runs))
    if cited:
        blocks.append(Para("Paper figures in this table:"))
        blocks.append(Bullets(sources(cited)))
    ablation = ablation_table(dataset, runs)
    if ablation is not None:
        blocks.append(Heading(3, "Adaptive Wing ablation"))
        blocks.append(Para("The stacked hourglass with AWing, each row turning one of the paper's parts off (primary"
                           " normaliser). The paper's own ablation is on its full-size network and the real data."))
        blocks.append(ablation)
    others = other_models_table(dataset, set(runs["model"]) if len(runs) else set())
    if others is not None:
        blocks.append(Para("The papers' own systems on this dataset use models we do not train here; they are listed"
                           " apart from our rows, with the normaliser each figure uses:"))
        blocks.append(others)
    blocks.append(Heading(3, "AUC and failure rate"))
    blocks.append(Para("Primary normaliser. AUC@t: area under the CED up to t, divided by t (higher is better);"
                       " FR@t: share of faces with NME above t (lower is better)."))
    blocks.append(robustness_table(dataset, runs, baseline, with_profile))
    if figures:
        blocks.append(Heading(3, "Cumulative error distribution"))
        blocks.extend(figures)
    return blocks
