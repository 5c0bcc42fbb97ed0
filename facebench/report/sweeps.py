"""The sweeps section: each Ray Tune sweep's trials (chosen on the validation split), ties called out as
such, and a figure of the score against the varied loss parameters.
"""

from __future__ import annotations

import pandas as pd

from facebench.report.cells import DASH, code_cell, nan_to_none, pct, short, value_text
from facebench.report.document import Block, Heading, Image, Para, Table
from facebench.report.figures import new_figure, png_bytes

METRIC_LABEL = {"val_nme": "val NME (%)", "val_accuracy": "val accuracy (%)"}

SPLIT_NAME = {"val": "the validation split"}


def _epochs_cell(trial: pd.Series) -> str:
    """Epochs the trial reported, "of N" when it stopped before N."""
    done, total = nan_to_none(trial.get("epochs")), nan_to_none(trial.get("max_epochs"))
    if done is None:
        return DASH
    return f"{done:g} of {total:g}" if total is not None and done < total else f"{done:g}"


def sweep_section(trials: pd.DataFrame, figures: dict[tuple[str, str], Image] | None = None) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Loss-parameter sweeps")]
    if trials.empty:
        return blocks + [Para("No finished sweep in the store for this profile.")]
    blocks.append(Para("One table per sweep (its newest finished parent run): every trial's loss parameters, its"
                       " last validation score (landmarks: NME %, primary normaliser, lower is better; recognition:"
                       " verification accuracy % on pairs of the training set's held-out identities, higher is"
                       " better), the epochs it ran and Tune's verdict: **finished** (every epoch), **stopped"
                       " early** (ASHA ended it after fewer epochs: its score is from then) or **failed** (never a"
                       " candidate). The best of the finished and stopped trials is marked **best**. No trial reads"
                       " a test split: hyperparameters are never chosen on test."))
    for (sweep, profile), group in trials.groupby(["sweep", "profile"], sort=True):
        hyper = [c for c in group.columns if c.startswith("loss.") and group[c].notna().any()]
        parent = group["parent_run_id"].iloc[0]
        metric, mode = str(group["metric"].iloc[0]), str(group["mode"].iloc[0])
        chosen_on = str(group["chosen_on"].iloc[0]) if "chosen_on" in group else ""
        blocks.append(Heading(3, f"`{sweep}`"))
        chosen = (f"chosen on {SPLIT_NAME.get(chosen_on, f'the `{chosen_on}` split')} (`{metric}`, {mode})"
                  if chosen_on else f"chosen by `{metric}` ({mode}) on a split the sweep did not record")
        code = code_cell(group.iloc[0]) if "code_version" in group else DASH
        blocks.append(Para(f"Base experiment `{group['base_experiment'].iloc[0]}`, profile `{profile}`,"
                           f" parent run {short(parent, group['experiment_id'].iloc[0] if 'experiment_id' in group else '')}"
                           + (f", code {code}" if code != DASH else "")
                           + f": {chosen}."))
        status = _trial_status(group)
        scored = group["score"].astype(float).where(status != "failed")
        best = None
        if scored.notna().any():
            best = scored.idxmax() if mode == "max" else scored.idxmin()
        rows = []
        for index, trial in group.iterrows():
            rows.append([value_text(trial[c]) for c in hyper]
                        + [pct(nan_to_none(trial["score"])), _epochs_cell(trial), short(trial["run_id"], trial.get("experiment_id", "")),
                           str(status[index]), "**best**" if index == best else ""])
        headers = [c[len("loss."):] for c in hyper] + [METRIC_LABEL.get(metric, metric), "epochs", "run", "status",
                                                       "best"]
        blocks.append(Table(headers, rows, [True] * (len(hyper) + 2) + [False] * 3))
        blocks.extend(tie_note(group, hyper, scored))
        if figures and (sweep, profile) in figures:
            blocks.append(figures[(sweep, profile)])
    return blocks


