"""What a table cell shows: percentages, the papers' figures with their marks, run links, cost, the marks
for rows trained with other code, and the names the tables give datasets, models, losses and normalisers.
"""

from __future__ import annotations

import math

import pandas as pd

from facebench.report.document import Block, Para
from facebench.report.paper_numbers import PaperNumber

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

CLAIMS_LINK = "claims.md"  # the claims study's report, beside the leaderboard (report/claims.py)

DAGGER = "†"

OTHER_CODE = "‡"  # beside a run trained with other code than the report's (leaderboard.mark_other_code)


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


def row_head(row: pd.Series, baseline: bool, with_profile: bool, cost: bool = False) -> list[str]:
    head = [model_label(row), label(LOSS_LABEL, row["loss"]),
            DASH if baseline else ("yes" if row["pdb"] else "no")]
    if with_profile:
        head.append(DASH if baseline else f"`{row['profile']}`")
    head.append("baseline" if baseline else run_cell(row))
    if cost:
        head.append(DASH if baseline else cost_cell(row))
    return head


def head_columns(with_profile: bool, cost: bool = False) -> list[str]:
    return ["model", "loss", "PDB"] + (["profile"] if with_profile else []) + ["run"] + (["cost"] if cost else [])


def nan_to_none(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def value_text(value) -> str:
    if isinstance(value, float):
        return DASH if math.isnan(value) else f"{value:g}"
    return str(value)
