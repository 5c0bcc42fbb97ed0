"""The whole leaderboard document: the header with its provenance, the summary, the papers' sections, the
sweeps and the list of runs with their cost and the code they were trained with.
"""

from __future__ import annotations

import pandas as pd

from facebench.report.cells import (
    DAGGER, DASH, DATASET_LABEL, OTHER_CODE, code_cell, device_cell, other_code_note, run_metric, short, wall_text,
)
from facebench.report.document import Block, Heading, Image, Para, Table
from facebench.report.landmarks import dataset_section
from facebench.report.sweeps import sweep_section

OTHER_COMMIT = "§"  # beside a run trained at another commit than the report's


def other_commit(row: pd.Series, commit: str | None) -> bool:
    code = str(row.get("code_version", "") or "")
    return bool(commit) and code != commit


def runs_section(runs: pd.DataFrame, commit: str | None = None) -> list[Block]:
    """Where each row came from and what it cost: run, code version (marked where it is not this report's
    code or commit), schedule, loss parameters, wall time, device, images/s, GPU-hours."""
    blocks: list[Block] = [Heading(2, "Runs")]
    if runs.empty:
        return blocks + [Para("No finished training run in the store for this profile.")]
    rows = []
    for _, run in runs.iterrows():
        loss_params = []
        for prefix in ("params.loss.", "params.loss_params."):
            for col in sorted(c for c in runs.columns if c.startswith(prefix)):
                name = col[len(prefix):]
                if isinstance(run[col], str) and name != "weight" and not any(p.startswith(f"{name}=")
                                                                              for p in loss_params):
                    loss_params.append(f"{name}={run[col]}")
        epochs = next((run[c] for c in ("params.train.epochs", "params.epochs")
                       if isinstance(run.get(c), str)), DASH)
        wall, rate, gpu = (run_metric(run, m) for m in ("train_wall_s", "train_images_per_s", "gpu_hours"))
        rows.append([f"`{run['experiment']}`", f"`{run['profile']}`", short(run["run_id"], run.get("experiment_id", "")),
                     code_cell(run) + (f" {OTHER_COMMIT}" if other_commit(run, commit) else ""),
                     epochs, ", ".join(loss_params) or DASH, DASH if wall is None else wall_text(wall),
                     device_cell(run), DASH if rate is None else f"{rate:,.0f}",
                     DASH if gpu is None else f"{gpu:.3g}"])
    blocks.append(Table(["experiment", "profile", "run", "code version", "epochs", "loss parameters", "wall time",
                         "device", "train images/s", "GPU-h"], rows,
                        [False, False, False, False, True, False, True, False, True, True]))
    moved = [f"`{r['experiment']}`" for _, r in runs.iterrows() if other_commit(r, commit)]
    if moved:
        blocks.append(Para(f"{OTHER_COMMIT} trained at another commit than this report's (`{commit[:8]}`"
                           + (", uncommitted changes" if commit.endswith("-dirty") else "") + "): "
                           + ", ".join(dict.fromkeys(moved)) + f". Where the run column has no {OTHER_CODE}, the"
                           " facebench sources its training imports are the same as this report's."))
    return blocks + other_code_note(runs)


def provenance_text(profile: str | None, provenance: dict[str, str] | None) -> str:
    """The header's line: which commit made the report, the profile, where the data came from, and when
    the newest run shown finished (a date from the runs, not the clock: the same runs, the same bytes)."""
    p = provenance or {}
    commit = p.get("commit", "")
    known = commit and commit != "unknown"
    parts = [f"commit `{commit[:8]}{'-dirty' if commit.endswith('-dirty') else ''}`" if known else "commit unknown",
             f"profile `{profile}`" if profile else "every profile",
             f"data: {p['data']}" if p.get("data") else "data: unknown",
             f"newest run finished {p['date']}" if p.get("date") else "no run"]
    experiments = p.get("experiments") or {}
    where = ("; MLflow: " + ", ".join(f"[`{name}`](experiment:{eid})" for name, eid in sorted(experiments.items()))
             if experiments else "")
    return "Report of " + "; ".join(parts) + where + "."


