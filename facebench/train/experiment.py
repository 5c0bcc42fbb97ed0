"""One training experiment end to end: MLflow run, Ray Train fit, DVC outputs.

This is what `facebench train <experiment>` and the `train@<experiment>` DVC stage call. The
driver owns the MLflow run (creates it, logs params, final metrics, curves and the model, and
finishes it); rank 0 of the Ray job logs the per-epoch metrics into it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from mlflow.tracking import MlflowClient

from facebench import tracking
from facebench.atomic import atomic_write_text, replace_dir
from facebench.config import MODEL_FILE, Paths, ResolvedExperiment
from facebench.tasks import build_task
from facebench.train.ray_trainer import fit


def run_tags(exp: ResolvedExperiment, root: Path, kind: str = "train") -> dict[str, str]:
    return {
        "facebench.kind": kind,
        "facebench.experiment": exp.key,
        "facebench.paper": exp.paper,
        "facebench.task": exp.task,
        "facebench.dataset": exp.dataset,
        "facebench.model": exp.model,
        "facebench.loss": exp.loss,
        "facebench.pdb": str(exp.pdb).lower(),
        "facebench.variant": variant(exp),
        "facebench.profile": exp.profile,
        "facebench.config_hash": exp.config_hash(),
        "facebench.code_version": tracking.code_version(root),
    }


def variant(exp: ResolvedExperiment) -> str:
    """What an ablation turned off (heatmap experiments), e.g. "no weight map"; "" for the full model."""
    if exp.heatmap is None:
        return ""
    off = [name for name, on in (("weight map", exp.heatmap.weight_map), ("boundary", exp.heatmap.boundary),
                                 ("CoordConv", exp.heatmap.coordconv)) if not on]
    return ", ".join(f"no {name}" for name in off)


def run_params(exp: ResolvedExperiment) -> dict[str, Any]:
    extra: dict[str, Any] = {"heatmap": exp.heatmap.model_dump(mode="json")} if exp.heatmap is not None else {}
    if exp.backbone_depth is not None:
        extra["backbone_depth"] = exp.backbone_depth
    if exp.eval_dataset is not None:
        extra["eval_dataset"] = exp.eval_dataset
    if exp.shard_head is not None:  # the classifier split over the workers when there are several
        extra["shard_head"] = exp.shard_head and exp.train.num_workers > 1
    return {
        "dataset": exp.dataset,
        "model": exp.model,
        "loss": exp.loss,
        "pdb": exp.pdb,
        **{f"loss.{k}": v for k, v in exp.loss_params.items()},
        "train": exp.train.model_dump(mode="json"),
        "data": exp.dataset_config.model_dump(mode="json"),
        **extra,
    }


def train_experiment(exp: ResolvedExperiment, paths: Paths, write_outputs: bool = True) -> dict[str, Any]:
    """Train one experiment, track it, and write models/<exp>/, metrics/<exp>.json, plots/<exp>/
    (the DVC outputs; ``write_outputs=False`` for an extra seed, which only MLflow keeps)."""
    uri = tracking.tracking_uri(paths.root)
    client = MlflowClient(uri)
    experiment_id = tracking.get_or_create_experiment(client, exp.paper, paths.root)
    name = f"{exp.key}-{exp.config_hash()}"
    run_id = tracking.start_run(client, experiment_id, exp.key, run_tags(exp, paths.root),
                                resume_file=paths.storage / name / "mlflow_run_id")
    print(f"[{exp.key}] MLflow run {run_id} in {tracking.experiment_name(exp.paper)} ({uri})", flush=True)
    try:
        tracking.log_params(client, run_id, run_params(exp))
        prepared = paths.training_data(exp)
        outcome = fit(exp, prepared, paths.storage, name, tracking_uri=uri, run_id=run_id)
        task = build_task(exp, prepared)
        final = task.summarise(outcome.evaluation)
        tracking.log_metrics(client, run_id, final, step=exp.train.epochs)
        curves = task.curves(outcome.evaluation)
        tracking.log_tables(client, run_id, curves)
        model = task.build_model()
        model.load_state_dict(outcome.state_dict)
        tracking.log_torch_model(uri, run_id, task.inference_model(model), task.example_input())
        if write_outputs:
            _write_outputs(exp, paths, run_id, final, curves, outcome.state_dict)
    except BaseException:
        tracking.end_run(client, run_id, status="FAILED")
        raise
    tracking.end_run(client, run_id)
    return {"run_id": run_id, **final}


def _write_outputs(exp: ResolvedExperiment, paths: Paths, run_id: str, final: dict[str, float],
                   curves: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> None:
    """DVC outputs, each written whole or not at all."""
    model_dir = paths.model_dir(exp.key)
    tmp = model_dir.with_name(model_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(state_dict, tmp / MODEL_FILE)
    (tmp / "experiment.json").write_text(json.dumps(exp.model_dump(mode="json"), indent=2, sort_keys=True))
    replace_dir(tmp, model_dir)

    plots = paths.plots_dir(exp.key)
    tmp = plots.with_name(plots.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for rel, df in curves.items():
        df.to_csv(tmp / rel.replace("/", "_"), index=False)
    replace_dir(tmp, plots)

    summary = {"experiment": exp.key, "mlflow_run_id": run_id, **{k: round(v, 6) for k, v in final.items()}}
    atomic_write_text(paths.metrics_file(exp.key), json.dumps(summary, indent=2, sort_keys=True) + "\n")
