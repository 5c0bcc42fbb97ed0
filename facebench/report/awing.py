"""The Adaptive Wing paper's ablation table: which parts (weighted loss map, boundary, CoordConv) each AWing
hourglass run had, read from its params, and its NME per split.
"""

from __future__ import annotations

import pandas as pd

from facebench.report.cells import DASH, pct, run_cell, run_metric
from facebench.report.document import Table
from facebench.report.leaderboard import splits_of

# The AWing ablation axes: the run's params (the heatmap task logs its settings as params.heatmap.*).
ABLATION_PARAMS = ("params.heatmap.weight_map", "params.heatmap.boundary", "params.heatmap.coordconv")


def ablation_table(dataset: str, runs: pd.DataFrame) -> Table | None:
    """The Adaptive Wing ablation: AWing hourglass rows, which parts were on, NME per split (primary)."""
    rows_in = runs[(runs["model"] == "hourglass") & (runs["loss"] == "awing")] if not runs.empty else runs
    if rows_in.empty or not rows_in["variant"].astype(bool).any():
        return None
    splits = splits_of(dataset, [rows_in])
    headers = (["weighted loss map", "boundary", "CoordConv", "run", "val NME (%)"]
               + [f"{s} NME (%)" for s in splits])
    rows = []
    for _, row in rows_in.iterrows():
        rows.append([_on_off(row.get(name)) for name in ABLATION_PARAMS] + [run_cell(row)]
                    + [pct(run_metric(row, "val_nme"))] + [pct(run_metric(row, f"test_{s}_nme")) for s in splits])
    return Table(headers, rows, [False] * 4 + [True] * (1 + len(splits)))


def _on_off(param: object) -> str:
    """A logged switch ("True"/"False") as the ablation table shows it; a dash where the run has none."""
    return {"true": "yes", "false": "no"}.get(str(param).lower(), DASH)
