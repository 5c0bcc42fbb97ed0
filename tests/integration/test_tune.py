"""A real Ray Tune sweep (ASHA) around the TorchTrainer, with nested MLflow runs."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from facebench.config import Paths, load_params
from facebench.tracking import tracking_uri
from facebench.train.tune import run_sweep

pytestmark = pytest.mark.integration


def test_wing_sweep_nested_runs_and_best_config(ray_local, smoke_project, monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw = yaml.safe_load((smoke_project / "params.yaml").read_text())
    raw["profile"] = "smoke"
    raw["sweeps"]["wing_w_eps"]["grid"] = {"w": [5.0, 10.0], "eps": [2.0]}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    params = load_params(params_file)
    paths = Paths(root=smoke_project)

    summary = run_sweep(params, "wing_w_eps", paths)

    assert len(summary["trials"]) == 2
    assert {t["w"] for t in summary["trials"]} == {5.0, 10.0}
    assert summary["best_config"]["w"] in (5.0, 10.0)
    best = min(summary["trials"], key=lambda t: t["val_nme"])
    assert summary["best_config"] == {"w": best["w"], "eps": best["eps"]}
    on_disk = json.loads(paths.sweep_file("wing_w_eps").read_text())
    assert on_disk["best_config"] == summary["best_config"]

    client = MlflowClient(tracking_uri(smoke_project))
    parent = client.get_run(summary["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["facebench.kind"] == "sweep"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2
    assert {c.data.params["loss.w"] for c in children} == {"5.0", "10.0"}
    assert all(c.info.status == "FINISHED" for c in children)
    assert all("val_nme" in c.data.metrics for c in children)


def _live_placement_groups(ray) -> list[str]:
    return [pg_id for pg_id, pg in ray.util.placement_group_table().items() if pg["state"] != "REMOVED"]


def test_a_finished_sweep_leaves_no_placement_group_behind(ray_local):
    """Trials that ASHA stops are killed; their TorchTrainer's workers must still give their CPUs
    back, or later trials (and stages) wait forever. Runs after the sweep above in this module."""
    deadline = time.monotonic() + 60
    while _live_placement_groups(ray_local) and time.monotonic() < deadline:
        time.sleep(1)
    assert _live_placement_groups(ray_local) == []
