"""The Wing loss paper's comparisons laid out as the paper lays them out, and what our rows say of them.

Two tables: the loss comparison on AFLW-Full (a row per loss; a column group per system: CNN-6 and
the two-stage CNN-6/7, each without and with pose-based data balancing), and the 300-W results on
the common, challenging and full sets (a row per system and loss; the eye-centre normaliser the
paper uses). Each cell has our figure, the paper's where it gives one, and the run behind ours.

Then the findings, computed from the rows so they stay true when the runs change: whether our loss
ordering matches the paper's, whether PDB and the second stage lower the error as they do in the
paper, and whether Wing beats L2 and L1 (the paper's central claim).
"""

from __future__ import annotations

import pandas as pd

from facebench.report.cells import (
    CLAIMS_LINK, DASH, LOSS_LABEL, PAPER_MODEL, metric_cell, other_code_note, paper_cell, run_cell, run_metric,
)
from facebench.report.document import Block, Bullets, Heading, Para, Table
from facebench.report.landmarks import sources
from facebench.report.paper_numbers import PaperNumber, lookup

LOSSES = ("l2", "l1", "smooth_l1", "wing")
SYSTEMS = (("cnn6", False), ("cnn6", True), ("cnn7", False), ("cnn7", True))  # (model, PDB)
SYSTEM_LABEL = {("cnn6", False): "CNN-6", ("cnn6", True): "CNN-6 + PDB",
                ("cnn7", False): "CNN-6/7", ("cnn7", True): "CNN-6/7 + PDB"}
W300_SPLITS = ("common", "challenging", "full")


def _row(runs: pd.DataFrame, dataset: str, model: str, pdb: bool, loss: str) -> pd.Series | None:
    """The leaderboard row of one (dataset, system, loss) cell of the paper's matrix, if it ran."""
    if runs.empty:
        return None
    hit = runs[(runs["dataset"] == dataset) & (runs["model"] == model) & (runs["pdb"] == pdb)
               & (runs["loss"] == loss) & (runs["variant"].fillna("") == "")]
    return None if hit.empty else hit.iloc[0]


