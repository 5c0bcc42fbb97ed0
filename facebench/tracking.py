"""MLflow conventions: one experiment per paper, one run per run identity, nested sweeps.

- Experiment ``facebench/<paper>``; run name = experiment key; tags ``facebench.*`` (kind, experiment,
  paper, task, dataset, model, loss, pdb, profile, code_version, and the run identity: identity,
  config_hash, code_hash, data_hash; train/identity.py). A run is found again by its identity
  (``find_runs``): a finished one is never reopened, an unfinished one is resumed.
- The driver creates and finishes runs; under Ray only rank 0 logs per-epoch metrics into the run
  the driver made (one writer at a time keeps a SQLite store healthy).
- Default store: ``sqlite:///<project>/mlflow.db`` with artifacts in ``<project>/mlartifacts``;
  ``MLFLOW_TRACKING_URI`` overrides it (an ``mlflow server`` at scale).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402


def local_store_uri(root: Path) -> str:
    """The project's own store of runs: sqlite:///<project>/mlflow.db."""
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def local_artifacts(root: Path) -> Path:
    """The project's own artifact folder, <project>/mlartifacts (one subfolder per paper)."""
    return Path(root).resolve() / "mlartifacts"


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or local_store_uri(root)


def experiment_name(paper: str) -> str:
    return f"facebench/{paper}"


# MLflow 3's UI opens an experiment of this kind on its training runs (not on the GenAI traces page).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def study_experiment_name(question: str) -> str:
    """A claims-study question's experiment (facebench/study.py): apart from the papers' experiments, which
    the leaderboard and the registry read (``facebench/%``)."""
    return f"facebench-study/{question}"


def get_or_create_experiment(client: MlflowClient, paper: str, root: Path, name: str | None = None) -> str:
    """The paper's experiment (or the one ``name`` gives), marked as model training. A local SQLite store keeps
    artifacts under the project (``mlartifacts/<paper>``); any other store (an ``mlflow server`` with
    ``--serve-artifacts``) gets the server's own artifact location, so clients on other machines log through
    the server."""
    name = name or experiment_name(paper)
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
            client.set_experiment_tag(found.experiment_id, "mlflow.experimentKind",
                                      EXPERIMENT_KIND["mlflow.experimentKind"])
        return found.experiment_id
    artifacts = None
    if client.tracking_uri.startswith("sqlite:"):
        artifacts = (local_artifacts(root) / name.removeprefix("facebench/").replace("/", "-")).as_uri()
    return client.create_experiment(name, artifact_location=artifacts, tags=EXPERIMENT_KIND)


def code_version(root: Path) -> str:
    """Git commit of the code, with -dirty when the facebench sources differ from it; 'unknown' outside git.

    Only the package counts: params.yaml changes are the params hash's business and DVC rewrites dvc.lock
    while a pipeline runs, so neither makes the code dirty."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True, env=env).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "facebench"], cwd=root,
                               capture_output=True, text=True, check=True, env=env).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def start_run(client: MlflowClient, experiment_id: str, run_name: str, tags: dict[str, str],
              parent_run_id: str | None = None) -> str:
    """Create a run (nested under ``parent_run_id`` when given)."""
    all_tags = dict(tags)
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    return client.create_run(experiment_id, run_name=run_name, tags=all_tags).info.run_id


def find_runs(client: MlflowClient, experiment_id: str, identity: str, kind: str = "train") -> list:
    """The runs of one run identity (train/identity.py), newest first."""
    return client.search_runs([experiment_id], filter_string=f"tags.`facebench.identity` = '{identity}' and "
                              f"tags.`facebench.kind` = '{kind}'", order_by=["attributes.start_time DESC"])


def logged_steps(client: MlflowClient, run_id: str, metric: str) -> set[int]:
    """The steps at which ``metric`` was logged in a run."""
    return {m.step for m in client.get_metric_history(run_id, metric)}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Log (flattened) params, skipping ones already logged with the same value (resumed runs)."""
    existing = client.get_run(run_id).data.params
    items = [Param(k, str(v)) for k, v in sorted(flatten(params).items()) if existing.get(k) != str(v)]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in sorted(metrics.items())]
    for i in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[i:i + 500])


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in sorted(tags.items())])


def log_tables(client: MlflowClient, run_id: str, tables: dict[str, Any]) -> None:
    """Log pandas tables as CSV artifacts at the given relative paths (e.g. 'ced/full.csv')."""
    with tempfile.TemporaryDirectory() as tmp:
        for rel, df in tables.items():
            path = Path(tmp) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(path, index=False)
        client.log_artifacts(run_id, tmp)


def log_dataset(client: MlflowClient, run_id: str, name: str, digest: str, path: Path, source: str) -> None:
    """The prepared set as the run's training input (MLflow's Datasets column): its name, the digest of
    the files the training read (the run identity's data hash) and where they are. Once per run."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    if any(d.dataset.name == name for d in client.get_run(run_id).inputs.dataset_inputs):
        return
    dataset = Dataset(name=name, digest=digest[:12], source_type="local",
                      source=json.dumps({"uri": Path(path).resolve().as_uri(), "data": source}))
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])


def log_torch_model(uri: str, run_id: str, model: Any, example_input: Any, name: str = "model") -> None:
    """Log the model with MLflow's PyTorch flavour as an exported graph (``pt2``: no pickle), with
    explicit requirements so MLflow does not probe the environment.

    The signature names the input tensor (batch dimension free) and leaves the output open: MLflow
    cannot infer one for models that return a dict of per-stack lists (the hourglass)."""
    import mlflow.pytorch
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    mlflow.set_tracking_uri(uri)
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(example_input.dtype),
                                                         (-1, *example_input.shape[1:]))]))
    with mlflow.start_run(run_id=run_id):
        mlflow.pytorch.log_model(model.eval(), name=name, input_example=example_input, signature=signature,
                                 pip_requirements=["torch"])


def end_run(client: MlflowClient, run_id: str, status: str = "FINISHED") -> None:
    client.set_terminated(run_id, status=status)