def tie_note(group: pd.DataFrame, hyper: list[str], scored: pd.Series) -> list[Block]:
    """Trials with exactly the same score: said outright, since a grid that cannot tell them apart
    chooses among them by order alone (e.g. margins that leave every validation pair on the same side)."""
    values = scored.dropna().round(9)
    tied = [(score, list(index)) for score, index in values.groupby(values).groups.items() if len(index) > 1]
    if not tied:
        return []
    items = []
    for score, index in sorted(tied):
        settings = "; ".join(", ".join(f"{c[len('loss.'):]}={value_text(group.loc[i, c])}" for c in hyper) for i in index)
        items.append(f"{len(index)} trials score exactly {pct(float(score))} ({settings})")
    return [Para("Ties: " + "; and ".join(items) + ". The sweep cannot tell these settings apart at this schedule"
                 " and validation size: its **best** among them is the first in grid order, not a finding.")]


def _trial_status(group: pd.DataFrame) -> pd.Series:
    """Each trial's verdict (``status``; sweeps collected without one: from ``stopped_early``)."""
    if "status" in group:
        return group["status"]
    return group["stopped_early"].map({True: "stopped early", False: "finished"})


def sweep_points(group: pd.DataFrame) -> tuple[str, str | None, list[tuple[str | None, pd.DataFrame, pd.DataFrame]]]:
    """What a sweep's figure draws: (x parameter, series parameter or None, per series value its label,
    the finished trials (x, score %) in x order, joined by a line, and the trials ASHA stopped early, drawn
    as crosses on their own). Failed trials are left out. Raises ValueError when the grid does not vary
    one or two parameters."""
    varied = [c for c in sorted(c for c in group.columns if c.startswith("loss."))
              if group[c].nunique(dropna=True) > 1]
    if not 1 <= len(varied) <= 2:
        raise ValueError(f"{len(varied)} varying parameters: a figure draws one or two")
    x = max(varied, key=lambda c: group[c].nunique())  # the longer axis along x
    series = next((c for c in varied if c != x), None)
    status = _trial_status(group)
    out = []
    for value, part in (group.groupby(series, sort=True) if series else [(None, group)]):
        part = part.sort_values(x, kind="mergesort")
        points = pd.DataFrame({"x": part[x].astype(float), "score": 100.0 * part["score"].astype(float)})
        name = f"{series[len('loss.'):]}={value:g}" if series else None
        out.append((name, points[status[part.index] == "finished"].reset_index(drop=True),
                    points[status[part.index] == "stopped early"].reset_index(drop=True)))
    return x, series, out


def sweep_figure(sweep: str, group: pd.DataFrame) -> bytes | None:
    """The sweep's validation score against its first varying parameter, one line per value of a second
    one (Wing: NME against w per eps; CosFace: accuracy against m). None when nothing varies, more than
    two parameters do, or no trial has a score. A line joins only the trials that ran every epoch; a
    trial ASHA stopped early is a cross on its own (its score is from fewer epochs, so a line through it
    would join unlike things); failed trials are not drawn (``sweep_points``)."""
    try:
        x, series, parts = sweep_points(group)
    except ValueError:
        return None
    if all(finished["score"].isna().all() and early["score"].isna().all() for _, finished, early in parts):
        return None
    metric = str(group["metric"].iloc[0])
    fig = new_figure(5.6, 3.6)
    ax = fig.add_subplot()
    for name, finished, early in parts:
        line = ax.plot(finished["x"], finished["score"], marker="o", label=name)[0]
        ax.plot(early["x"], early["score"], "x", linestyle="none", color=line.get_color(), markersize=10)
    ax.set_xlabel(x[len("loss."):])
    ax.set_ylabel(METRIC_LABEL.get(metric, metric))
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{sweep} (x: stopped early by ASHA, not joined)", fontsize=10)
    if series:
        ax.legend(fontsize=8, frameon=False)
    return png_bytes(fig)