def _shown(runs: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The rows a table of ``dataset`` shows (one per system and loss that ran), for the note under it."""
    rows = [_row(runs, dataset, *system, loss) for system in SYSTEMS for loss in LOSSES]
    return pd.DataFrame([r for r in rows if r is not None])


def _systems(runs: pd.DataFrame, dataset: str) -> list[tuple[str, bool]]:
    return [s for s in SYSTEMS if any(_row(runs, dataset, *s, loss) is not None for loss in LOSSES)]


def _paper(dataset: str, split: str, model: str, loss: str, pdb: bool, kind: str) -> PaperNumber | None:
    return lookup(dataset, split, PAPER_MODEL.get(model, model), loss, pdb, kind)


def aflw_loss_table(runs: pd.DataFrame) -> tuple[Table, list[PaperNumber]] | None:
    """AFLW-Full test, NME in % of the box width: a row per loss, a column group (ours, paper, run) per system."""
    systems = _systems(runs, "aflw")
    if not systems:
        return None
    headers = ["loss"]
    for system in systems:
        name = SYSTEM_LABEL[system]
        headers += [f"{name}: ours", f"{name}: paper", f"{name}: run"]
    rows, cited = [], []
    for loss in LOSSES:
        cells = [LOSS_LABEL[loss]]
        for model, pdb in systems:
            row = _row(runs, "aflw", model, pdb, loss)
            number = _paper("aflw", "test", model, loss, pdb, "face_size")
            cells += [DASH if row is None else metric_cell(row, "test_test_nme"), paper_cell(number),
                      DASH if row is None else run_cell(row)]
            if number is not None and number not in cited:
                cited.append(number)
        rows.append(cells)
    right = [False] + [True, True, False] * len(systems)
    return Table(headers, rows, right), cited


def w300_table(runs: pd.DataFrame) -> tuple[Table, list[PaperNumber]] | None:
    """300-W common/challenging/full, NME in % of the eye-centre distance (the Wing paper's 300-W normaliser)."""
    systems = _systems(runs, "w300")
    if not systems:
        return None
    headers = ["system", "loss", "run"]
    for split in W300_SPLITS:
        headers += [f"{split}: ours", f"{split}: paper"]
    rows, cited = [], []
    for model, pdb in systems:
        for loss in LOSSES:
            row = _row(runs, "w300", model, pdb, loss)
            if row is None:
                continue
            cells = [SYSTEM_LABEL[(model, pdb)], LOSS_LABEL[loss], run_cell(row)]
            for split in W300_SPLITS:
                number = _paper("w300", split, model, loss, pdb, "inter_pupil")
                cells += [metric_cell(row, f"test_{split}_nme_ip"), paper_cell(number)]
                if number is not None and number not in cited:
                    cited.append(number)
            rows.append(cells)
    return Table(headers, rows, [False, False, False] + [True, True] * len(W300_SPLITS)), cited


# --- findings -----------------------------------------------------------------------------------------------
def _ours(runs: pd.DataFrame, dataset: str, metric: str, model: str, pdb: bool) -> dict[str, float]:
    out = {}
    for loss in LOSSES:
        row = _row(runs, dataset, model, pdb, loss)
        value = None if row is None else run_metric(row, metric)
        if value is not None:
            out[loss] = value
    return out


def _ranking(values: dict[str, float], scale: float = 100.0) -> str:
    return " < ".join(f"{LOSS_LABEL[k]} {scale * v:.2f}" for k, v in sorted(values.items(), key=lambda kv: kv[1]))


def _order(values: dict[str, float]) -> list[str]:
    return [k for k, _ in sorted(values.items(), key=lambda kv: kv[1])]


def findings(runs: pd.DataFrame, dataset: str, split: str, metric: str, kind: str) -> list[str]:
    """What our rows on one split say of the paper's claims, each beside the paper's own evidence."""
    items = []
    for model, pdb in _systems(runs, dataset):
        ours = _ours(runs, dataset, metric, model, pdb)
        if len(ours) < 2:
            continue
        paper = {loss: n.nme_percent for loss in LOSSES
                 if (n := _paper(dataset, split, model, loss, pdb, kind)) is not None}
        text = f"{SYSTEM_LABEL[(model, pdb)]}, loss ordering on {split}: ours {_ranking(ours)}"
        if len(paper) >= 2:
            common = [k for k in _order({k: v for k, v in paper.items() if k in ours})]
            same = [k for k in _order(ours) if k in paper] == common
            text += (f"; the paper {_ranking(paper, 1.0)}: **{'the same order' if same else 'not the same order'}**"
                     f" over the {len(common)} losses both give")
        items.append(text + ".")
    for loss_a, loss_b in (("wing", "l2"), ("wing", "l1")):
        wins, total = 0, 0
        for model, pdb in _systems(runs, dataset):
            ours = _ours(runs, dataset, metric, model, pdb)
            if loss_a in ours and loss_b in ours:
                total += 1
                wins += ours[loss_a] < ours[loss_b]
        if total:
            items.append(f"{LOSS_LABEL[loss_a]} below {LOSS_LABEL[loss_b]} (the paper's claim): in {wins} of our "
                         f"{total} systems.")
    for what, pairs, paper_text in (
            ("PDB", [((m, False), (m, True)) for m in ("cnn6", "cnn7")],
             "the paper's author: CNN-6 + L1 on AFLW 2.00 without PDB, 1.89 with"),
            ("The second stage (CNN-6/7 against CNN-6)", [(("cnn6", p), ("cnn7", p)) for p in (False, True)],
             "the paper: CNN-6/7 + Wing 1.65 on AFLW against 1.88 for CNN-6 + Wing")):
        better, total, deltas = 0, 0, []
        for before, after in pairs:
            a, b = _ours(runs, dataset, metric, *before), _ours(runs, dataset, metric, *after)
            for loss in LOSSES:
                if loss in a and loss in b:
                    total += 1
                    better += b[loss] < a[loss]
                    deltas.append(100.0 * (b[loss] - a[loss]))
        if total:
            mean = sum(deltas) / len(deltas)
            items.append(f"{what} lowered the NME in {better} of {total} (system, loss) pairs; mean change "
                         f"{mean:+.2f} points, negative is better ({paper_text}).")
    return items


def wing_section(runs: pd.DataFrame, synthetic: bool) -> list[Block]:
    """The Wing paper's tables and the findings; empty when no Wing-paper row ran."""
    rows = runs[runs["paper"] == "wing"] if not runs.empty else runs
    aflw, w300 = aflw_loss_table(rows), w300_table(rows)
    if aflw is None and w300 is None:
        return []
    blocks: list[Block] = [
        Heading(2, "Wing loss paper: the paper's tables"),
        Para("The Wing paper's comparisons laid out as the paper lays them out; each cell gives our figure, the"
             f" paper's ({DASH} where it gives none) and the MLflow run. Lower is better. All figures here are on"
             " the test splits; each row's validation NME, the per-split detail, the robustness figures and the"
             " CED curves are in the dataset sections below."),
    ]
    cited: list[PaperNumber] = []
    for heading, text, built, split, metric, kind in (
            ("AFLW-Full: loss functions, PDB and the two-stage system",
             "Test set (all 19 points' NME in % of the face-box width, the author's AFLW-Full protocol).",
             aflw, "test", "test_test_nme", "face_size"),
            ("300-W: common, challenging and full sets",
             "NME in % of the eye-centre distance, the Wing paper's 300-W normaliser (the outer-corner figures are"
             " in the 300-W section).", w300, "full", "test_full_nme_ip", "inter_pupil")):
        if built is None:
            continue
        table, numbers = built
        cited += [n for n in numbers if n not in cited]
        dataset = "aflw" if split == "test" else "w300"
        blocks += [Heading(3, heading), Para(text), table] + other_code_note(_shown(rows, dataset))
        found = findings(rows, dataset, split, metric, kind)
        if found:
            blocks += [Para("What these rows say of the paper's claims:"), Bullets(found)]
    if cited:
        blocks += [Para("Paper figures in these tables:"), Bullets(sources(cited))]
    if synthetic:
        seeded = "seeds" in rows.columns and bool((rows["seeds"].fillna(1) > 1).any())
        spread = ("Where a row ran several seeds (`seeds` in params.yaml), compare its differences with the"
                  " standard deviation beside them; a single-seed row's differences of a few tenths may be"
                  " run-to-run noise." if seeded else
                  "Each row is one seed, so differences of a few tenths may be run-to-run noise (a row's `seeds`"
                  " list in params.yaml, or `facebench train --seed`, adds seeds; cells then show mean ± standard"
                  " deviation).")
        blocks.append(Para(
            "Whether the synthetic data reproduces the paper's ordering is read off the findings above, not"
            " assumed. Why it does not here, and where it does (longer training, more seeds): the claims study,"
            f" [claims.md]({CLAIMS_LINK}), tests it with computed findings. {spread}"))
    return blocks
