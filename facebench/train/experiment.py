"""One training experiment end to end: run identity, MLflow run, Ray Train fit, DVC outputs.

This is what `facebench train <experiment>` and the `train@<experiment>` DVC stage call. Before Ray
starts, the task checks its inputs and the run identity (params, code, data: train/identity.py) is
computed. A FINISHED run of that identity is reused (its outputs written again from its last
checkpoint, nothing trained); an unfinished one is resumed from its newest checkpoint; otherwise a new
run trains from scratch (``force`` always starts a new one). The driver owns the MLflow run (creates
it, logs params, final metrics, curves and the model, and finishes it); rank 0 of the Ray job logs the
per-epoch metrics into it, each after its checkpoint is on disk.
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
from facebench.train import checkpoints
from facebench.train.identity import RunIdentity, identity_of
from facebench.train.ray_trainer import fit, log_missing_epochs, outcome_of
from facebench.train.task import Description, build_task


def run_tags(exp: ResolvedExperiment, about: Description, root: Path, kind: str = "train",
             identity: RunIdentity | None = None) -> dict[str, str]:
    """The run's tags: what it is (``about``: the task's description of it), its code and its identity."""
    code = tracking.code_version(root)
    return {
        "facebench.kind": kind,
        "facebench.experiment": exp.key,
        "facebench.paper": exp.paper,
        "facebench.task": exp.task,
        "facebench.dataset": exp.dataset,
        "facebench.model": exp.model,
        "facebench.loss": exp.loss,
        "facebench.pdb": str(exp.pdb).lower(),
        "facebench.variant": about.variant,
        "facebench.label": about.label,
        "facebench.profile": exp.profile,
        "facebench.config_hash": exp.config_hash(),
        "facebench.code_version": code,
        "mlflow.note.content": run_note(exp, about),
        # what the UI shows as the run's source: the command and, in git, the commit
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": (f"facebench train {exp.key}" if kind == "train"
                               else f"facebench tune (a sweep of {exp.key})"),
        **({"mlflow.source.git.commit": code.removesuffix("-dirty")} if code != "unknown" else {}),
        **(identity.tags() if identity is not None else {}),
    }


def run_note(exp: ResolvedExperiment, about: Description) -> str:
    """The run's description (MLflow's note): what the run is, in a sentence a dashboard reader can use."""
    params = ", ".join(f"{k}={v}" for k, v in sorted(exp.loss_params.items()))
    data = exp.dataset_config
    return (f"{exp.paper} paper, experiment `{exp.key}` (profile `{exp.profile}`): model {exp.model}"
            + (f" ({about.variant})" if about.variant else "") + f", loss {exp.loss}" + (f" ({params})" if params else "")
            + (", pose-based data balancing" if exp.pdb else "")
            + f"; trained on `{exp.dataset}` ({data.source} data, {data.format} format)"
            + (f", verified on `{exp.eval_dataset}`" if exp.eval_dataset else "")
            + f"; {exp.train.epochs} epochs on {exp.train.num_workers} worker(s), seed {exp.train.seed}. "
            "val_* metrics are on the validation split (what sweeps and the registry choose on); test_* are "
            f"evaluated once, after the last epoch. Reproduce: `facebench train {exp.key}`.")


def run_params(exp: ResolvedExperiment, about: Description) -> dict[str, Any]:
    """The run's params: the fields every experiment has, then the task's own (``about.params``)."""
    return {
        "dataset": exp.dataset,
        "model": exp.model,
        "loss": exp.loss,
        "pdb": exp.pdb,
        **{f"loss.{k}": v for k, v in exp.loss_params.items()},
        "train": exp.train.model_dump(mode="json"),
        "data": exp.dataset_config.applicable(),
        **about.params,
    }


def train_experiment(exp: ResolvedExperiment, paths: Paths, write_outputs: bool = True,
                     force: bool = False, mlflow_experiment: str | None = None) -> dict[str, Any]:
    """Train one experiment (or reuse / resume its run of the same identity), track it, and write
    models/<exp>/, metrics/<exp>.json, plots/<exp>/ (the DVC outputs; ``write_outputs=False`` for an extra
    seed or a study cell, which only MLflow keeps). The run goes to the paper's MLflow experiment, or to
    ``mlflow_experiment`` (the claims study's). Returns the run id, the final metrics and how the run was
    obtained."""
    prepared = paths.training_data(exp)
    task = build_task(exp, paths)
    task.check_inputs()  # a missing or empty split is an error here, before Ray or MLflow start
    about = task.describe()
    identity = identity_of(exp, task.input_files(), cache_file=paths.storage / ".input-hashes.json")
    uri = tracking.tracking_uri(paths.root)
    client = MlflowClient(uri)
    experiment_id = tracking.get_or_create_experiment(client, exp.paper, paths.root, mlflow_experiment)
    runs = [] if force else tracking.find_runs(client, experiment_id, identity.id)
    finished = next((r for r in runs if r.info.status == "FINISHED"), None)
    if finished is not None:
        return _reuse(exp, paths, task, finished.info.run_id, identity, write_outputs)
    if runs:  # unfinished (RUNNING after a kill, FAILED, KILLED): the same identity carries on
        run_id, how = runs[0].info.run_id, "resumed"
        client.update_run(run_id, status="RUNNING")
    else:
        run_id, how = tracking.start_run(client, experiment_id, exp.key, run_tags(exp, about, paths.root, identity=identity)), "new"
    run_dir = paths.run_dir(exp.key, run_id)
    print(f"[{exp.key}] MLflow run {run_id} ({how}; identity {identity.id}) in "
          f"{mlflow_experiment or tracking.experiment_name(exp.paper)} ({uri})", flush=True)
    try:
        tracking.log_params(client, run_id, run_params(exp, about))
        tracking.log_dataset(client, run_id, exp.dataset, identity.data, prepared, exp.dataset_config.source)
        newest = checkpoints.newest(run_dir / "checkpoints")
        if newest is not None:  # a job that died between a checkpoint and its log line
            log_missing_epochs(client, run_id, checkpoints.load_state(newest)["history"])
        outcome = fit(exp, paths, run_dir, tracking_uri=uri, run_id=run_id)
        final = task.summarise(outcome.evaluation)
        logged = client.get_run(run_id).data.metrics  # a job that died after logging these resumes here
        cost = outcome.cost()  # wall time, images/s, GPU-hours: the report's cost columns
        tracking.log_metrics(client, run_id, {k: v for k, v in {**final, **cost}.items() if k not in logged},
                             step=exp.train.epochs)
        if outcome.device:
            tracking.set_tags(client, run_id, {"facebench.device": outcome.device})
        curves = task.curves(outcome.evaluation)
        tracking.log_tables(client, run_id, curves)
        if exp.train.export_model and not client.search_logged_models(
                [experiment_id], filter_string=f"source_run_id = '{run_id}'"):
            model = task.build_model()
            model.load_state_dict(outcome.state_dict)
            tracking.log_torch_model(uri, run_id, task.inference_model(model), task.example_input(), name=exp.key)
        if write_outputs:
            _write_outputs(exp, paths, run_id, final, curves, outcome.state_dict)
        checkpoints.prune(run_dir / "checkpoints", keep=1)  # the last one: what a reuse writes out again
    except (KeyboardInterrupt, SystemExit):
        tracking.end_run(client, run_id, status="KILLED")
        raise
    except BaseException:
        tracking.end_run(client, run_id, status="FAILED")
        raise
    tracking.end_run(client, run_id)
    return {"run_id": run_id, "run": how, **final}


def _reuse(exp: ResolvedExperiment, paths: Paths, task, run_id: str, identity: RunIdentity,
           write_outputs: bool) -> dict[str, Any]:
    """A finished run of this identity: its outputs again, from its last checkpoint; the run is left as it is."""
    final_dir = checkpoints.newest(paths.run_dir(exp.key, run_id) / "checkpoints")
    if final_dir is None:
        raise FileNotFoundError(f"{paths.run_dir(exp.key, run_id)}: the finished run {run_id} of {exp.key} "
                                f"(identity {identity.id}) has no checkpoint left to write its outputs from; "
                                f"`facebench train {exp.key} --force` trains a new run")
    outcome = outcome_of(exp, final_dir)
    final = task.summarise(outcome.evaluation)
    print(f"[{exp.key}] reusing finished MLflow run {run_id} (same params, code and data: identity "
          f"{identity.id}); nothing retrained (--force trains a new run)", flush=True)
    if write_outputs:
        _write_outputs(exp, paths, run_id, final, task.curves(outcome.evaluation), outcome.state_dict)
    return {"run_id": run_id, "run": "reused", **final}


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
