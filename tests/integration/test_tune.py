"""A real Ray Tune sweep (grid + ASHA) on a local Ray, with nested runs in a real MLflow store."""

from __future__ import annotations

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from facebench.config import Paths, load_params
from facebench.tracking import tracking_uri
from facebench.train.tune import run_sweep

pytestmark = pytest.mark.integration

MLFLOW_STATUS = {"finished": "FINISHED", "stopped_early": "KILLED", "failed": "FAILED"}


def _live_placement_groups(ray) -> list[str]:
    return [pg_id for pg_id, pg in ray.util.placement_group_table().items() if pg["state"] != "REMOVED"]


def test_wing_sweep_mlflow_matches_tune_and_is_chosen_on_validation(ray_local, private_project, monkeypatch):
    """Three w values, two epochs, ASHA with grace period 1: some trials are stopped after epoch 1. Tune's
    record of each trial (the sweep JSON) and its MLflow child agree one to one: status, epochs, every
    step once, the final metric. The best config is the validation minimum and no trial read a test split.
    When the sweep returns, no placement group is left (the next stage gets every CPU)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw = yaml.safe_load((private_project / "params.yaml").read_text())
    raw["profile"] = "smoke"
    raw["sweeps"]["wing_w_eps"]["grid"] = {"w": [5.0, 10.0, 15.0], "eps": [2.0]}
    (private_project / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(private_project / "params.yaml")
    paths = Paths(root=private_project)

    summary = run_sweep(params, "wing_w_eps", paths)

    assert _live_placement_groups(ray_local) == []
    trials = summary["trials"]
    assert [t["w"] for t in trials] == [5.0, 10.0, 15.0]
    assert summary["chosen_on"] == "val"
    assert all(t["test_split_reads"] == 0 for t in trials)  # trials never read a test split
    best = min((t for t in trials if t["val_nme"] is not None), key=lambda t: t["val_nme"])
    assert summary["best_config"] == {"w": best["w"], "eps": best["eps"]}
    assert json.loads(paths.sweep_file("wing_w_eps").read_text())["best_config"] == summary["best_config"]

    client = MlflowClient(tracking_uri(private_project))
    parent = client.get_run(summary["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["chosen_on"] == "val"
    children = {c.info.run_id: c for c in client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    assert set(children) == {t["mlflow_run_id"] for t in trials}
    for t in trials:
        child = children[t["mlflow_run_id"]]
        assert t["status"] in ("finished", "stopped_early")
        assert child.info.status == MLFLOW_STATUS[t["status"]]
        assert child.data.tags["facebench.trial_status"] == t["status"]
        assert child.data.params["loss.w"] == str(t["w"])
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_nme")]
        assert sorted(steps) == list(range(1, t["epochs"] + 1)) == list(range(1, t["results"] + 1))
        assert child.data.metrics["val_nme"] == pytest.approx(t["val_nme"], rel=1e-12)
        assert not any(k.startswith("test_") for k in child.data.metrics)
        assert (t["status"] == "finished") == (t["epochs"] == params.active.tune.epochs)
    assert any(t["status"] == "stopped_early" for t in trials)  # ASHA halves the field after epoch 1
