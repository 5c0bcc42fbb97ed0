"""Real Ray Train runs (2 workers, gloo), real MLflow SQLite store, resume from checkpoint."""

from __future__ import annotations

import json

import mlflow.pytorch
import pytest
import torch
from mlflow.tracking import MlflowClient

from facebench.config import Paths, load_params, resolve_experiment
from facebench.papers.wing.model import CNN6
from facebench.tracking import tracking_uri
from facebench.train.experiment import train_experiment
from facebench.train.ray_trainer import fit

pytestmark = pytest.mark.integration


def test_two_workers_train_track_and_write_outputs(ray_local, smoke_project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params(smoke_project / "params.yaml", profile="smoke")
    exp = resolve_experiment(params, "aflw_cnn6_wing", num_workers=2, cpus_per_worker=1, epochs=2, export_model=True)
    paths = Paths(root=smoke_project)

    summary = train_experiment(exp, paths)

    client = MlflowClient(tracking_uri(smoke_project))
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["facebench.loss"] == "wing"
    assert run.data.tags["facebench.dataset"] == "aflw"
    assert run.data.params["loss.w"] == "10.0"
    assert run.data.params["train.num_workers"] == "2"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2]
    assert 0 < run.data.metrics["test_test_nme"] < 5
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "ced" in artifacts
    models = client.search_logged_models([run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run.info.run_id}'")
    assert len(models) == 1
    logged = mlflow.pytorch.load_model(models[0].model_uri)  # the exported graph, no pickle
    state = torch.load(paths.model_dir("aflw_cnn6_wing") / "model.pt", weights_only=True)
    reference = CNN6(num_landmarks=19)
    reference.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(logged(x), reference.eval()(x), atol=1e-4, rtol=1e-4)
    # MLflow as a user reads it: a training-run experiment, a description, the dataset input, only the
    # params of this task, the training's cost and device, the model named by its experiment
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert "experiment `aflw_cnn6_wing`" in run.data.tags["mlflow.note.content"]
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "aflw" and dataset.dataset.digest == run.data.tags["facebench.data_hash"][:12]
    assert "data.crop_size" in run.data.params and "data.template" not in run.data.params
    assert run.data.metrics["train_wall_s"] > 0 and run.data.metrics["train_images_per_s"] > 0
    assert run.data.tags["facebench.device"].startswith("CPU ") and run.data.tags["facebench.device"].endswith(" x2")
    assert models[0].name == "aflw_cnn6_wing"
    # the registry: the best (only) run of (wing, aflw, cnn6) under `champion`, loaded back by the alias
    from facebench.registry import load, register

    registered = register(tracking_uri(smoke_project), "smoke")["registered"]["facebench-wing-aflw-cnn6"]
    assert registered["run_id"] == run.info.run_id and registered["aliases"] == ["champion", "smoke"]
    champion = load("facebench-wing-aflw-cnn6", uri=tracking_uri(smoke_project))
    torch.testing.assert_close(champion(x), reference.eval()(x), atol=1e-4, rtol=1e-4)
    again = register(tracking_uri(smoke_project), "smoke")["registered"]["facebench-wing-aflw-cnn6"]
    assert again["version"] == registered["version"]  # the same run again: no new version
    written = json.loads(paths.metrics_file("aflw_cnn6_wing").read_text())
    assert written["mlflow_run_id"] == run.info.run_id
    assert (paths.model_dir("aflw_cnn6_wing") / "model.pt").exists()
    assert (paths.plots_dir("aflw_cnn6_wing") / "ced_test.csv").exists()


def test_world_size_and_resume_from_checkpoint(ray_local, smoke_project, tmp_path):
    params = load_params(smoke_project / "params.yaml", profile="smoke")
    paths = Paths(root=smoke_project)
    one = resolve_experiment(params, "aflw_cnn6_l1", num_workers=2, cpus_per_worker=1, epochs=1)
    first = fit(one, paths, tmp_path / "run")
    assert first.metrics["epoch"] == 1 and first.metrics["world_size"] == 2

    # the resumed run streams Ray Data shards (no device cache), the first read Parquet straight into it
    two = resolve_experiment(params, "aflw_cnn6_l1", num_workers=2, cpus_per_worker=1, epochs=2, device_cache_gib=0)
    second = fit(two, paths, tmp_path / "run")
    assert second.metrics["resumed_from"] == 1  # started from the first run's checkpoint
    assert second.metrics["epoch"] == 2
    assert set(second.evaluation) == {"test", "frontal"} or set(second.evaluation) == {"test"}


def test_heatmap_experiment_trains_on_two_workers_and_logs_a_point_model(ray_local, smoke_project, monkeypatch):
    """The Adaptive Wing task through the same trainer: hourglass + AWing + weight map, 2 DDP workers."""
    from facebench.config import HeatmapExperimentConfig
    from facebench.papers.awing.model import AWingHourglass
    from facebench.papers.awing.task import PointsFromHeatmaps

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params(smoke_project / "params.yaml", profile="smoke")
    params.heatmap_experiments["aflw_hg_awing_no_map"] = HeatmapExperimentConfig(
        paper="awing", task="heatmaps", dataset="aflw", model="hourglass", loss="awing", weight_map=False)
    exp = resolve_experiment(params, "aflw_hg_awing_no_map", num_workers=2, cpus_per_worker=1, epochs=1,
                             export_model=True)
    paths = Paths(root=smoke_project)

    summary = train_experiment(exp, paths)

    client = MlflowClient(tracking_uri(smoke_project))
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["facebench.task"] == "heatmaps"
    assert run.data.tags["facebench.variant"] == "no weight map"
    assert run.data.tags["facebench.label"] == "Hourglass, no weight map"  # the task's describe(), as the report shows it
    assert run.data.params["heatmap.weight_map"] == "False"
    assert run.data.params["train.num_workers"] == "2"
    assert 0 < run.data.metrics["test_test_nme"] < 5
    models = client.search_logged_models([run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run.info.run_id}'")
    logged = mlflow.pytorch.load_model(models[0].model_uri)  # images -> points, exported graph
    s = exp.heatmap
    reference = AWingHourglass(19, num_stacks=s.stacks, features=s.features, input_size=s.input_size, depth=s.depth)
    reference.load_state_dict(torch.load(paths.model_dir(exp.key) / "model.pt", weights_only=True))
    x = torch.randn(2, 3, s.input_size, s.input_size)
    expected = PointsFromHeatmaps(reference.eval())(x)
    assert expected.shape == (2, 38)
    torch.testing.assert_close(logged(x), expected, atol=1e-3, rtol=0)