def header(profile: str | None, provenance: dict[str, str] | None = None) -> list[Block]:
    shown = f"`{profile}`" if profile else "all (newest run per experiment and profile)"
    blocks: list[Block] = [
        Heading(1, "facebench leaderboard"),
        Para(provenance_text(profile, provenance)),
        Para("Papers: Wing loss (Feng et al., CVPR 2018), CNN-6 coordinate regression; Adaptive Wing loss"
             " (Wang et al., ICCV 2019), stacked-hourglass heatmap regression with CoordConv, the boundary map and"
             " the weighted loss map; CosFace (Wang et al., CVPR 2018), large-margin cosine loss against Softmax,"
             f" NSL, A-Softmax and ArcFace, verified on LFW-style pairs. Profile: {shown}."),
        Heading(2, "How to read this"),
        Para("Each row is the newest finished MLflow run of one experiment (model, loss, pose-based data"
             " balancing); where runs of other seeds share all its other parameters (`facebench train --seed`),"
             " a cell gives the mean ± the standard deviation over the seeds, and the run column says how many."
             " NME is the mean point-to-point error divided by a per-face normaliser, in %:"
             " **lower is better**. The baseline places the mean training shape in each test face's box and"
             " learns nothing else; a model that does not beat it has not learned the task. A paper figure"
             f" stands only beside our figure of the same kind (dataset, split, model, loss, PDB, normaliser);"
             f" {DASH} means the paper gives none, {DAGGER} marks a figure not verified against the paper."),
        Para("Which split chose what: every prepared set holds a **validation** split out of its training data."
             " Per-epoch checks, ASHA's early stops and the loss-parameter sweeps see only it, and each row's"
             " val column is its validation score after the last epoch. The **test** splits are evaluated once,"
             " after the last epoch, and choose nothing: no hyperparameter is chosen on test."),
        Para(f"Code: the run column's {OTHER_CODE} marks a row trained with other code than this report's (the"
             " run's code hash, over the facebench sources its training imports, differs from the hash of those"
             " sources now, or the run has none); a note under the table names it and the run list gives each"
             " row's commit (with a dirty suffix where the facebench sources differed from it)."),
    ]
    if profile != "paper":
        who = f"Profile `{profile}`" if profile else "Rows from profiles other than `paper`"
        blocks.append(Para(f"{who}: unless params.yaml points a dataset at the real data, the numbers come from"
                           " procedurally generated (synthetic) faces and short schedules. They check the pipeline"
                           " end to end; they are not comparable with the paper's figures."))
    return blocks


def build_document(runs: pd.DataFrame, baselines: pd.DataFrame, trials: pd.DataFrame, profile: str | None,
                   datasets: list[str], figures: dict[str, list[Image]], recognition: list[Block] | None = None,
                   listed: pd.DataFrame | None = None, sweep_figures: dict[tuple[str, str], Image] | None = None,
                   paper_tables: list[Block] | None = None, summary: list[Block] | None = None,
                   provenance: dict[str, str] | None = None) -> list[Block]:
    """The title and provenance, ``summary`` (already built: the answer per paper), how to read the rest,
    ``paper_tables`` (already built: the Wing paper's layout), the landmark sections per dataset, then
    ``recognition`` (already built), the sweeps, and the run list (``listed``: every run shown; the
    landmark runs by default)."""
    top = header(profile, provenance)
    doc = top[:2] + (summary or []) + top[2:] + (paper_tables or [])
    for dataset in sorted(datasets):
        ours = runs[runs["dataset"] == dataset] if not runs.empty else runs
        base = baselines[baselines["dataset"] == dataset] if not baselines.empty else baselines
        if ours.empty and base.empty:
            doc += [Heading(2, f"{DATASET_LABEL.get(dataset, dataset)} (`{dataset}`)"),
                    Para("No finished run and no prepared data for this dataset.")]
            continue
        doc += dataset_section(dataset, ours, base, figures.get(dataset, []), with_profile=profile is None)
    return (doc + (recognition or []) + sweep_section(trials, sweep_figures)
            + runs_section(runs if listed is None else listed, (provenance or {}).get("commit")))
