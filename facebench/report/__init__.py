"""Leaderboard reports regenerated from MLflow: reports/leaderboard.md, .html and figures/*.png.

``build_report`` is what ``facebench report`` and the DVC ``report`` stage call. It reads the tracking
store, the prepared test and validation splits (for the baseline) and the facebench sources each task's
training imports (their hash now, against each run's ``facebench.code_hash``: rows trained with other
code are flagged); the same runs and code give byte-identical outputs, so DVC sees no change unless a
result changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facebench.atomic import atomic_write_bytes, atomic_write_text
from facebench.report import cells, cosface, document, figures, mtcnn, page, summary, sweeps, wing
from facebench.report.leaderboard import (
    baseline_ced, baseline_errors, baseline_frame, collect_runs, collect_sweeps, current_code_hashes, load_ced,
    load_curve, mark_other_code, splits_of,
)

__all__ = ["build_report"]

LANDMARK_TASKS = ("landmarks", "heatmaps")  # coordinate and heatmap regression share the landmark tables


def _ced_figures(tracking_uri: str, runs: pd.DataFrame, baselines: pd.DataFrame,
                 errors: dict[str, dict[str, dict[str, np.ndarray]]], datasets: list[str], with_profile: bool
                 ) -> tuple[dict[str, bytes], dict[str, list[document.Image]], list[str]]:
    """One CED figure per dataset/split: a curve per run (from its artifact) plus the baseline.

    Returns the PNG bytes by file name, the figures per dataset, and the run:split curves missing.
    """
    pngs: dict[str, bytes] = {}
    images: dict[str, list[document.Image]] = {}
    missing: list[str] = []
    for dataset in sorted(datasets):
        ours = runs[runs["dataset"] == dataset] if not runs.empty else runs
        base = baselines[baselines["dataset"] == dataset] if not baselines.empty else baselines
        for split in splits_of(dataset, [ours, base]):
            curves = []
            for _, run in ours.iterrows():
                try:
                    table = load_ced(tracking_uri, run["run_id"], split)
                except FileNotFoundError:
                    missing.append(f"{run['experiment']}:{split}")
                    continue
                curves.append((cells.run_label(run, with_profile), table,
                               figures.curve_style(run["loss"], bool(run["pdb"]), str(run.get("variant", "") or ""),
                                                  run["model"])))
            if split in errors.get(dataset, {}):
                curves.append(("mean shape (baseline)", baseline_ced(errors[dataset][split]["nme"]),
                               figures.BASELINE_STYLE))
            if not curves:
                continue
            name = f"ced_{dataset}_{split}.png"
            kind = cells.OUR_LABEL[cells.PRIMARY.get(dataset, "primary")]
            title = f"{cells.DATASET_LABEL.get(dataset, dataset)} {split}: CED, NME {kind}"
            pngs[name] = figures.ced_figure(title, curves)
            images.setdefault(dataset, []).append(document.Image(name, (
                f"{title}: the fraction of {split} faces whose NME is below x. One colour per loss, one line style"
                " per system (the same in every figure); grey dashes: the mean-shape baseline; dotted verticals:"
                " the 8% and 10% thresholds of the AUC and failure-rate table.")))
    return pngs, images, missing


def _recognition_figures(tracking_uri: str, runs: pd.DataFrame, with_profile: bool
                         ) -> tuple[dict[str, bytes], list[document.Image], list[str]]:
    """The ROC figure of the recognition runs (the curves they logged)."""
    pngs: dict[str, bytes] = {}
    images: list[document.Image] = []
    missing: list[str] = []
    curves = []
    for _, run in runs.iterrows():
        try:
            table = load_curve(tracking_uri, run["run_id"], "roc/lfw.csv", "fpr", "tpr")
        except FileNotFoundError:
            missing.append(f"{run['experiment']}:roc")
            continue
        text = cosface.HEAD_LABEL.get(run["loss"], run["loss"]) + (f" [{run['profile']}]" if with_profile else "")
        curves.append((text, run["loss"], table))
    if curves:
        pngs["roc_lfw.png"] = cosface.roc_figure(curves)
        images.append(document.Image("roc_lfw.png", "LFW-protocol ROC of each head: true accept rate against"
                                    " false accept rate over all pairs (log axis), one colour per head."))
    return pngs, images, missing


def _sweep_figures(trials: pd.DataFrame) -> tuple[dict[str, bytes], dict[tuple[str, str], document.Image]]:
    """One figure per sweep (and profile) whose grid varies one or two parameters."""
    pngs: dict[str, bytes] = {}
    images: dict[tuple[str, str], document.Image] = {}
    if trials.empty:
        return pngs, images
    for (sweep, profile), group in trials.groupby(["sweep", "profile"], sort=True):
        png = sweeps.sweep_figure(sweep, group)
        if png is not None:
            name = f"sweep_{sweep}_{profile}.png"
            pngs[name] = png
            metric = sweeps.METRIC_LABEL.get(str(group["metric"].iloc[0]), str(group["metric"].iloc[0]))
            images[(sweep, profile)] = document.Image(name, (
                f"Sweep `{sweep}` (profile `{profile}`): {metric} on the validation split against the first varied"
                " loss parameter, one line per value of the second. Circles joined by a line: trials that ran every"
                " epoch; crosses, not joined: trials ASHA stopped early (scored after fewer epochs)."))
    return pngs, images


def _newest_date(shown: pd.DataFrame) -> str:
    """When the newest run shown finished (UTC date): the report's date, read from the runs, not the clock."""
    if shown.empty or "end_time" not in shown or shown["end_time"].isna().all():
        return ""
    return pd.Timestamp(int(shown["end_time"].max()), unit="ms", tz="UTC").strftime("%Y-%m-%d")


