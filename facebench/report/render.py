"""Turn runs, baselines and sweeps into one document, then write it as Markdown and as HTML.

One document model feeds both outputs, so the two never disagree. Inline markup is a tiny subset
of Markdown (`code` and **bold**) that the HTML writer translates. Nothing here reads a clock or
the environment: the same runs give the same bytes (figures included), which keeps the DVC
``report`` stage reproducible and its output diffable.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass, field

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from facebench.report.leaderboard import splits_of
from facebench.report.paper_numbers import PAPER_NUMBERS, PaperNumber, lookup

DATASET_LABEL = {"w300": "300-W", "aflw": "AFLW-Full"}
# Primary normaliser kind per dataset (the kind a paper figure must share to stand beside ours).
PRIMARY = {"w300": "inter_ocular", "aflw": "face_size"}
# How a column header names each kind (ours on AFLW: the box width, the author's "face size").
OUR_LABEL = {"inter_ocular": "io (outer corners)", "inter_pupil": "ip (eye centres)", "face_size": "(box width)",
             "primary": "(primary)"}
PAPER_LABEL = {"inter_ocular": "io (outer corners)", "inter_pupil": "ip (eye centres)", "face_size": "(face size)"}
KIND_NAME = {"inter_ocular": "io (outer corners)", "inter_pupil": "ip (eye centres)", "face_size": "face size"}
NORMALISER_TEXT = {
    "inter_ocular": "the inter-ocular distance (outer eye corners, points 37 and 46)",
    "inter_pupil": "the inter-pupil distance (eye centres, means of the eye contours)",
    "face_size": "the face-box width (the Wing author's AFLW-Full protocol)",
}
MODEL_LABEL = {"cnn6": "CNN-6", "cnn6/7": "CNN-6/7 (two-stage)", "cnn7": "CNN-6/7 (two-stage)",
               "resnet50": "ResNet-50", "hourglass": "Hourglass", "mean_shape": "mean shape (baseline)"}
# A run's model -> the paper figures' name for it: a CNN-7 row is the second stage of the two-stage system.
PAPER_MODEL = {"cnn7": "cnn6/7"}
LOSS_LABEL = {"l2": "L2", "l1": "L1", "smooth_l1": "smooth L1", "wing": "Wing",
              "hm_mse": "MSE (heatmap)", "hm_l1": "L1 (heatmap)", "hm_wing": "Wing (heatmap)", "awing": "AWing"}
TRAINED_MODELS = ("cnn6", "hourglass")  # paper figures for other models go apart, unless a run has one
DASH = "—"
DAGGER = "†"
OTHER_CODE = "‡"  # beside a run trained with other code than the report's (leaderboard.mark_other_code)


# --- document model ----------------------------------------------------------------------------
@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    right: list[bool] = field(default_factory=list)  # right-align (numeric) per column


@dataclass
class Image:
    name: str      # file name under figures/
    caption: str


Block = Heading | Para | Bullets | Table | Image


# --- formatting ----------------------------------------------------------------------------------
def pct(value: float | None) -> str:
    """A fraction as a percentage with two decimals; missing is a dash, a diverged run 'inf'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if math.isinf(value):
        return "inf"
    return f"{100.0 * value:.2f}"


def cited_cell(value: float, verified: bool) -> str:
    """A published figure, daggered when we could not check it against the paper."""
    return f"{value:.2f}" + ("" if verified else DAGGER)


def paper_cell(number: PaperNumber | None) -> str:
    return DASH if number is None else cited_cell(number.nme_percent, number.verified)


def short(run_id: str, experiment_id: object = "") -> str:
    """A run id, short, linked to the run (``run:<experiment id>/<run id>``: the writers turn it into the
    MLflow UI's address of the run page, or plain text when the report is written without a UI address)."""
    experiment = experiment_id if isinstance(experiment_id, str) else ""
    return f"[`{run_id[:8]}`](run:{experiment}/{run_id})" if run_id else DASH


