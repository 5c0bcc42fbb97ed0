"""Run identity against a real MLflow store and real trainings (Ray Train's local mode, one worker):
a run is its params, code and data; a finished run is reused and stays FINISHED; a changed source file or
input row starts a new run from epoch 1; a killed run resumes from its newest checkpoint, logging every
step once; no test split is read before the last epoch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from facebench.config import Paths, load_params, resolve_experiment
from facebench.tracking import tracking_uri
from facebench.train import checkpoints, identity
from facebench.train.experiment import train_experiment
from tests.conftest import process_tree, running, signal_all

pytestmark = pytest.mark.integration
EXPERIMENT = "aflw_cnn6_l1"


@pytest.fixture(autouse=True)
def _own_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _train(root: Path, **overrides):
    params = load_params(root / "params.yaml", profile="smoke")
    exp = resolve_experiment(params, EXPERIMENT, **overrides)
    return train_experiment(exp, Paths(root=root))


def _runs(root: Path) -> list:
    client = MlflowClient(tracking_uri(root))
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, filter_string="tags.`facebench.kind` = 'train'") if ids else []


def _steps(root: Path, run_id: str, metric: str = "train_loss") -> list[int]:
    return sorted(m.step for m in MlflowClient(tracking_uri(root)).get_metric_history(run_id, metric))


def test_a_finished_run_is_reused_and_stays_finished(private_project):
    first = _train(private_project)
    assert first["run"] == "new"
    metrics_file = Paths(root=private_project).metrics_file(EXPERIMENT)
    written = metrics_file.read_text()
    metrics_file.unlink()  # a lost DVC output is written again from the finished run

    again = _train(private_project)

    assert again["run"] == "reused" and again["run_id"] == first["run_id"]
    assert again["test_test_nme"] == first["test_test_nme"]
    assert metrics_file.read_text() == written
    (run,) = _runs(private_project)
    assert run.info.status == "FINISHED"
    assert _steps(private_project, run.info.run_id) == [1, 2]  # nothing trained, nothing logged twice


def test_a_changed_source_file_the_training_imports_starts_a_new_run(private_project, monkeypatch, tmp_path):
    first = _train(private_project)
    # A module the training does not import (the report) changes: the same run.
    _edit_module(monkeypatch, tmp_path, "facebench.report.document")
    assert _train(private_project)["run"] == "reused"
    # The loss the training imports changes: a new run, trained from epoch 1; the old one stays as it was.
    _edit_module(monkeypatch, tmp_path, "facebench.papers.wing.loss")
    second = _train(private_project)

    assert second["run"] == "new" and second["run_id"] != first["run_id"]
    assert _steps(private_project, second["run_id"]) == [1, 2]
    runs = {r.info.run_id: r for r in _runs(private_project)}
    assert runs[first["run_id"]].info.status == "FINISHED" and runs[second["run_id"]].info.status == "FINISHED"
    assert (runs[first["run_id"]].data.tags["facebench.code_hash"]
            != runs[second["run_id"]].data.tags["facebench.code_hash"])
    assert (runs[first["run_id"]].data.tags["facebench.data_hash"]
            == runs[second["run_id"]].data.tags["facebench.data_hash"])


def _edit_module(monkeypatch, tmp_path: Path, module: str) -> None:
    """The identity sees ``module``'s source with one more line (as if the file had been edited)."""
    original = identity.module_file(module)
    edited = tmp_path / f"{module}.py"
    edited.write_text(original.read_text() + "\n# edited\n")
    real = identity.module_file
    monkeypatch.setattr(identity, "module_file", lambda m: edited if m == module else real(m))


def test_one_changed_input_row_starts_a_new_run(private_project):
    first = _train(private_project)
    path = private_project / "data" / "prepared" / "aflw" / "train.parquet"
    table = pq.read_table(path)
    points = table.column("landmarks").to_pylist()
    points[0] = [v + 1.0 for v in points[0]]  # one face's points move by a pixel
    column = pa.array(points, type=table.schema.field("landmarks").type)
    pq.write_table(table.set_column(table.schema.get_field_index("landmarks"), "landmarks", column), path)

    second = _train(private_project)

    assert second["run"] == "new" and second["run_id"] != first["run_id"]
    assert _steps(private_project, second["run_id"]) == [1, 2]
    runs = {r.info.run_id: r for r in _runs(private_project)}
    assert (runs[first["run_id"]].data.tags["facebench.data_hash"]
            != runs[second["run_id"]].data.tags["facebench.data_hash"])


