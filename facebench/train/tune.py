"""Loss-hyperparameter sweeps on Ray Tune around the same TorchTrainer.

Ray 2.60 (Train V2): a Tune *function trainable* builds and fits the TorchTrainer of one trial
with ``TuneReportCallback`` so the per-epoch reports reach Tune and its ASHA scheduler. The
driver owns a parent MLflow run; each trial is a nested run (``mlflow.parentRunId``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from facebench import tracking
from facebench.atomic import atomic_write_text
from facebench.config import Params, Paths, ResolvedExperiment, resolve_experiment
from facebench.train.experiment import run_params, run_tags
from facebench.train.ray_trainer import ensure_ray, make_trainer


def _trial(config: dict[str, float], base: dict[str, Any], prepared_dir: str, storage: str, uri: str,
           experiment_id: str, parent_run_id: str, sweep: str) -> None:
    """One Tune trial: a nested MLflow run and a TorchTrainer whose reports feed Tune."""
    import ray.tune
    from ray.data import DataContext
    from ray.tune.integration.ray_train import TuneReportCallback

    DataContext.get_current().enable_progress_bars = False  # this trial's process is its own driver
    exp = ResolvedExperiment.model_validate(base)
    exp = exp.model_copy(update={"loss_params": {**exp.loss_params, **config}})
    trial_id = ray.tune.get_context().get_trial_id()
    client = MlflowClient(uri)
    label = ",".join(f"{k}={v:g}" for k, v in sorted(config.items()))
    tags = {**run_tags(exp, Path(storage).parent, kind="trial"), "facebench.sweep": sweep,
            "facebench.trial_id": trial_id}
    run_id = tracking.start_run(client, experiment_id, f"{sweep}[{label}]", tags, parent_run_id=parent_run_id)
    tracking.log_params(client, run_id, run_params(exp))
    trainer = make_trainer(exp, Path(prepared_dir), Path(storage), f"{sweep}-{trial_id}",
                           tracking_uri=uri, run_id=run_id, callbacks=[TuneReportCallback()])
    trainer.fit()
    tracking.end_run(client, run_id)


def run_sweep(params: Params, sweep_key: str, paths: Paths) -> dict[str, Any]:
    """Run a grid sweep with ASHA early stopping; write metrics/sweeps/<sweep>.json."""
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler

    sweeps = params.all_sweeps
    if sweep_key not in sweeps:
        raise KeyError(f"params.yaml: no sweep {sweep_key!r}; known: {sorted(sweeps)}")
    sweep = sweeps[sweep_key]
    settings = params.active.tune
    exp = resolve_experiment(params, sweep.experiment, epochs=settings.epochs, num_workers=settings.num_workers,
                             cpus_per_worker=1, val_every=1)
    ensure_ray(dashboard=True)  # the State API that cleans up trials stopped by ASHA
    uri = tracking.tracking_uri(paths.root)
    client = MlflowClient(uri)
    experiment_id = tracking.get_or_create_experiment(client, exp.paper, paths.root)
    parent = tracking.start_run(client, experiment_id, f"sweep:{sweep_key}",
                                {**run_tags(exp, paths.root, kind="sweep"), "facebench.sweep": sweep_key})
    tracking.log_params(client, parent, {"grid": {k: str(v) for k, v in sweep.grid.items()},
                                         "base_experiment": sweep.experiment, "metric": sweep.metric,
                                         "mode": sweep.mode})
    print(f"[sweep {sweep_key}] parent MLflow run {parent}; grid {sweep.grid}", flush=True)
    trainable = ray.tune.with_parameters(
        _trial, base=exp.model_dump(mode="json"), prepared_dir=str(paths.training_data(exp).resolve()),
        storage=str(paths.storage.resolve()), uri=uri, experiment_id=experiment_id, parent_run_id=parent,
        sweep=sweep_key)
    tuner = ray.tune.Tuner(
        ray.tune.with_resources(trainable, {"CPU": 0.1}),  # the trial only drives its TorchTrainer
        param_space={k: ray.tune.grid_search(list(v)) for k, v in sweep.grid.items()},
        tune_config=ray.tune.TuneConfig(
            metric=sweep.metric, mode=sweep.mode, max_concurrent_trials=settings.max_concurrent_trials,
            # max_t one past the last epoch: a trial that reaches the end finishes on its own, so its
            # TorchTrainer releases its workers itself instead of being killed mid-teardown.
            scheduler=ASHAScheduler(max_t=settings.epochs + 1, grace_period=settings.grace_period,
                                    reduction_factor=settings.reduction_factor)),
        run_config=ray.tune.RunConfig(name=f"sweep-{sweep_key}-{exp.config_hash()}",
                                      storage_path=str(paths.storage.resolve())),
    )
    try:
        grid = tuner.fit()
        trials = []
        for result in grid:
            m = result.metrics or {}
            trials.append({**{k: float(v) for k, v in result.config.items()},
                           sweep.metric: m.get(sweep.metric), "epochs": m.get("epoch"),
                           "error": str(result.error) if result.error else None})
        trials.sort(key=lambda r: tuple(r[k] for k in sorted(sweep.grid)))
        scored = [t for t in trials if t[sweep.metric] is not None]
        if not scored:
            raise RuntimeError(f"sweep {sweep_key}: no trial reported {sweep.metric}")
        best = (min if sweep.mode == "min" else max)(scored, key=lambda r: r[sweep.metric])
        best_config = {k: best[k] for k in sweep.grid}
        _close_stopped_trials(client, experiment_id, parent)
        tracking.log_metrics(client, parent, {f"best_{sweep.metric}": best[sweep.metric]})
        tracking.set_tags(client, parent, {f"facebench.best.{k}": str(v) for k, v in best_config.items()})
    except BaseException:
        tracking.end_run(client, parent, status="FAILED")
        raise
    tracking.end_run(client, parent)
    summary = {"sweep": sweep_key, "experiment": sweep.experiment, "metric": sweep.metric, "mode": sweep.mode,
               "mlflow_parent_run_id": parent, "best_config": best_config, f"best_{sweep.metric}": best[sweep.metric],
               "trials": trials}
    atomic_write_text(paths.sweep_file(sweep_key), json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"[sweep {sweep_key}] best {best_config} {sweep.metric}={best[sweep.metric]:.4f}", flush=True)
    return summary


def _close_stopped_trials(client: MlflowClient, experiment_id: str, parent: str) -> None:
    """Trials that ASHA stopped never reach their own end_run; mark them finished and say why."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    for run in runs:
        if run.info.status == "RUNNING":
            tracking.set_tags(client, run.info.run_id, {"facebench.stopped_early": "true"})
            tracking.end_run(client, run.info.run_id, status="FINISHED")
