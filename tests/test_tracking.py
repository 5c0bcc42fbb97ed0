"""facebench.tracking against a real MLflow SQLite store (in a temporary folder) and a real git repository."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from facebench import tracking


@pytest.fixture()
def client(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking.tracking_uri(tmp_path))


def test_tracking_uri_is_the_projects_sqlite_file_unless_overridden(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_one_experiment_per_paper_with_artifacts_in_the_project(tmp_path, client):
    first = tracking.get_or_create_experiment(client, "wing", tmp_path)
    again = tracking.get_or_create_experiment(client, "wing", tmp_path)
    other = tracking.get_or_create_experiment(client, "cosface", tmp_path)
    assert first == again != other
    experiment = client.get_experiment(first)
    assert experiment.name == "facebench/wing"
    assert experiment.artifact_location == (tmp_path.resolve() / "mlartifacts" / "wing").as_uri()


def test_find_runs_matches_identity_and_kind_newest_first(tmp_path, client):
    exp = tracking.get_or_create_experiment(client, "wing", tmp_path)
    tags = {"facebench.identity": "abc", "facebench.kind": "train"}
    older = tracking.start_run(client, exp, "w300_cnn6_l2", tags)
    time.sleep(0.01)  # start times in ms: keep the order unambiguous
    newer = tracking.start_run(client, exp, "w300_cnn6_l2", tags)
    tracking.start_run(client, exp, "w300_cnn6_l2", {**tags, "facebench.identity": "abd"})
    sweep = tracking.start_run(client, exp, "sweep", {**tags, "facebench.kind": "sweep"})
    child = tracking.start_run(client, exp, "trial", tags, parent_run_id=sweep)

    found = [r.info.run_id for r in tracking.find_runs(client, exp, "abc")]
    assert found == [child, newer, older]
    assert [r.info.run_id for r in tracking.find_runs(client, exp, "abc", kind="sweep")] == [sweep]
    assert client.get_run(child).data.tags["mlflow.parentRunId"] == sweep
    assert tracking.find_runs(client, exp, "zzz") == []


def test_params_are_flattened_and_relogging_the_same_values_is_harmless(tmp_path, client):
    exp = tracking.get_or_create_experiment(client, "wing", tmp_path)
    run = tracking.start_run(client, exp, "r", {})
    params = {"loss": {"kind": "wing", "w": 10, "eps": 2.0}, "seed": 0,
              **{f"p{i:03d}": i for i in range(150)}}  # more than one batch of 100
    tracking.log_params(client, run, params)
    tracking.log_params(client, run, params)  # a resumed run logs its params again: MLflow would refuse a change
    logged = client.get_run(run).data.params
    assert logged["loss.kind"] == "wing" and logged["loss.w"] == "10" and logged["loss.eps"] == "2.0"
    assert logged["p149"] == "149" and len(logged) == 154
    assert tracking.flatten({"a": {"b": {"c": 1}}, "d": 2}) == {"a.b.c": 1, "d": 2}


def test_metrics_batches_and_logged_steps(tmp_path, client):
    exp = tracking.get_or_create_experiment(client, "wing", tmp_path)
    run = tracking.start_run(client, exp, "r", {})
    many = {f"m{i:04d}": float(i) for i in range(1200)}  # three batches of 500
    tracking.log_metrics(client, run, many, step=0)
    for step in (1, 2, 5):
        tracking.log_metrics(client, run, {"val_nme": 1.0 / step}, step=step)
    data = client.get_run(run).data.metrics
    assert len(data) == 1201 and data["m1199"] == 1199.0 and data["val_nme"] == pytest.approx(0.2)
    assert tracking.logged_steps(client, run, "val_nme") == {1, 2, 5}
    assert tracking.logged_steps(client, run, "never_logged") == set()
    tracking.end_run(client, run, "KILLED")
    assert client.get_run(run).info.status == "KILLED"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_code_version_is_the_commit_dirty_only_for_package_edits(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # "not-a-repo" stays one wherever tmp is
    repo = tmp_path / "repo"
    (repo / "facebench").mkdir(parents=True)
    (repo / "facebench" / "x.py").write_text("A = 1\n")
    (repo / "params.yaml").write_text("profile: smoke\n")
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "c")
    sha = _git(repo, "rev-parse", "HEAD")
    assert len(sha) == 40
    assert tracking.code_version(repo) == sha

    (repo / "params.yaml").write_text("profile: default\n")  # the params hash's business, not the code's
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    assert tracking.code_version(repo) == sha

    (repo / "facebench" / "x.py").write_text("A = 2\n")
    assert tracking.code_version(repo) == sha + "-dirty"
    (repo / "facebench" / "x.py").write_text("A = 1\n")
    (repo / "facebench" / "new.py").write_text("B = 1\n")  # an untracked module counts too
    assert tracking.code_version(repo) == sha + "-dirty"

    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    assert tracking.code_version(outside) == "unknown"