def test_no_test_split_is_read_before_the_last_epoch(private_project):
    result = _train(private_project, epochs=3, val_every=1)

    run_dir = Paths(root=private_project).run_dir(EXPERIMENT, result["run_id"])
    final = checkpoints.newest(run_dir / "checkpoints")
    history = checkpoints.load_state(final)["history"]
    # reads of any split but validation, after each epoch: none until the last epoch's final evaluation
    assert [h["test_split_reads"] for h in history] == [0, 0, 2]  # AFLW: test and frontal, once each
    assert set(checkpoints.load_eval(final)) == {"test", "frontal"}
    assert _steps(private_project, result["run_id"], "val_nme") == [1, 2, 3]


def test_a_missing_split_is_an_error_before_anything_starts(private_project):
    (private_project / "data" / "prepared" / "aflw" / "val.parquet").unlink()
    proc = subprocess.run([sys.executable, "-m", "facebench.cli", "train", EXPERIMENT, "--profile", "smoke"],
                          cwd=private_project, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'val'" in lines[0]
    assert str(private_project / "data" / "prepared" / "aflw") in lines[0]
    assert _runs(private_project) == []  # no MLflow run was started


@pytest.mark.parametrize("workers", [1, 2], ids=["local-mode", "two-ray-workers"])
def test_a_killed_run_resumes_from_its_newest_checkpoint_logging_each_step_once(private_project, workers):
    """SIGKILL mid-training (no handler runs: the MLflow run stays RUNNING), in Ray Train's local mode and with
    two Ray Train workers on a local Ray (DDP, gloo); the same command again resumes the same run from the
    newest checkpoint on disk, logs every epoch once, and ends with the numbers of a run that never stopped
    (``--force``: a new run of the same identity trained in one go); asked again, it is reused."""
    epochs = 16
    command = [sys.executable, "-m", "facebench.cli", "train", EXPERIMENT, "--profile", "smoke",
               "--epochs", str(epochs), "--seed", "0", "--num-workers", str(workers)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(command, cwd=private_project, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    runs_dir = private_project / "runs" / EXPERIMENT
    deadline = time.monotonic() + 240
    while not list(runs_dir.glob("*/checkpoints/epoch-000003")):
        assert proc.poll() is None, "the training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.02)
    _kill_tree(proc.pid)
    proc.wait()
    (killed,) = _runs(private_project)
    assert killed.info.status == "RUNNING"
    folder = runs_dir / killed.info.run_id / "checkpoints"
    newest = max(e for e, _ in checkpoints.complete(folder))
    assert 3 <= newest < epochs

    out = subprocess.run(command, cwd=private_project, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = json.loads(out.stdout[out.stdout.index("{"):])
    assert resumed["run"] == "resumed" and resumed["run_id"] == killed.info.run_id
    state = checkpoints.load_state(checkpoints.newest(folder))
    assert state["history"][-1]["resumed_from"] == newest
    assert _steps(private_project, killed.info.run_id) == list(range(1, epochs + 1))
    assert _steps(private_project, killed.info.run_id, "val_nme") == list(range(1, epochs + 1))
    assert MlflowClient(tracking_uri(private_project)).get_run(killed.info.run_id).info.status == "FINISHED"

    fresh = subprocess.run(command + ["--force"], cwd=private_project, env=env, capture_output=True, text=True,
                           timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    uninterrupted = json.loads(fresh.stdout[fresh.stdout.index("{"):])
    assert uninterrupted["run"] == "new" and uninterrupted["run_id"] != resumed["run_id"]
    assert {k: v for k, v in uninterrupted.items() if k.startswith("test_")} == \
        {k: v for k, v in resumed.items() if k.startswith("test_")}

    again = subprocess.run(command, cwd=private_project, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    reused = json.loads(again.stdout[again.stdout.index("{"):])
    assert reused["run"] == "reused" and reused["run_id"] == uninterrupted["run_id"]
    assert MlflowClient(tracking_uri(private_project)).get_run(reused["run_id"]).info.status == "FINISHED"


def _kill_tree(root: int, timeout: float = 60.0) -> None:
    """Kill a training at once, as a crashed machine would: the driver, the Ray it started and every Ray
    worker (the Train workers run in their own process groups, so killing the driver's group alone left
    its rank 0 training on for seconds, writing one more checkpoint after the test had looked). The tree is
    frozen first so that nothing can start a process between listing it and killing it."""
    frozen: set[int] = set()
    while True:
        pids = set(process_tree(roots=(root,))) - frozen
        if not pids:
            break
        signal_all(pids, signal.SIGSTOP)
        frozen |= pids
    signal_all(frozen, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(running(pid) for pid in frozen):
        assert time.monotonic() < deadline, f"processes {sorted(frozen)} still running after SIGKILL"
        time.sleep(0.1)

