"""The claims study: does each paper's central ordering appear in this setting, and if so where?

The default leaderboard trains each row once, briefly. A reader of it asks first whether a paper's
claim fails because of the method or because of the setting. This module retrains rows of params.yaml's
tables under controlled changes (params.yaml ``study:``), every cell with each of the study's seeds:

- ``wing``: CNN-6 with L2, L1 and Wing on AFLW- and 300-W-style sets at 1x, 4x and 16x the rows' epochs;
- ``cosface``: Softmax, NSL, CosFace (LMCL) and ArcFace against the number of identities, at two scales
  s, and CosFace's margin m at a longer length;
- ``awing``: the AWing hourglass with and without the boundary map, CoordConv and the weighted loss map,
  at two widths and two lengths.

Each cell is an ordinary training (train/experiment.py: Ray Train, the run identity, reuse of a finished
run of the same identity, so an interrupted study carries on where it stopped), tracked in the question's
own MLflow experiment (``facebench-study/<question>``), never in the papers' experiments the leaderboard
reads. Cells report the test metric of the model at the end of its length, and the validation metric
beside it; nothing is chosen on test.

The findings are computed here, not written by hand (``compare``): at each point of a claim's axis, the
mean difference between the two systems over the seeds against their spread, sd_a + sd_b (sample standard
deviations, as the leaderboard's summary weighs a row's seeds): a difference no larger than the spread is
"no difference". The JSON
(study/<question>.json) holds every cell and every finding; report/claims.py words and draws them.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from facebench.atomic import atomic_write_text
from facebench.config import ConfigError, Params, Paths, ResolvedExperiment, Strict, resolve_experiment

QUESTIONS = ("wing", "cosface", "awing")

# What a question's cells are scored on: (validation metric, test metric, True when higher is better),
# by the study set's format (tasks' summarise: AFLW's test split is "test", 300-W's union is "full").
LANDMARK_METRICS = {"aflw_full": ("val_nme", "test_test_nme", False), "w300": ("val_nme", "test_full_nme", False)}
RECOGNITION_METRICS = ("val_accuracy", "lfw_accuracy", True)

LOSS_NAMES = {"l2": "L2", "l1": "L1", "wing": "Wing", "softmax": "Softmax", "nsl": "NSL", "cosface": "CosFace",
              "arcface": "ArcFace"}
VARIANT_NAMES = {(True, True, True): "AWing (full)", (True, False, True): "no boundary",
                 (True, True, False): "no CoordConv", (False, True, True): "no weight map"}


class WingStudy(Strict):
    """Wing against L1 and L2 (CNN-6) as training lengthens: ``rows`` of ``experiments`` retrained on
    ``datasets`` (a row's dataset -> the study's set) for each multiple of their epochs in ``lengths``."""

    rows: list[str]
    datasets: dict[str, str]
    lengths: list[int] = Field(min_length=1)
    lrs: list[float] = Field(default_factory=list, description="learning rates tried on the rows of "
                             "``lr_dataset`` at ``lr_length`` x epochs: is the loss's lr the cause?")
    lr_dataset: str | None = None
    lr_length: int = Field(default=1, gt=0)


class CosfaceStudy(Strict):
    """The heads against the class count and the scale: ``rows`` of ``recognition_experiments`` retrained on
    each set of ``identities`` (class count -> dataset) with each scale ``s`` in ``scales`` (Softmax has
    none); and CosFace's margin ``m`` over ``margins`` on ``margin_identities`` at ``margin_length`` x epochs."""

    rows: list[str]
    identities: dict[int, str]
    scales: list[float] = Field(min_length=1)
    margins: list[float] = Field(default_factory=list)
    margin_identities: int | None = None
    margin_length: int = Field(default=1, gt=0)


class AwingStudy(Strict):
    """The AWing ablations against network size and length: ``rows`` of ``heatmap_experiments`` retrained on
    ``datasets`` with each hourglass width in ``features`` and each multiple of their epochs in ``lengths``."""

    rows: list[str]
    datasets: dict[str, str]
    features: list[int] = Field(min_length=1)
    lengths: list[int] = Field(min_length=1)
    boundary_weights: list[float] = Field(default_factory=list, description="the boundary map's loss weight, "
                                          "for the rows with and without the boundary at the first width, "
                                          "``boundary_length`` x epochs: is our weighting the cause?")
    boundary_length: int = Field(default=1, gt=0)
    seeds: list[int] | None = Field(default=None, min_length=1, description="this question's seeds (None: the "
                                    "study's): the 128-feature hourglass is the study's dearest cell on a CPU")