def wall_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def cost_cell(row: pd.Series) -> str:
    """What a row's training cost: wall time (its epochs, validation included), training images/s and, on
    GPUs, GPU-hours (the mean over seeds where several ran). A dash for a run trained before these were kept."""
    wall, rate, gpu = (run_metric(row, m) for m in ("train_wall_s", "train_images_per_s", "gpu_hours"))
    if wall is None:
        return DASH
    text = wall_text(wall) + (f", {rate:,.0f} img/s" if rate is not None else "")
    return text + (f", {gpu:.3g} GPU-h" if gpu is not None else "")


def device_cell(row: pd.Series) -> str:
    device = row.get("device", "")
    return device if isinstance(device, str) and device else DASH


def cost_note(runs: pd.DataFrame) -> list[Block]:
    """Under a table with a cost column: what it measures and the device (named once when every row shares it)."""
    if runs.empty or "device" not in runs:
        return []
    devices = sorted({d for d in runs["device"].fillna("") if d})
    where = (f"on {devices[0]}" if len(devices) == 1 else "devices per row in the run list" if devices
             else "device not recorded")
    return [Para(f"Cost: the training's wall time (every epoch, validation included), its training images/s and,"
                 f" on GPUs, GPU-hours; {where}.")]


def run_metric(row: pd.Series, name: str) -> float | None:
    value = row.get(f"metrics.{name}")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def metric_cell(row: pd.Series, name: str) -> str:
    """A run's metric in %: the mean over seeds, with ± the standard deviation when several seeds ran."""
    text = pct(run_metric(row, name))
    sd = row.get(f"sd.{name}")
    if text != DASH and sd is not None and not (isinstance(sd, float) and math.isnan(sd)):
        text += f" ± {100.0 * float(sd):.2f}"
    return text


def code_reason(row: pd.Series) -> str:
    """Why the row's runs were trained with other code than this report's ("" when they were not)."""
    reason = row.get("other_code", "")
    return reason if isinstance(reason, str) else ""


def run_cell(row: pd.Series) -> str:
    """The newest run of a row, how many seeds its figures average when more than one, and the mark of
    a row trained with other code than this report's."""
    seeds = row.get("seeds")
    many = seeds is not None and not (isinstance(seeds, float) and math.isnan(seeds)) and int(seeds) > 1
    return (short(row["run_id"], row.get("experiment_id", "")) + (f" ({int(seeds)} seeds)" if many else "")
            + (f" {OTHER_CODE}" if code_reason(row) else ""))


def other_code_note(runs: pd.DataFrame) -> list[Block]:
    """The note under a table whose rows include some trained with other code than the report's: which
    (experiment, profile where several are shown) and why. Nothing when every row is current."""
    if runs.empty or "other_code" not in runs:
        return []
    flagged = runs[runs["other_code"].fillna("").astype(bool)]
    if flagged.empty:
        return []
    several = runs["profile"].nunique() > 1 if "profile" in runs else False
    items = list(dict.fromkeys(
        f"`{r['experiment']}`" + (f" [`{r['profile']}`]" if several else "") + f" ({r['other_code']})"
        for _, r in flagged.iterrows()))
    return [Para(f"{OTHER_CODE} trained with other code than this report's: " + "; ".join(items)
                 + ". Retrain (`facebench train <experiment>`) before comparing with the other rows.")]


def code_cell(row: pd.Series) -> str:
    """The commit a run was trained at, short, ``-dirty`` when the facebench sources differed from it."""
    code = str(row.get("code_version", "") or "")
    if not code:
        return DASH
    dirty = code.endswith("-dirty")
    text = code.removesuffix("-dirty")
    text = f"`{text[:8]}{'-dirty' if dirty else ''}`" if text != "unknown" else "unknown"
    return text + (f" {OTHER_CODE}" if code_reason(row) else "")


def label(mapping: dict[str, str], key: str) -> str:
    return mapping.get(key, key) if key else DASH