def build_report(tracking_uri: str, prepared_root: Path, out_dir: Path, profile: str | None,
                 datasets: list[str], provenance: dict[str, str] | None = None,
                 mlflow_ui: str | None = None) -> dict[str, Any]:
    """Write the leaderboard for ``datasets`` from the newest finished runs of ``profile`` (None: all).

    Every file is written whole (temporary file, then rename). Returns a summary: the files
    written, the runs and sweeps shown, the baselines computed, any curve (CED, ROC) a run lacked and
    ``other_code``: the rows shown whose runs were trained with other code than this report's (marked in
    the tables). Recognition runs (any dataset) get a section of their own.
    """
    out_dir = Path(out_dir)
    every = collect_runs(tracking_uri, profile)
    if not every.empty:
        every = mark_other_code(every, current_code_hashes(every["task"]))
    runs = every
    if not runs.empty:
        runs = runs[runs["task"].isin(LANDMARK_TASKS) & runs["dataset"].isin(datasets)].reset_index(drop=True)
    rec_runs = cosface.recognition_runs(every)
    det_runs = mtcnn.detection_runs(every)
    trials = collect_sweeps(tracking_uri, profile)
    errors = baseline_errors(Path(prepared_root), datasets)
    baselines = baseline_frame(errors)
    pngs, ced_images, missing = _ced_figures(tracking_uri, runs, baselines, errors, datasets, profile is None)
    rec_pngs, rec_figures, rec_missing = _recognition_figures(tracking_uri, rec_runs, profile is None)
    pngs.update(rec_pngs)
    sweep_pngs, sweep_figures = _sweep_figures(trials)
    pngs.update(sweep_pngs)
    missing += rec_missing
    shown = pd.concat([f for f in (runs, rec_runs, det_runs) if not f.empty]) if not (
        rec_runs.empty and det_runs.empty) else runs
    experiments = {}
    if not shown.empty and "experiment_id" in shown:
        experiments = {f"facebench/{paper}": str(eid) for paper, eid in zip(shown["paper"], shown["experiment_id"])}
    provenance = {**(provenance or {}), "date": _newest_date(shown), "experiments": experiments}
    panels = summary.cost_points(runs, rec_runs, det_runs)
    cost_image = None
    if panels:
        pngs["cost.png"] = summary.cost_figure(panels)
        cost_image = document.Image("cost.png", "Accuracy against training cost: each row's test metric (MTCNN: each"
                                  " stage's validation accuracy) against the wall time of its training, a panel per"
                                  " paper; colour is the loss or head, marker the model.")

    doc = page.build_document(runs, baselines, trials, profile, datasets, ced_images,
                              recognition=(cosface.recognition_section(rec_runs, rec_figures, profile is None)
                                           + mtcnn.detection_section(det_runs)),
                              listed=shown, sweep_figures=sweep_figures,
                              paper_tables=wing.wing_section(runs, synthetic=profile != "paper"),
                              summary=summary.summary_section(runs, rec_runs, det_runs, cost_image),
                              provenance=provenance)
    markdown, html = document.to_markdown(doc, mlflow_ui), document.to_html(doc, pngs, mlflow_ui)
    written = []
    for name, data in sorted(pngs.items()):
        atomic_write_bytes(out_dir / "figures" / name, data)
        written.append(str(out_dir / "figures" / name))
    atomic_write_text(out_dir / "leaderboard.md", markdown)
    atomic_write_text(out_dir / "leaderboard.html", html)

    def run_key(row: pd.Series) -> str:
        return row["experiment"] if profile else f"{row['experiment']}@{row['profile']}"

    return {
        "markdown": str(out_dir / "leaderboard.md"),
        "html": str(out_dir / "leaderboard.html"),
        "figures": written,
        "profile": profile,
        "runs": {run_key(row): row["run_id"] for _, row in shown.iterrows()},
        "sweeps": sorted(set(trials["sweep"])) if not trials.empty else [],
        "baselines": [f"{d}/{s}" for d in sorted(errors) for s in errors[d]],
        "missing_curves": missing,
        "other_code": [run_key(row) for _, row in shown.iterrows() if row.get("other_code")],
    }