class StudyConfig(Strict):
    """The claims study (facebench/study.py, study/dvc.yaml): rows of the tables retrained under the study's
    changes, each question in its own MLflow experiment, under the profile ``profile``."""

    profile: str
    seeds: list[int] = Field(min_length=1)
    wing: WingStudy | None = None  # None: the question is not part of the study
    cosface: CosfaceStudy | None = None
    awing: AwingStudy | None = None


def study_settings(params: Params) -> StudyConfig:
    """params.yaml's ``study:`` checked: known keys, rows of the right tables, datasets and a profile that exist
    (a ConfigError naming the key). The study's settings live apart from config.py's, so that a change to
    them changes no training's code hash: cells already trained stay reusable."""
    if params.study is None:
        raise ConfigError("params.yaml: no `study:` section (the claims study's settings)")
    try:
        study = StudyConfig.model_validate(params.study)
    except ValidationError as exc:
        raise ConfigError("params.yaml: " + "; ".join(f"study.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                      for e in exc.errors())) from None
    if study.profile not in params.profiles:
        raise ConfigError(f"params.yaml: study.profile {study.profile!r} is not one of {sorted(params.profiles)}")
    tables = {"wing": params.experiments, "cosface": params.recognition_experiments,
              "awing": params.heatmap_experiments}
    for section, table in tables.items():
        question = getattr(study, section)
        if question is None:
            continue
        for row in question.rows:
            if row not in table:
                raise ConfigError(f"params.yaml: study.{section}.rows: {row!r} is not one of {sorted(table)}")
        sets = question.identities if section == "cosface" else question.datasets
        field = "identities" if section == "cosface" else "datasets"
        for name in sets.values():
            if name not in params.datasets:
                raise ConfigError(f"params.yaml: study.{section}.{field}: dataset {name!r} is not one of "
                                  f"{sorted(params.datasets)}")
        if section != "cosface":
            for row in question.rows:
                if table[row].dataset not in sets:
                    raise ConfigError(f"params.yaml: study.{section}.datasets: no study set for {row}'s "
                                      f"dataset {table[row].dataset!r}")
        if section == "wing" and question.lrs and question.lr_dataset not in sets.values():
            raise ConfigError(f"params.yaml: study.wing.lr_dataset {question.lr_dataset!r} is not one of the "
                              f"study's sets {sorted(sets.values())}")
        if section == "cosface" and question.margins and question.margin_identities not in sets:
            raise ConfigError(f"params.yaml: study.cosface.margin_identities {question.margin_identities} is not "
                              f"one of the identities {sorted(sets)}")
    return study


@dataclass(frozen=True)
class Cell:
    """One training of the study: ``system`` (a line of the question's figure) at ``x`` (its axis) in
    ``panel`` (a panel of the figure), with one seed."""

    panel: str
    system: str
    x: float
    seed: int
    exp: ResolvedExperiment


def _cell_exp(params: Params, row: str, key: str, seed: int, length: int = 1, dataset: str | None = None,
              loss_params: dict[str, float] | None = None, features: int | None = None) -> ResolvedExperiment:
    """``row`` as resolved under the study's profile, with the cell's seed, length, set and settings."""
    base = resolve_experiment(params, row)
    exp = resolve_experiment(params, row, epochs=base.train.epochs * length, seed=seed, export_model=False)
    update: dict[str, Any] = {"key": key}
    if dataset is not None:
        update.update(dataset=dataset, dataset_config=params.datasets[dataset])
    if loss_params:
        update["loss_params"] = {**exp.loss_params, **loss_params}
    if features is not None:
        update["heatmap"] = exp.heatmap.model_copy(update={"features": features})
    return exp.model_copy(update=update)


def wing_cells(params: Params, study: StudyConfig) -> list[Cell]:
    """Each row on its study set at each length; then, on ``lr_dataset``, each learning rate at ``lr_length``
    (the profile's own lr at that length is the length panel's cell, under the same key: one training)."""
    wing = study.wing
    out = []
    for row in wing.rows:
        source = params.experiments[row]
        dataset = wing.datasets[source.dataset]
        name = LOSS_NAMES.get(source.loss, source.loss)
        for length in wing.lengths:
            for seed in study.seeds:
                key = f"study-{row}-{dataset}-x{length}-seed{seed}"
                out.append(Cell(dataset, name, float(length), seed, _cell_exp(params, row, key, seed, length, dataset)))
        if dataset != wing.lr_dataset:
            continue
        base_lr = resolve_experiment(params, row).train.lr
        for lr in wing.lrs:
            for seed in study.seeds:
                key = (f"study-{row}-{dataset}-x{wing.lr_length}" + (f"-lr{lr:g}" if lr != base_lr else "")
                       + f"-seed{seed}")
                exp = _cell_exp(params, row, key, seed, wing.lr_length, dataset)
                exp = exp.model_copy(update={"train": exp.train.model_copy(update={"lr": lr})})
                out.append(Cell(f"lr ({dataset}, {wing.lr_length}x)", name, lr, seed, exp))
    return out


def cosface_cells(params: Params, settings: StudyConfig) -> list[Cell]:
    study = settings.cosface
    out = []
    for row in study.rows:
        loss = params.recognition_experiments[row].loss
        scales = list(study.scales) if "s" in params.losses[loss] else [None]
        for n, dataset in study.identities.items():
            for s in scales:
                for seed in settings.seeds:
                    name = LOSS_NAMES.get(loss, loss)
                    key = f"study-{row}-{n}ids" + (f"-s{s:g}" if s is not None else "") + f"-seed{seed}"
                    panels = [f"s={t:g}" for t in study.scales] if s is None else [f"s={s:g}"]
                    exp = _cell_exp(params, row, key, seed, dataset=dataset,
                                    loss_params=None if s is None else {"s": s})
                    out += [Cell(panel, name, float(n), seed, exp) for panel in panels]
    if study.margins:
        cosface = next((r for r in study.rows if params.recognition_experiments[r].loss == "cosface"), None)
        if cosface is None:
            raise ConfigError("params.yaml: study.cosface.margins needs a CosFace row in study.cosface.rows")
        dataset = study.identities[study.margin_identities]
        for m in study.margins:
            for seed in settings.seeds:
                key = f"study-{cosface}-{study.margin_identities}ids-m{m:g}-x{study.margin_length}-seed{seed}"
                out.append(Cell("margin", "CosFace", float(m), seed,
                                _cell_exp(params, cosface, key, seed, study.margin_length, dataset, {"m": m})))
    return out


def awing_cells(params: Params, settings: StudyConfig) -> list[Cell]:
    """Each row at each width and length; then the full model and the one without the boundary, at the first
    width and ``boundary_length``, against the boundary map's loss weight (the row without a boundary has
    none: one training per seed, drawn at every weight; the profile's weight is the first panels' cell)."""
    study = settings.awing
    seeds = study.seeds or settings.seeds
    out = []
    for row in study.rows:
        source = params.heatmap_experiments[row]
        dataset = study.datasets[source.dataset]
        name = VARIANT_NAMES[(source.weight_map, source.boundary, source.coordconv)]
        for features in study.features:
            for length in study.lengths:
                for seed in seeds:
                    key = f"study-{row}-{dataset}-f{features}-x{length}-seed{seed}"
                    out.append(Cell(f"{features} features", name, float(length), seed,
                                    _cell_exp(params, row, key, seed, length, dataset, features=features)))
        if not study.boundary_weights or not source.weight_map or not source.coordconv:
            continue  # the panel sets the full model against the one without the boundary only
        features, length = study.features[0], study.boundary_length
        panel = f"boundary weight ({features} features, {length}x)"
        for weight in study.boundary_weights:
            for seed in seeds:
                exp = _cell_exp(params, row, f"study-{row}-{dataset}-f{features}-x{length}-seed{seed}", seed, length,
                                dataset, features=features)
                if source.boundary and weight != exp.heatmap.boundary_weight:
                    exp = exp.model_copy(update={
                        "key": f"study-{row}-{dataset}-f{features}-x{length}-bw{weight:g}-seed{seed}",
                        "heatmap": exp.heatmap.model_copy(update={"boundary_weight": weight})})
                out.append(Cell(panel, name, weight, seed, exp))
    return out


def cells_of(params: Params, question: str) -> list[Cell]:
    builders = {"wing": wing_cells, "cosface": cosface_cells, "awing": awing_cells}
    if question not in builders:
        raise ConfigError(f"no study question {question!r}; known: {', '.join(QUESTIONS)}")
    study = study_settings(params)
    if getattr(study, question) is None:
        raise ConfigError(f"params.yaml: study.{question} is not set (the question's settings)")
    return builders[question](params, study)


# The claims each question tests, in every panel: (the system the paper puts first, the one it puts after),
# in the words of the paper (Feng et al. 2018; Wang et al. 2018 (CosFace); Wang et al. 2019).
CLAIMS = {
    "wing": [("Wing", "L2"), ("Wing", "L1"), ("L1", "L2")],
    "cosface": [("CosFace", "Softmax"), ("CosFace", "NSL"), ("NSL", "Softmax"), ("ArcFace", "Softmax")],
    "awing": [("AWing (full)", "no boundary"), ("AWing (full)", "no CoordConv"), ("AWing (full)", "no weight map")],
}


def metric_of(question: str, cell: Cell) -> tuple[str, str, bool]:
    if question == "cosface":
        return RECOGNITION_METRICS
    return LANDMARK_METRICS[cell.exp.dataset_config.format]


def summary(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def compare(first: list[float], second: list[float], higher_is_better: bool) -> dict[str, Any]:
    """Is ``first`` better than ``second``? The mean difference in the paper's favour (positive: the
    paper's way) against the seeds' spread sd_1 + sd_2: "yes" beyond it, "reversed" beyond it the other
    way, "no difference" within it. With one seed there is no spread to weigh a difference against, and
    the verdict says so ("one seed") instead of deciding."""
    m1, s1 = summary(first)
    m2, s2 = summary(second)
    gain = (m1 - m2) if higher_is_better else (m2 - m1)
    spread = s1 + s2
    if min(len(first), len(second)) < 2:
        verdict = "one seed"
    elif abs(gain) <= spread:
        verdict = "no difference"
    else:
        verdict = "yes" if gain > 0 else "reversed"
    return {"first_mean": m1, "first_sd": s1, "second_mean": m2, "second_sd": s2, "gain": gain, "spread": spread,
            "verdict": verdict, "seeds": min(len(first), len(second))}


def finding(points: list[dict[str, Any]]) -> str:
    """A claim's answer over its axis: where its ordering appears (and stays), or that it does not."""
    holds = [p["x"] for p in points if p["verdict"] == "yes"]
    reversed_ = [p["x"] for p in points if p["verdict"] == "reversed"]
    xs = [p["x"] for p in points]
    if holds and all(p["verdict"] == "yes" for p in points if p["x"] >= holds[0]):
        return "holds everywhere" if holds[0] == xs[0] else f"holds from {holds[0]:g} on"
    if holds:
        return "holds at " + ", ".join(f"{x:g}" for x in holds) + " only"
    if reversed_:
        return "reversed at " + ", ".join(f"{x:g}" for x in reversed_) + ("" if len(reversed_) == len(xs) else
                                                                          "; no difference elsewhere")
    return "no difference anywhere" if any(p["verdict"] == "no difference" for p in points) else "undecided"


def findings(question: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every claim of ``question`` in every panel where both systems have cells, point by point."""
    out = []
    panels = list(dict.fromkeys(r["panel"] for r in records))  # in the order the cells come
    for first, second in CLAIMS[question]:
        for panel in panels:
            rows = [r for r in records if r["panel"] == panel]
            points = []
            for x in sorted({r["x"] for r in rows}):
                a = [r["test"] for r in rows if r["system"] == first and r["x"] == x and r["test"] is not None]
                b = [r["test"] for r in rows if r["system"] == second and r["x"] == x and r["test"] is not None]
                if a and b:
                    points.append({"x": x, **compare(a, b, rows[0]["higher_is_better"])})
            if points:
                out.append({"panel": panel, "first": first, "second": second, "metric": rows[0]["metric"],
                            "points": points, "finding": finding(points)})
    # the margin sweep: each margin m > 0 against m = 0 (NSL), the paper's case for a margin at all
    rows = [r for r in records if r["panel"] == "margin" and r["test"] is not None]
    zero = [r["test"] for r in rows if r["x"] == 0.0]
    if zero:
        points = [{"x": m, **compare([r["test"] for r in rows if r["x"] == m], zero, rows[0]["higher_is_better"])}
                  for m in sorted({r["x"] for r in rows} - {0.0})]
        if points:
            out.append({"panel": "margin", "first": "CosFace, m > 0", "second": "m = 0 (NSL)",
                        "metric": rows[0]["metric"], "points": points, "finding": finding(points)})
    return out


def best_on_validation(records: list[dict[str, Any]], panel: str) -> dict[str, Any] | None:
    """The point of ``panel`` (one system, e.g. the margin sweep) whose seeds' mean validation score is best,
    with its test score: what a sweep would choose, chosen on validation."""
    rows = [r for r in records if r["panel"] == panel and r["val"] is not None]
    if not rows:
        return None
    higher = rows[0]["higher_is_better"]
    by_x: dict[float, list[dict]] = {}
    for r in rows:
        by_x.setdefault(r["x"], []).append(r)
    x = (max if higher else min)(by_x, key=lambda k: statistics.fmean(r["val"] for r in by_x[k]))
    return {"x": x, "val_mean": statistics.fmean(r["val"] for r in by_x[x]),
            "test_mean": statistics.fmean(r["test"] for r in by_x[x])}


def run_study(params: Params, question: str, paths: Paths) -> dict[str, Any]:
    """Train (or reuse) every cell of ``question`` and write study/<question>.json with the cells and findings."""
    from mlflow.tracking import MlflowClient

    from facebench import tracking
    from facebench.train.experiment import train_experiment

    cells = cells_of(params, question)
    experiment = tracking.study_experiment_name(question)
    client = MlflowClient(tracking.tracking_uri(paths.root))
    records, started, done = [], time.monotonic(), {}
    for i, cell in enumerate(cells, 1):
        if cell.exp.key not in done:  # a cell drawn in two panels (Softmax has no scale) trains once
            print(f"[study {question}] cell {i}/{len(cells)}: {cell.exp.key} "
                  f"({time.monotonic() - started:.0f} s in)", file=sys.stderr, flush=True)
            done[cell.exp.key] = train_experiment(cell.exp, paths, write_outputs=False,
                                                  mlflow_experiment=experiment)
        result = done[cell.exp.key]
        run = client.get_run(result["run_id"])
        val_metric, test_metric, higher = metric_of(question, cell)
        test, val = result.get(test_metric), run.data.metrics.get(val_metric)
        diverged = test is None or not math.isfinite(test)  # a NaN or inf score: drawn and compared as missing
        records.append({
            "key": cell.exp.key, "panel": cell.panel, "system": cell.system, "x": cell.x, "seed": cell.seed,
            "dataset": cell.exp.dataset, "epochs": cell.exp.train.epochs, "loss_params": cell.exp.loss_params,
            "features": cell.exp.heatmap.features if cell.exp.heatmap else None,
            "run_id": result["run_id"], "run": result["run"], "experiment_id": run.info.experiment_id,
            "code_version": run.data.tags.get("facebench.code_version", ""),
            "code_hash": run.data.tags.get("facebench.code_hash", ""), "task": cell.exp.task,
            "device": run.data.tags.get("facebench.device", ""),
            "metric": test_metric, "higher_is_better": higher,
            "val": val if val is not None and math.isfinite(val) else None, "test": None if diverged else test,
            "diverged": diverged,
            "train_wall_s": run.data.metrics.get("train_wall_s"),
        })
    study = study_settings(params)
    seeds = sorted({r["seed"] for r in records})
    out = {"question": question, "profile": study.profile, "seeds": seeds,
           "mlflow_experiment": experiment, "cells": records, "findings": findings(question, records)}
    if question == "cosface" and any(r["panel"] == "margin" for r in records):
        out["margin_choice"] = best_on_validation(records, "margin")
    atomic_write_text(study_file(paths, question), json.dumps(out, indent=2, sort_keys=True) + "\n")
    return {"question": question, "cells": len(records), "findings": [
        f"{f['panel']}: {f['first']} before {f['second']}: {f['finding']}" for f in out["findings"]]}


def study_file(paths: Paths, question: str) -> Path:
    """study/<question>.json, beside study/dvc.yaml (outside metrics/, which the main report depends on)."""
    return paths.root / "study" / f"{question}.json"