def model_label(row: pd.Series) -> str:
    """The system as a row names it: the run's own label (its task's ``describe()``, e.g. "Hourglass, no
    weight map"); for a run without one (logged before runs carried it), the model's name and the variant."""
    given = row.get("label", "") if hasattr(row, "get") else ""
    if isinstance(given, str) and given:
        return given
    variant = row.get("variant", "") if hasattr(row, "get") else ""
    text = label(MODEL_LABEL, row["model"])
    return f"{text}, {variant}" if isinstance(variant, str) and variant else text


def run_label(row: pd.Series, with_profile: bool) -> str:
    """A run as a legend names it: model, loss, PDB (and profile when several are shown)."""
    text = f"{model_label(row)} {label(LOSS_LABEL, row['loss'])}" + (" + PDB" if row["pdb"] else "")
    return text + (f" [{row['profile']}]" if with_profile else "")


def _row_head(row: pd.Series, baseline: bool, with_profile: bool, cost: bool = False) -> list[str]:
    head = [model_label(row), label(LOSS_LABEL, row["loss"]),
            DASH if baseline else ("yes" if row["pdb"] else "no")]
    if with_profile:
        head.append(DASH if baseline else f"`{row['profile']}`")
    head.append("baseline" if baseline else run_cell(row))
    if cost:
        head.append(DASH if baseline else cost_cell(row))
    return head


def _head_columns(with_profile: bool, cost: bool = False) -> list[str]:
    return ["model", "loss", "PDB"] + (["profile"] if with_profile else []) + ["run"] + (["cost"] if cost else [])


def _kinds(dataset: str, frames: list[pd.DataFrame]) -> list[tuple[str, str]]:
    """(metric suffix, normaliser kind) for each NME column this dataset has: primary, then inter-pupil."""
    kinds = [("nme", PRIMARY.get(dataset, "primary"))]
    if any(c.endswith("_nme_ip") and f[c].notna().any() for f in frames for c in f.columns):
        kinds.append(("nme_ip", "inter_pupil"))
    return kinds


def _papered(dataset: str, kind: str) -> bool:
    """Whether the paper publishes any figure of this kind on this dataset (else no paper column)."""
    return any(n.dataset == dataset and n.normaliser == kind for n in PAPER_NUMBERS)


# --- the dataset section ---------------------------------------------------------------------------
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
    headers = _head_columns(with_profile, cost=True) + [f"val NME {OUR_LABEL[kind]}" for _, kind in val_kinds]
    for split in splits:
        for _, kind in kinds:
            headers.append(f"{split} NME {OUR_LABEL[kind]}")
            if _papered(dataset, kind):
                headers.append(f"{split} paper NME {PAPER_LABEL[kind]}")
    rows, cited = [], []
    for row, is_baseline in _rows(runs, baseline):
        cells = _row_head(row, is_baseline, with_profile, cost=True)
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
    n_head = len(_head_columns(with_profile, cost=True))
    return Table(headers, rows, [False] * n_head + [True] * (len(headers) - n_head)), cited


def robustness_table(dataset: str, runs: pd.DataFrame, baseline: pd.DataFrame, with_profile: bool) -> Table:
    """AUC and failure rate at 0.08 and 0.10 (primary normaliser), one row per (split, row)."""
    splits = splits_of(dataset, [runs, baseline])
    headers = ["split"] + _head_columns(with_profile) + ["AUC@0.08 (%)", "FR@0.08 (%)", "AUC@0.1 (%)",
                                                          "FR@0.1 (%)"]
    rows = []
    for split in splits:
        for row, is_baseline in _rows(runs, baseline):
            if run_metric(row, f"test_{split}_nme") is None:
                continue
            rows.append([split] + _row_head(row, is_baseline, with_profile)
                        + [metric_cell(row, f"test_{split}_{m}") for m in ("auc08", "fr08", "auc10", "fr10")])
    n_head = 1 + len(_head_columns(with_profile))
    return Table(headers, rows, [False] * n_head + [True] * (len(headers) - n_head))


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


# --- sweeps and the run list ---------------------------------------------------------------------------
METRIC_LABEL = {"val_nme": "val NME (%)", "val_accuracy": "val accuracy (%)"}
SPLIT_NAME = {"val": "the validation split"}


