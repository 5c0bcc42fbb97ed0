"""Loss-hyperparameter sweeps on Ray Tune (grid + ASHA), chosen on the validation split.

Each trial trains in one process: the Tune trial runs the experiment's training loop itself (the one Ray
Train's workers run, as rank 0 of 1: Ray Train's context is not available inside Tune), which reports
every epoch straight to Tune
(``ray.tune.report`` blocks until Tune wants the next epoch). So a trial that ASHA stops stops at that
epoch boundary; no worker group or placement group outlives it. Trials keep no checkpoints and never
read a test split: ASHA and the best config see validation metrics only.

The MLflow records come from the driver, from what Tune itself saw (``_TrialRuns``, a Tune callback):
the parent run holds the sweep, each trial is a nested run with one step per result Tune received, and
each ends with Tune's verdict: FINISHED (ran every epoch), KILLED with ``facebench.trial_status =
stopped_early`` (ASHA stopped it), or FAILED (it raised). The sweep's JSON lists the same trials.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from facebench import tracking
from facebench.atomic import atomic_write_text
from facebench.config import Params, Paths, ResolvedExperiment, resolve_experiment, resolve_sweep
from facebench.train.experiment import run_params, run_tags
from facebench.train.identity import code_hash, training_modules
from facebench.train.ray_trainer import (
    ensure_ray, loggable, max_failures, on_cluster, train_loop_per_worker, trial_config,
)
from facebench.train.task import Description, build_task

VALIDATION_SPLIT = "val"  # what a trial's metric is computed on (tasks' validate)


def _trial(config: dict[str, float], base: dict[str, Any], paths: dict[str, Any]) -> None:
    """One Tune trial: the experiment with this trial's loss parameters, trained in this process."""
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False  # this trial's process is its own driver
    exp = ResolvedExperiment.model_validate(base)
    exp = exp.model_copy(update={"loss_params": {**exp.loss_params, **config}})
    train_loop_per_worker(trial_config(exp, Paths.model_validate(paths)))


def _trial_label(config: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in sorted(config.items()))


def _tune_callback():
    """The Tune callback class (defined on first use: importing Ray Tune is slow)."""
    import ray.tune
    from ray.tune.result import AUTO_RESULT_KEYS

    class _TrialRuns(ray.tune.Callback):
        """Nested MLflow runs that record exactly what Tune saw of each trial."""

        def __init__(self, client: MlflowClient, experiment_id: str, parent: str, sweep: str,
                     exp: ResolvedExperiment, about: Description, root: Path, epochs: int):
            self.client, self.experiment_id, self.parent, self.sweep = client, experiment_id, parent, sweep
            self.exp, self.about, self.root, self.epochs = exp, about, root, epochs
            self.code_hash = code_hash(training_modules(exp.task))  # what the trials run (as a training's tag)
            self.runs: dict[str, str] = {}       # trial id -> MLflow run id
            self.outcome: dict[str, dict] = {}   # trial id -> status, epochs, last metrics
            self.by_config: dict[str, str] = {}  # _trial_label(config) -> trial id (grid points are unique)

        def on_trial_start(self, iteration, trials, trial, **info):
            exp = self.exp.model_copy(update={"loss_params": {**self.exp.loss_params, **trial.config}})
            tags = {**run_tags(exp, self.about, self.root, kind="trial"), "facebench.sweep": self.sweep,
                    "facebench.trial_id": trial.trial_id, "facebench.code_hash": self.code_hash}
            run_id = tracking.start_run(self.client, self.experiment_id, f"{self.sweep}[{_trial_label(trial.config)}]",
                                        tags, parent_run_id=self.parent)
            tracking.log_params(self.client, run_id, run_params(exp, self.about))
            self.runs[trial.trial_id] = run_id
            self.by_config[_trial_label(trial.config)] = trial.trial_id
            self.outcome[trial.trial_id] = {"status": "running", "epochs": 0, "metrics": {}}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            metrics = {k: float(v) for k, v in result.items() if k not in AUTO_RESULT_KEYS
                       and isinstance(v, (int, float)) and not isinstance(v, bool)}
            epoch = int(metrics["epoch"])
            tracking.log_metrics(self.client, self.runs[trial.trial_id], loggable(metrics), step=epoch)
            self.outcome[trial.trial_id].update(epochs=epoch, metrics=loggable(metrics))

        def on_trial_complete(self, iteration, trials, trial, **info):
            outcome = self.outcome[trial.trial_id]
            if outcome["epochs"] >= self.epochs:
                self._end(trial, "FINISHED", "finished")
            else:
                self._end(trial, "KILLED", "stopped_early",
                          {"facebench.stopped_early": "true",
                           "facebench.stop_reason": f"ASHA stopped it after epoch {outcome['epochs']} of {self.epochs}"})

        def on_trial_error(self, iteration, trials, trial, **info):
            error = str(getattr(trial, "error_file", "") or "")
            self._end(trial, "FAILED", "failed", {"facebench.error_file": error} if error else {})

        def _end(self, trial, status: str, verdict: str, tags: dict[str, str] | None = None) -> None:
            run_id = self.runs.get(trial.trial_id)
            if run_id is None:
                return
            tracking.set_tags(self.client, run_id, {"facebench.trial_status": verdict, **(tags or {})})
            tracking.end_run(self.client, run_id, status=status)
            self.outcome[trial.trial_id]["status"] = verdict

    return _TrialRuns


