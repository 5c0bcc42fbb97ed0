"""Multi-node: a real Ray cluster on 127.0.0.1 (a head with no CPUs for training and two worker nodes of 2 CPUs,
each started with `ray start`), a real `facebench server` (MLflow on 127.0.0.1, artifacts served over HTTP), a
shared storage root, and a committed copy of the project submitted with `facebench submit`.

- A 2-worker training (placement SPREAD) lands one worker on each node; the job SUCCEEDED; the MLflow server
  holds the run with its metrics, model and the submitting commit; the outputs are in the shared root.
- The same training with one worker node killed mid-training: Ray Train restarts the worker group on the node
  left, from the newest checkpoint, in the same MLflow run; the restart is logged once and every epoch once;
  the final metric is within noise of the uninterrupted run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import process_tree, running, signal_all
from tests.integration.local_cluster import BIN, LocalCluster, mlflow_server, project_copy, stop_processes, submit_env

pytestmark = pytest.mark.integration

EXPERIMENT = "w300_cnn6_l2"
EPOCHS = 8
NODES = {"fbnodea": 2, "fbnodeb": 2}


def _two_workers(params: dict) -> None:
    """The smoke profile, trained by two Ray workers spread over the nodes, with its model exported."""
    params["profile"] = "smoke"
    smoke = params["profiles"]["smoke"]
    smoke["synth"]["w300_scale"] = 0.06
    smoke["train"].update(epochs=EPOCHS, batch_size=8, num_workers=2, local_mode=False, placement_strategy="SPREAD",
                          export_model=True, val_every=1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Node deaths found in ~3 s (GCS health checks every second), not the default ~15 s.
    ray = LocalCluster(head_cpus=0, env={"RAY_health_check_period_ms": "1000",
                                         "RAY_health_check_failure_threshold": "3"})
    mlflow_dir = tmp_path_factory.mktemp("mlflow-server")
    try:
        with mlflow_server(mlflow_dir) as uri:
            for name, cpus in NODES.items():
                ray.add_node(name, cpus)
            ray.tracking_uri = uri
            ray.shared = tmp_path_factory.mktemp("shared")
            ray.project = project_copy(tmp_path_factory.mktemp("clone") / "project", _two_workers)
            yield ray
    finally:
        ray.stop()
        stop_processes(str(mlflow_dir))


JOB = f"facebench synth w300 && facebench prepare w300 && facebench train {EXPERIMENT} --force"


def _start_job(cluster) -> subprocess.Popen:
    env = submit_env(cluster, MLFLOW_TRACKING_URI=cluster.tracking_uri, FACEBENCH_STORAGE=str(cluster.shared))
    return subprocess.Popen([str(BIN / "facebench"), "submit", "--", "bash", "-c", JOB], cwd=cluster.project,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(job: subprocess.Popen, lines: list[str], timeout: float = 420.0) -> str:
    deadline = time.monotonic() + timeout
    for line in job.stdout:
        lines.append(line)
        if time.monotonic() > deadline:
            job.kill()
            raise TimeoutError("".join(lines[-40:]))
    job.wait(timeout=30)
    return "".join(lines)


def _both_nodes(cluster) -> None:
    """Both worker nodes up (a test before this one may have killed one)."""
    for name, cpus in NODES.items():
        cluster.ensure_node(name, cpus)


def _run_of(log: str) -> str:
    found = re.findall(r"MLflow run ([0-9a-f]{32}) \(new", log)
    assert len(found) == 1, log[-3000:]
    return found[0]


def _nodes_of(log: str) -> dict[int, str]:
    return {int(rank): node for rank, node in re.findall(r"rank (\d) of 2 on node ([0-9a-f]+)", log)}


@pytest.fixture(scope="module")
def uninterrupted(cluster) -> dict:
    """The 2-worker training, uninterrupted: its log, run and final metrics."""
    _both_nodes(cluster)
    log = _finish(_start_job(cluster), [])
    assert ": SUCCEEDED" in log, log[-5000:]
    return {"log": log, "run_id": _run_of(log)}


def test_two_workers_on_two_nodes_log_to_the_server_and_write_the_shared_root(cluster, uninterrupted):
    from mlflow.tracking import MlflowClient

    log, run_id = uninterrupted["log"], uninterrupted["run_id"]
    nodes = cluster.alive()
    placed = _nodes_of(log)
    assert sorted(placed) == [0, 1] and set(placed.values()) == set(nodes.values()), (placed, nodes)

    client = MlflowClient(cluster.tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cluster.project, capture_output=True,
                         text=True).stdout.strip()
    assert run.data.tags["facebench.code_version"] == sha  # the submitted commit, clean
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == list(range(1, EPOCHS + 1))
    assert "test_full_nme" in run.data.metrics
    models = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    assert len(models) == 1  # logged through the server's artifact proxy

    shared = cluster.shared
    metrics = json.loads((shared / "metrics" / f"{EXPERIMENT}.json").read_text())
    assert metrics["mlflow_run_id"] == run_id and metrics["test_full_nme"] == pytest.approx(
        run.data.metrics["test_full_nme"], abs=1e-6)
    assert (shared / "models" / EXPERIMENT / "model.pt").is_file()
    assert (shared / "data" / "prepared" / "w300").is_dir()
    assert list((shared / "runs" / EXPERIMENT / run_id / "checkpoints").iterdir())
    assert not (cluster.project / "metrics").exists() and not (cluster.project / "data").exists()


def test_a_lost_node_restarts_the_workers_from_the_newest_checkpoint_in_the_same_run(cluster, uninterrupted):
    from mlflow.tracking import MlflowClient

    _both_nodes(cluster)
    job, lines = _start_job(cluster), []
    for line in job.stdout:  # until the second epoch is checkpointed and logged
        lines.append(line)
        if f"] epoch 2/{EPOCHS} " in line:
            break
    assert job.poll() is None, "".join(lines)
    victim, killed_at = "fbnodea", len(lines)
    cluster.kill_node(victim)
    log = _finish(job, lines)
    assert ": SUCCEEDED" in log, log[-5000:]
    # (Ray's log monitor may show a line twice after a node is lost: the MLflow checks below count once.)
    resumed = sorted({int(e) for e in re.findall(r"worker group restarted: resuming after epoch (\d+)", log)})
    assert len(resumed) == 1 and 2 <= resumed[0] < EPOCHS, log[-5000:]  # mid-training, from its checkpoint

    run_id = _run_of(log)
    client = MlflowClient(cluster.tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run_id, "worker_restarts")) == 1
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == list(range(1, EPOCHS + 1))
    after = "".join(lines[killed_at:])
    assert set(_nodes_of(after).values()) == {cluster.alive()["fbnodeb"]}  # both on the node left
    reference = client.get_run(uninterrupted["run_id"]).data.metrics
    print(f"killed {victim} after epoch 2; resumed after epoch {resumed[0]}; "
          + ", ".join(f"{k} {run.data.metrics[k]:.5f} (uninterrupted {reference[k]:.5f})"
                      for k in ("val_nme", "test_full_nme")))
    for key in ("test_full_nme", "val_nme"):  # noise: DDP's float sums in another order after the restart
        assert run.data.metrics[key] == pytest.approx(reference[key], rel=0.05), key
    assert not any(running(p) for p in process_tree(lambda a: str(cluster.nodes[victim]) in a))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-x", "-q"]))


def test_a_dvc_stage_runs_on_the_cluster_and_its_outputs_come_back(cluster, tmp_path):
    """`facebench submit --stage train@<exp>`: the stage's prepared data goes up to the storage root, its
    command runs on the cluster, its outputs come back and dvc.lock records them."""
    _both_nodes(cluster)
    def other_seed(params: dict) -> None:  # not the other tests' run identity (their runs hold no checkpoint here)
        _two_workers(params)
        params["seed"] = 7

    project = project_copy(tmp_path / "project", other_seed, dvc=True)
    env = submit_env(cluster, MLFLOW_TRACKING_URI=cluster.tracking_uri)
    local = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    local["PATH"] = f"{BIN}:{local.get('PATH', '')}"  # DVC's stage commands call `facebench`
    made = subprocess.run([str(BIN / "dvc"), "repro", "-q", "prepare@w300"], cwd=project, env=local,
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stdout + made.stderr
    store = tmp_path / "store"  # a storage root of its own: the prepared data must be copied up
    store.mkdir()
    done = subprocess.run([str(BIN / "facebench"), "submit", "--stage", f"train@{EXPERIMENT}"], cwd=project,
                          env={**env, "FACEBENCH_STORAGE": str(store)}, capture_output=True, text=True, timeout=420)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    assert f"copying data/prepared/w300 to {store}" in out and ": SUCCEEDED" in out
    metrics = json.loads((project / "metrics" / f"{EXPERIMENT}.json").read_text())
    assert metrics == json.loads((store / "metrics" / f"{EXPERIMENT}.json").read_text())
    assert (project / "models" / EXPERIMENT / "model.pt").read_bytes() == \
        (store / "models" / EXPERIMENT / "model.pt").read_bytes()
    from mlflow.tracking import MlflowClient

    assert MlflowClient(cluster.tracking_uri).get_run(metrics["mlflow_run_id"]).info.status == "FINISHED"
    status = subprocess.run([str(BIN / "dvc"), "status", f"train@{EXPERIMENT}"], cwd=project, env=local,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout + status.stderr