def _epochs_cell(trial: pd.Series) -> str:
    """Epochs the trial reported, "of N" when it stopped before N."""
    done, total = _nan_to_none(trial.get("epochs")), _nan_to_none(trial.get("max_epochs"))
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
            rows.append([_value(trial[c]) for c in hyper]
                        + [pct(_nan_to_none(trial["score"])), _epochs_cell(trial), short(trial["run_id"], trial.get("experiment_id", "")),
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
        settings = "; ".join(", ".join(f"{c[len('loss.'):]}={_value(group.loc[i, c])}" for c in hyper) for i in index)
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


def _nan_to_none(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _value(value) -> str:
    if isinstance(value, float):
        return DASH if math.isnan(value) else f"{value:g}"
    return str(value)


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


# --- figures ---------------------------------------------------------------------------------------------
def new_figure(width: float, height: float) -> Figure:
    """A figure on a bare Agg canvas (no pyplot state)."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG, its metadata cleared so the bytes depend only on the data. Saved with a tight
    bounding box: a legend outside the axes is inside the image, never cut."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight", pad_inches=0.1)
    return buf.getvalue()


LOSS_COLOR = {"l2": "tab:blue", "l1": "tab:orange", "smooth_l1": "tab:green", "wing": "tab:red",
              "hm_mse": "tab:cyan", "hm_l1": "tab:olive", "hm_wing": "tab:pink", "awing": "tab:brown"}
BASELINE_STYLE = ("0.45", "--")
# One line style per system (model, what an ablation turned off, PDB), the same in every figure; colour is the loss.
SYSTEM_STYLE = {("cnn6", "", False): "-", ("cnn6", "", True): (0, (6, 2)), ("cnn7", "", False): "--",
                ("cnn7", "", True): (0, (2, 2)), ("hourglass", "", False): "-.",
                ("hourglass", "no weight map", False): (0, (1, 1)), ("hourglass", "no boundary", False): (0, (3, 1, 1, 1)),
                ("hourglass", "no CoordConv", False): (0, (5, 1, 1, 1, 1, 1))}
THRESHOLDS = (0.08, 0.10)  # the robustness tables' AUC/FR thresholds (the AWing paper's 300-W FR@8%, FR@10%)


def curve_style(loss: str, pdb: bool, variant: str = "", model: str = "cnn6") -> tuple[str, object]:
    """(colour, line style): one colour per loss and one line style per system in every figure."""
    return LOSS_COLOR.get(loss, "tab:purple"), SYSTEM_STYLE.get((model, variant, pdb), (0, (4, 1, 1, 1, 1, 1, 1, 1)))


def ced_figure(title: str, curves: list[tuple[str, pd.DataFrame, tuple[str, object]]]) -> bytes:
    """One CED plot as PNG bytes: (label, threshold/fraction table, (colour, line style)) per curve, the
    AUC/FR thresholds marked, the legend beside the axes (never over the curves, never cut).

    Drawn on a bare Agg canvas (no pyplot state); PNG metadata is cleared so the bytes depend only
    on the data.
    """
    fig = new_figure(8.4, 3.8)
    ax = fig.add_subplot()
    for text, curve, (color, linestyle) in curves:
        ax.plot(100.0 * curve["threshold"].to_numpy(), curve["fraction"].to_numpy(), label=text,
                color=color, linestyle=linestyle, linewidth=1.6)
    for t in THRESHOLDS:
        ax.axvline(100.0 * t, color="0.3", linewidth=0.8, linestyle=":")
        ax.text(100.0 * t, 1.01, f"{100 * t:g}%", ha="center", va="bottom", fontsize=7, color="0.3",
                transform=ax.get_xaxis_transform())
    ax.set_xlabel("NME (%)")
    ax.set_ylabel("fraction of test faces")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlim(left=0.0)
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=10, pad=12)
    if curves:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    return png_bytes(fig)


# --- writers ---------------------------------------------------------------------------------------------
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def anchor(text: str) -> str:
    """A heading's anchor as GitHub writes it for Markdown (lower case, punctuation dropped, spaces to
    hyphens); the HTML writer gives each heading the same id, so ``[...](#anchor)`` works in both."""
    plain = _BOLD.sub(r"\1", _CODE.sub(r"\1", text)).lower()
    return re.sub(r"[^\w\- ]", "", plain).replace(" ", "-")


def run_page(ui: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI's page of a run, in its model-training view (MLflow 3 opens GenAI views by default)."""
    if not experiment_id:
        return f"{ui.rstrip('/')}/#/runs/{run_id}"
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def experiment_page(ui: str, experiment_id: str) -> str:
    """The MLflow UI's page of an experiment, opened on its runs (the model-training view)."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def resolve_links(text: str, ui: str | None) -> str:
    """``[text](run:<experiment id>/<run id>)`` and ``[text](experiment:<id>)`` become links to the run's
    or the experiment's page in the MLflow UI at ``ui`` (e.g. http://127.0.0.1:5000), or plain ``text``
    when the report is written without one."""
    def one(m: re.Match) -> str:
        label, url = m.group(1), m.group(2)
        if url.startswith("experiment:"):
            return f"[{label}]({experiment_page(ui, url[len('experiment:'):])})" if ui else label
        if not url.startswith("run:"):
            return m.group(0)
        experiment, _, run_id = url[4:].rpartition("/")
        return f"[{label}]({run_page(ui, experiment, run_id)})" if ui else label
    return _LINK.sub(one, text)


def to_markdown(doc: list[Block], ui: str | None = None) -> str:
    parts = []
    for block in doc:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, Para):
            parts.append(resolve_links(block.text, ui))
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {resolve_links(item, ui)}" for item in block.items))
        elif isinstance(block, Table):
            right = block.right or [False] * len(block.headers)
            lines = ["| " + " | ".join(block.headers) + " |",
                     "| " + " | ".join("---:" if r else "---" for r in right) + " |"]
            lines += ["| " + " | ".join(resolve_links(c, ui) for c in row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        elif isinstance(block, Image):
            parts.append(f"![{block.caption}](figures/{block.name})\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def _inline(text: str, ui: str | None = None) -> str:
    text = _BOLD.sub(r"<strong>\1</strong>", _CODE.sub(r"<code>\1</code>", html.escape(resolve_links(text, ui),
                                                                                     quote=False)))
    return _LINK.sub(lambda m: f'<a href="{m.group(2).replace(chr(34), "%22")}">{m.group(1)}</a>', text)


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 75rem;
       padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .85rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: .25rem .5rem; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfcfd; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .85em; background: #f2f4f6;
       padding: 0 .2em; border-radius: 3px; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { font-size: .8rem; color: #57606a; }
""".strip()


def to_html(doc: list[Block], images: dict[str, bytes], ui: str | None = None) -> str:
    """One self-contained page: inline CSS, figures as base64 data URIs, no scripts; the only links out are
    the run ids', to the MLflow UI (``ui``; none without it)."""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           "<title>facebench leaderboard</title>", f"<style>\n{CSS}\n</style>", "</head>", "<body>"]
    for block in doc:
        if isinstance(block, Heading):
            out.append(f'<h{block.level} id="{anchor(block.text)}">{_inline(block.text)}</h{block.level}>')
        elif isinstance(block, Para):
            out.append(f"<p>{_inline(block.text, ui)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i, ui)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            right = block.right or [False] * len(block.headers)
            out.append("<table>")
            out.append("<thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in block.headers) + "</tr></thead>")
            out.append("<tbody>")
            for row in block.rows:
                out.append("<tr>" + "".join(f'<td class="num">{_inline(c, ui)}</td>' if r
                                            else f"<td>{_inline(c, ui)}</td>" for c, r in zip(row, right)) + "</tr>")
            out.append("</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode(images[block.name]).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{_inline(block.caption)}</figcaption></figure>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