def run_sweep(params: Params, sweep_key: str, paths: Paths) -> dict[str, Any]:
    """Run a grid sweep with ASHA early stopping on the validation split; write metrics/sweeps/<sweep>.json."""
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler

    sweep = resolve_sweep(params, sweep_key)
    settings = params.active.tune
    exp = resolve_experiment(params, sweep.experiment, epochs=settings.epochs, cpus_per_worker=settings.cpus_per_trial,
                             val_every=1)
    task = build_task(exp, paths)
    task.check_inputs()
    about = task.describe()
    ensure_ray()
    uri = tracking.tracking_uri(paths.root)
    client = MlflowClient(uri)
    experiment_id = tracking.get_or_create_experiment(client, exp.paper, paths.root)
    parent = tracking.start_run(client, experiment_id, f"sweep:{sweep_key}",
                                {**run_tags(exp, about, paths.root, kind="sweep"), "facebench.sweep": sweep_key,
                                 "facebench.code_hash": code_hash(training_modules(exp.task))})
    tracking.log_params(client, parent, {"grid": {k: str(v) for k, v in sweep.grid.items()},
                                         "base_experiment": sweep.experiment, "metric": sweep.metric,
                                         "mode": sweep.mode, "chosen_on": VALIDATION_SPLIT})
    print(f"[sweep {sweep_key}] parent MLflow run {parent}; grid {sweep.grid}; chosen on the "
          f"{VALIDATION_SPLIT!r} split by {sweep.metric} ({sweep.mode})", flush=True)
    recorder = _tune_callback()(client, experiment_id, parent, sweep_key, exp, about, paths.root,
                                  settings.epochs)
    trainable = ray.tune.with_parameters(_trial, base=exp.model_dump(mode="json"), paths=paths.model_dump(mode="json"))
    resources = {"CPU": settings.cpus_per_trial, **({"GPU": 1} if exp.train.use_gpu else {})}
    tune_dir = paths.sweep_dir(sweep_key, parent)
    tuner = ray.tune.Tuner(
        ray.tune.with_resources(trainable, resources),
        param_space={k: ray.tune.grid_search(list(v)) for k, v in sweep.grid.items()},
        tune_config=ray.tune.TuneConfig(
            metric=sweep.metric, mode=sweep.mode, max_concurrent_trials=settings.max_concurrent_trials,
            # one trial process after another: each would otherwise pay ~5 s of start-up (imports, Ray actor)
            reuse_actors=True,
            # max_t one past the last epoch: a trial that reaches the end finishes on its own
            scheduler=ASHAScheduler(max_t=settings.epochs + 1, grace_period=settings.grace_period,
                                    reduction_factor=settings.reduction_factor)),
        # a trial whose process or node is lost runs again (trials keep no checkpoints: from its first epoch)
        run_config=ray.tune.RunConfig(name=tune_dir.name, storage_path=str(tune_dir.parent.resolve()),
                                      callbacks=[recorder], verbose=1,
                                      failure_config=ray.tune.FailureConfig(max_failures=max_failures(exp.train))),
    )
    try:
        grid = tuner.fit()
        trials = []
        for result in grid:  # Tune's own record of each trial; the MLflow children were logged by the callback
            trial_id = recorder.by_config.get(_trial_label(result.config))
            seen = result.metrics_dataframe
            last = result.metrics or {}
            trials.append({**{k: float(v) for k, v in result.config.items()},
                           sweep.metric: last.get(sweep.metric), "epochs": int(last.get("epoch", 0)),
                           "results": 0 if seen is None else len(seen),
                           "test_split_reads": 0 if seen is None or "test_split_reads" not in seen
                           else int(seen["test_split_reads"].max()),
                           "status": recorder.outcome.get(trial_id, {}).get("status", "failed"),
                           "mlflow_run_id": recorder.runs.get(trial_id),
                           "error": str(result.error) if result.error else None})
        trials.sort(key=lambda r: tuple(r[k] for k in sorted(sweep.grid)))
        scored = [t for t in trials if t[sweep.metric] is not None and t["status"] != "failed"]
        if not scored:
            raise RuntimeError(f"sweep {sweep_key}: no trial reported {sweep.metric}")
        best = (min if sweep.mode == "min" else max)(scored, key=lambda r: r[sweep.metric])
        best_config = {k: best[k] for k in sweep.grid}
        _wait_for_placement_groups()
        tracking.log_metrics(client, parent, {f"best_{sweep.metric}": best[sweep.metric]})
        tracking.set_tags(client, parent, {f"facebench.best.{k}": str(v) for k, v in best_config.items()})
    except BaseException:
        tracking.end_run(client, parent, status="FAILED")
        raise
    finally:
        shutil.rmtree(tune_dir, ignore_errors=True)  # Tune's own result files: MLflow and the JSON keep them
    tracking.end_run(client, parent)
    summary = {"sweep": sweep_key, "experiment": sweep.experiment, "metric": sweep.metric, "mode": sweep.mode,
               "chosen_on": VALIDATION_SPLIT, "mlflow_parent_run_id": parent, "best_config": best_config,
               f"best_{sweep.metric}": best[sweep.metric], "trials": trials}
    atomic_write_text(paths.sweep_file(sweep_key), json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"[sweep {sweep_key}] best {best_config} {sweep.metric}={best[sweep.metric]:.4f} "
          f"(on the {VALIDATION_SPLIT!r} split)", flush=True)
    return summary


def _wait_for_placement_groups(timeout_s: float = 60.0) -> None:
    """Tune removes each trial's placement group as the trial ends; wait until Ray says so, so that the
    next stage finds every CPU free. Only on a local Ray, which is this process's own."""
    import ray.util

    if on_cluster():
        return

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(pg["state"] == "REMOVED" for pg in ray.util.placement_group_table().values()):
            return
        time.sleep(0.5)
    live = [pg_id for pg_id, pg in ray.util.placement_group_table().items() if pg["state"] != "REMOVED"]
    print(f"warning: placement groups still live {timeout_s:.0f} s after the sweep: {live}", flush=True)
