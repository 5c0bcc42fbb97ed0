"""The recognition task through the real trainer: 2 Ray Train workers (DDP on the backbone, the classifier
split over the two workers, gloo), an MLflow SQLite store, the LFW protocol at the end and the model logged
as an exported graph that gives embeddings (the checkpoint holds the whole head, gathered from both)."""

from __future__ import annotations

import mlflow.pytorch
import pytest
import torch
from mlflow.tracking import MlflowClient

from facebench.config import resolve_experiment
from facebench.tracking import tracking_uri
from facebench.train.experiment import train_experiment

pytestmark = pytest.mark.integration


def test_cosface_trains_on_two_workers_and_is_verified_on_lfw(ray_local, recognition_project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params, paths = recognition_project
    exp = resolve_experiment(params, "casia_cosface", num_workers=2, cpus_per_worker=1, epochs=2, batch_size=8,
                             export_model=True)

    summary = train_experiment(exp, paths)

    client = MlflowClient(tracking_uri(paths.root))
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["facebench.paper"] == "cosface" and run.data.tags["facebench.loss"] == "cosface"
    assert run.data.params["loss.m"] == "0.35" and run.data.params["train.num_workers"] == "2"
    assert run.data.params["shard_head"] == "True"  # each worker held half the classifier
    assert 0.0 <= run.data.metrics["lfw_accuracy"] <= 1.0
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "roc" in artifacts
    models = client.search_logged_models([run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run.info.run_id}'")
    logged = mlflow.pytorch.load_model(models[0].model_uri)
    embeddings = logged(torch.randn(2, 3, 112, 96))
    assert embeddings.shape == (2, 512)
