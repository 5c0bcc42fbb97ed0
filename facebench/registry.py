"""The MLflow model registry: the best run of each (paper, dataset, model), chosen on validation.

What ``facebench register`` and the DVC ``register`` stage call. Among a profile's finished training runs
that logged a model, the one with the best validation score of its (paper, dataset, model) becomes a
version of the registered model ``facebench-<paper>-<dataset>-<model>`` with the aliases ``champion`` and
the profile's name, so a user loads it as ``models:/facebench-wing-aflw-cnn6@champion`` (``load``). Test
splits choose nothing here. Before an alias moves, the version is loaded back by it and run on its own
input example, and the result must match the model's signature (input shape and type) and be finite.
Registering the same run again changes nothing.
"""

from __future__ import annotations

import math
from typing import Any

from mlflow.tracking import MlflowClient

ALIAS = "champion"
# How a validation metric is read: which way is better. The first one a run logged decides.
SELECTION = (("val_nme", "min"), ("val_accuracy", "max"))


def registered_name(paper: str, dataset: str, model: str) -> str:
    return f"facebench-{paper}-{dataset}-{model}".replace("/", "-")


def _score(run) -> tuple[str, str, float] | None:
    for metric, mode in SELECTION:
        value = run.data.metrics.get(metric)
        if value is not None and math.isfinite(value):
            return metric, mode, value
    return None


def champions(client: MlflowClient, profile: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per registered-model name the best finished run of ``profile`` with a logged model; and the runs
    passed over, each with why (no validation score, no logged model)."""
    experiments = [e.experiment_id for e in client.search_experiments(filter_string="name LIKE 'facebench/%'")]
    if not experiments:
        return {}, []
    runs = client.search_runs(experiments, filter_string=f"tags.`facebench.kind` = 'train' and "
                              f"tags.`facebench.profile` = '{profile}' and attributes.status = 'FINISHED'")
    best: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for run in runs:
        tags = run.data.tags
        label = f"{tags.get('facebench.experiment')} ({run.info.run_id[:8]})"
        score = _score(run)
        if score is None:
            skipped.append(f"{label}: no validation score")
            continue
        models = client.search_logged_models([run.info.experiment_id],
                                             filter_string=f"source_run_id = '{run.info.run_id}'")
        if not models:
            skipped.append(f"{label}: no logged model (train.export_model is off)")
            continue
        metric, mode, value = score
        name = registered_name(tags["facebench.paper"], tags["facebench.dataset"], tags["facebench.model"])
        held = best.get(name)
        better = held is None or (value < held["value"] if mode == "min" else value > held["value"])
        if better:
            best[name] = {"run_id": run.info.run_id, "experiment": tags.get("facebench.experiment"),
                          "metric": metric, "mode": mode, "value": value, "model_id": models[0].model_id,
                          "model_uri": models[0].model_uri}
    return best, skipped


def check_signature(model_uri: str) -> None:
    """Load the model, run its logged input example and check the input against the logged signature
    and the output for NaN/inf: a model that cannot serve its own example is not registered."""
    import mlflow.artifacts
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import Model

    info = Model.load(model_uri)
    example = info.load_input_example(mlflow.artifacts.download_artifacts(model_uri))
    if example is None or info.signature is None:
        raise ValueError(f"{model_uri}: logged without an input example or signature")
    spec = info.signature.inputs.inputs[0]
    array = np.asarray(example)
    if array.dtype != spec.type or len(array.shape) != len(spec.shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, array.shape)):
        raise ValueError(f"{model_uri}: input example {array.dtype}{list(array.shape)} does not match the "
                         f"signature {spec.type}{list(spec.shape)}")
    with torch.no_grad():
        out = mlflow.pytorch.load_model(model_uri)(torch.from_numpy(array))
    leaves = [out] if isinstance(out, torch.Tensor) else [t for t in torch.utils._pytree.tree_leaves(out)
                                                            if isinstance(t, torch.Tensor)]
    if not leaves or not all(torch.isfinite(t).all() for t in leaves):
        raise ValueError(f"{model_uri}: the output on the input example is empty or not finite")


def register(uri: str, profile: str) -> dict[str, Any]:
    """Register each (paper, dataset, model)'s best run of ``profile`` and point ``champion`` and the
    profile's alias at it. Returns per name the version, run, experiment and score, and the runs skipped."""
    import mlflow

    client = MlflowClient(uri)
    best, skipped = champions(client, profile)
    out: dict[str, Any] = {}
    for name, pick in sorted(best.items()):
        version = None
        try:
            current = client.get_model_version_by_alias(name, ALIAS)
            if current.run_id == pick["run_id"]:
                version = current.version  # the same run again: nothing to do
        except mlflow.exceptions.MlflowException:
            pass
        if version is None:
            check_signature(pick["model_uri"])
            if not client.search_registered_models(filter_string=f"name = '{name}'"):
                client.create_registered_model(name, description="the best facebench run of this (paper, dataset, "
                                               "model) on validation; aliases: champion and the profile")
            mlflow.set_tracking_uri(uri)
            registered = mlflow.register_model(pick["model_uri"], name, tags={
                "facebench.experiment": pick["experiment"], "facebench.profile": profile,
                f"facebench.{pick['metric']}": f"{pick['value']:.6g}"})
            version = registered.version
            client.update_model_version(name, version, description=(
                f"{pick['experiment']} (run {pick['run_id']}): best {pick['metric']} ({pick['mode']}) "
                f"{pick['value']:.6g} among the profile `{profile}` runs; chosen on validation"))
        for alias in (ALIAS, profile):
            client.set_registered_model_alias(name, alias, str(version))
        out[name] = {"version": int(version), "run_id": pick["run_id"], "experiment": pick["experiment"],
                     pick["metric"]: round(pick["value"], 6), "aliases": [ALIAS, profile]}
    return {"registered": out, "skipped": sorted(skipped)}


def load(name: str, alias: str = ALIAS, uri: str | None = None):
    """A registered model by alias, e.g. ``load("facebench-wing-aflw-cnn6")``: the exported graph (no pickle)."""
    import mlflow
    import mlflow.pytorch

    if uri is not None:
        mlflow.set_tracking_uri(uri)
    return mlflow.pytorch.load_model(f"models:/{name}@{alias}")

