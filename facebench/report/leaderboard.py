"""What the leaderboard is made of: the runs in MLflow, their CED curves, and the trivial baseline.

The rules come from the MLflow conventions (facebench/tracking.py): only FINISHED runs count, and
where several runs share (experiment key, profile) the newest by start time wins, so a re-run
replaces its predecessor in the report without anyone deleting runs. Runs of other seeds
(``facebench train <exp> --seed N``) join the newest run's row when every other parameter matches:
the row then reports the mean and the standard deviation over seeds.

Each row also says whether it was trained with the code this report would train with now
(``mark_other_code``): the run's ``facebench.code_hash`` tag against the hash of the sources a
training of its task imports today, so a number from older code is flagged, never passed off as current.
Sweep trials are read whatever Tune's verdict (finished, stopped early by ASHA, failed), each with it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per CED file is noise

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from mlflow.entities import ViewType  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from facebench.metrics import landmarks as lm  # noqa: E402
from facebench.train import identity  # noqa: E402

# Test splits per dataset key, in the order the papers list them; others found in metrics follow.
SPLITS: dict[str, tuple[str, ...]] = {"w300": ("common", "challenging", "full"), "aflw": ("test", "frontal")}
VAL_SPLIT = "val"  # the landmark sets' validation split (held out from train), val.parquet
CED_MAX = 0.10  # CED range, as the training runs log it (papers/wing/task.py)
RUN_COLUMNS = ["experiment", "profile", "run_id", "experiment_id", "run_name", "start_time", "end_time", "paper",
               "task", "dataset", "model", "loss", "pdb", "variant", "label", "code_version", "code_hash", "device", "seeds",
               "seed_run_ids", "seed_code_hashes"]
PAPER_ORDER = {"wing": 0, "awing": 1}  # coordinate regression first, then heatmap regression
TRIAL_COLUMNS = ["sweep", "profile", "parent_run_id", "base_experiment", "chosen_on", "code_version", "run_id",
                 "experiment_id",
                 "metric", "mode", "score", "status", "stopped_early", "epochs", "max_epochs", "stop_reason"]
# Tune's verdict on a trial as the report words it (facebench.trial_status, facebench/train/tune.py).
TRIAL_STATUS = {"finished": "finished", "stopped_early": "stopped early", "failed": "failed"}


def _search(client: MlflowClient, filter_string: str) -> list:
    """All matching runs of every facebench experiment, newest first (paged: a big store has many)."""
    experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, filter_string="name LIKE 'facebench/%'")
    ids = sorted(e.experiment_id for e in experiments)
    if not ids:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs(ids, filter_string=filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=1000, order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs


def _filter(kind: str, profile: str | None) -> str:
    parts = [f"tags.`facebench.kind` = '{kind}'", "attributes.status = 'FINISHED'"]
    if profile:
        parts.append(f"tags.`facebench.profile` = '{profile}'")
    return " and ".join(parts)


def _newest(runs: list, key) -> list:
    """Keep the newest run per key (start time, then run id, so ties resolve the same way every time)."""
    best: dict = {}
    for run in runs:
        k = key(run)
        rank = (run.info.start_time or 0, run.info.run_id)
        if k not in best or rank > best[k][0]:
            best[k] = (rank, run)
    return [run for _, run in best.values()]


def _loss_rank(loss: str) -> tuple[int, str]:
    order = ["l2", "l1", "smooth_l1", "wing", "hm_mse", "hm_l1", "hm_wing", "awing"]
    return (order.index(loss), loss) if loss in order else (len(order), loss)


SEED_PARAM = "train.seed"  # how run_params logs the training seed (facebench/train/experiment.py)


def _experiment_key(run) -> tuple[str, str]:
    return run.data.tags["facebench.experiment"], run.data.tags.get("facebench.profile", "")


def _seed_runs(runs: list) -> list[list]:
    """Per experiment (and profile): its newest run, then the newest run of each other seed whose
    parameters, the seed aside, equal the newest run's (a changed schedule or loss starts afresh)."""
    groups: dict[tuple[str, str], list] = {}
    for run in runs:
        groups.setdefault(_experiment_key(run), []).append(run)
    out = []
    for group in groups.values():
        newest = _newest(group, lambda r: 0)[0]
        same = {k: v for k, v in newest.data.params.items() if k != SEED_PARAM}
        peers = [r for r in group if r is not newest
                 and {k: v for k, v in r.data.params.items() if k != SEED_PARAM} == same
                 and r.data.params.get(SEED_PARAM) != newest.data.params.get(SEED_PARAM)]
        out.append([newest] + sorted(_newest(peers, lambda r: r.data.params.get(SEED_PARAM)),
                                     key=lambda r: str(r.data.params.get(SEED_PARAM))))
    return out


def _seed_metrics(seed_runs: list) -> dict[str, float]:
    """``metrics.<m>``: the mean over the seeds; ``sd.<m>``: the sample standard deviation (several seeds)."""
    names = sorted({k for r in seed_runs for k in r.data.metrics})
    out: dict[str, float] = {}
    for name in names:
        values = np.array([r.data.metrics[name] for r in seed_runs if name in r.data.metrics], dtype=np.float64)
        out[f"metrics.{name}"] = float(values.mean())
        if len(values) > 1:
            out[f"sd.{name}"] = float(values.std(ddof=1))
    return out


def collect_runs(tracking_uri: str, profile: str | None) -> pd.DataFrame:
    """One row per experiment key (per (key, profile) when profile is None): its newest FINISHED run,
    with its metrics averaged over the seeds that ran the same configuration.

    Columns: RUN_COLUMNS (tags without their ``facebench.`` prefix; pdb as bool), ``seeds`` (how many
    runs the metrics average), ``seed_run_ids`` and ``seed_code_hashes`` (each seed run's code hash, in the
    same order; "" where a run has none), then ``params.<name>`` (the newest run's),
    ``metrics.<name>`` (final values; the mean over seeds) and ``sd.<name>`` (their standard deviation,
    where there are several seeds), like ``mlflow.search_runs``.
    """
    client = MlflowClient(tracking_uri)
    runs = [r for r in _search(client, _filter("train", profile)) if r.data.tags.get("facebench.experiment")]
    rows = []
    for seed_runs in _seed_runs(runs):
        run = seed_runs[0]
        tags = run.data.tags
        row = {
            "experiment": tags["facebench.experiment"], "profile": tags.get("facebench.profile", ""),
            "run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "run_name": run.info.run_name or "",
            "start_time": run.info.start_time, "end_time": run.info.end_time,
            "paper": tags.get("facebench.paper", ""), "task": tags.get("facebench.task", ""),
            "dataset": tags.get("facebench.dataset", ""), "model": tags.get("facebench.model", ""),
            "loss": tags.get("facebench.loss", ""), "pdb": tags.get("facebench.pdb", "false").lower() == "true",
            "variant": tags.get("facebench.variant", ""), "label": tags.get("facebench.label", ""),
            "code_version": tags.get("facebench.code_version", ""),
            "code_hash": tags.get("facebench.code_hash", ""),
            "device": tags.get("facebench.device", ""),
        }
        row["seeds"] = len(seed_runs)
        row["seed_run_ids"] = ",".join(r.info.run_id for r in seed_runs)
        # one per seed run, in seed_run_ids' order ("" for a run that predates run identity tags)
        row["seed_code_hashes"] = ",".join(r.data.tags.get("facebench.code_hash", "") for r in seed_runs)
        row.update({f"params.{k}": v for k, v in run.data.params.items()})
        row.update(_seed_metrics(seed_runs))
        rows.append(row)
    rows.sort(key=lambda r: (r["dataset"], PAPER_ORDER.get(r["paper"], len(PAPER_ORDER)), r["paper"], r["model"],
                             r["pdb"], r["variant"], _loss_rank(r["loss"]), r["experiment"], r["profile"]))
    df = pd.DataFrame(rows, columns=None if rows else RUN_COLUMNS)
    extra = sorted(c for c in df.columns if c not in RUN_COLUMNS)
    return df[RUN_COLUMNS + extra]


def current_code_hashes(tasks) -> dict[str, str | None]:
    """The code hash a training of each task would be tagged with if it ran now (train/identity.py):
    the sources it imports, read from the working tree. None for a task this code has no module for."""
    out: dict[str, str | None] = {}
    for task in sorted({t for t in tasks if t}):
        try:
            out[task] = identity.code_hash(identity.training_modules(task))
        except ValueError:  # facebench.train.task.<task> no longer exists
            out[task] = None
    return out


def other_code(task: str, seed_code_hashes: str, current: dict[str, str | None]) -> str:
    """Why a row's numbers come from other code than this report's, or "" when they do not.

    ``seed_code_hashes`` holds one code hash per run the row averages ("" for a run tagged before run
    identities were recorded); every one of them must equal ``current[task]``."""
    hashes = seed_code_hashes.split(",")
    want = current.get(task)
    if want is None:
        return f"no `{task or '?'}` training in this code"
    bad = [h for h in hashes if h != want]
    if not bad:
        return ""
    parts = []
    differing = sorted({h[:8] for h in bad if h})
    if differing:
        parts.append("code hash " + ", ".join(f"`{h}`" for h in differing) + f", this report's `{want[:8]}`")
    if any(not h for h in bad):
        parts.append("no code hash recorded")
    text = "; ".join(parts)
    return f"{len(bad)} of {len(hashes)} seed runs: {text}" if len(hashes) > 1 else text


def mark_other_code(runs: pd.DataFrame, current: dict[str, str | None]) -> pd.DataFrame:
    """``runs`` with an ``other_code`` column: "" where every run of the row carries the code hash this
    report computes for its task now, else the reason (``other_code``)."""
    runs = runs.copy()
    runs["other_code"] = [other_code(str(r.get("task", "") or ""), str(r.get("seed_code_hashes", "") or ""),
                                     current) for _, r in runs.iterrows()] if not runs.empty else []
    return runs


def _trial_status(trial) -> str:
    """Tune's verdict on a trial: the tag tune.py writes, else read off the run's status (KILLED is ASHA's
    stop; a FINISHED run tagged stopped_early comes from sweeps recorded before trials ended KILLED)."""
    tags = trial.data.tags
    tagged = tags.get("facebench.trial_status", "")
    if tagged in TRIAL_STATUS:
        return TRIAL_STATUS[tagged]
    if tags.get("facebench.stopped_early", "false").lower() == "true" or trial.info.status == "KILLED":
        return TRIAL_STATUS["stopped_early"]
    return {"FINISHED": "finished", "FAILED": "failed"}.get(trial.info.status, trial.info.status.lower())


def _epochs(client: MlflowClient, trial, metric: str) -> float:
    """How many epochs the trial reported: the last step of its metric (a step is an epoch)."""
    if metric not in trial.data.metrics:
        return np.nan
    return float(max(m.step for m in client.get_metric_history(trial.info.run_id, metric)))


def collect_sweeps(tracking_uri: str, profile: str | None) -> pd.DataFrame:
    """One row per trial of the newest FINISHED parent of each sweep (per profile), whatever its verdict.

    Hyperparameters are the trial's ``loss.*`` params, as columns ``loss.<name>`` (floats where
    they parse); ``score`` is the trial's final value of the sweep's ``metric`` (``val_nme``, lower is
    better, or ``val_accuracy``, higher: ``mode``), on the split the parent's ``chosen_on`` names;
    ``status`` is Tune's verdict (finished, stopped early, failed; ``stopped_early`` the same as a flag),
    ``epochs`` the epochs it reported out of ``max_epochs``, ``stop_reason`` ASHA's.
    """
    client = MlflowClient(tracking_uri)
    parents = [r for r in _search(client, _filter("sweep", profile)) if r.data.tags.get("facebench.sweep")]
    parents = _newest(parents, lambda r: (r.data.tags["facebench.sweep"], r.data.tags.get("facebench.profile", "")))
    trials_by_parent: dict[str, list] = {}
    for trial in _search(client, "tags.`facebench.kind` = 'trial'"):
        if trial.info.status in ("FINISHED", "KILLED", "FAILED"):  # a trial still RUNNING has no verdict
            trials_by_parent.setdefault(trial.data.tags.get("mlflow.parentRunId", ""), []).append(trial)
    rows = []
    for parent in parents:
        ptags = parent.data.tags
        metric = parent.data.params.get("metric", "val_nme")
        mode = parent.data.params.get("mode", "max" if "accuracy" in metric else "min")
        for trial in trials_by_parent.get(parent.info.run_id, []):
            status = _trial_status(trial)
            max_epochs = trial.data.params.get("train.epochs", "")
            row = {
                "sweep": ptags["facebench.sweep"], "profile": ptags.get("facebench.profile", ""),
                "parent_run_id": parent.info.run_id,
                "base_experiment": parent.data.params.get("base_experiment", ptags.get("facebench.experiment", "")),
                "chosen_on": parent.data.params.get("chosen_on", ""),
                "code_version": ptags.get("facebench.code_version", ""),
                "run_id": trial.info.run_id, "experiment_id": trial.info.experiment_id, "metric": metric, "mode": mode,
                "score": trial.data.metrics.get(metric, np.nan), "status": status,
                "stopped_early": status == TRIAL_STATUS["stopped_early"],
                "epochs": _epochs(client, trial, metric),
                "max_epochs": float(max_epochs) if max_epochs.isdigit() else np.nan,
                "stop_reason": trial.data.tags.get("facebench.stop_reason", ""),
            }
            for k, v in trial.data.params.items():
                if k.startswith("loss."):
                    row[k] = _number(v)
            rows.append(row)
    df = pd.DataFrame(rows, columns=None if rows else TRIAL_COLUMNS)
    if df.empty:
        return df
    hyper = sorted(c for c in df.columns if c.startswith("loss."))
    rest = sorted(c for c in df.columns if c not in TRIAL_COLUMNS and c not in hyper)
    df = df[TRIAL_COLUMNS + hyper + rest]
    return df.sort_values(["sweep", "profile", *hyper, "run_id"], kind="mergesort").reset_index(drop=True)


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def load_curve(tracking_uri: str, run_id: str, artifact: str, x: str, y: str) -> pd.DataFrame:
    """A curve a run logged as a CSV artifact (columns ``x`` and ``y``), sorted by ``x``."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact,
                                                       dst_path=tmp, tracking_uri=tracking_uri)
        except (MlflowException, OSError) as e:
            raise FileNotFoundError(f"run {run_id}: no artifact {artifact} ({e})") from e
        df = pd.read_csv(path)
    missing = {x, y} - set(df.columns)
    if missing:
        raise ValueError(f"run {run_id}: {artifact} lacks columns {sorted(missing)}")
    return df[[x, y]].sort_values(x, kind="mergesort").reset_index(drop=True)


def load_ced(tracking_uri: str, run_id: str, split: str) -> pd.DataFrame:
    """The run's CED curve on one split (artifact ``ced/<split>.csv``: threshold, fraction)."""
    return load_curve(tracking_uri, run_id, f"ced/{split}.csv", "threshold", "fraction")


def _points(column: pd.Series) -> np.ndarray:
    """A list<float> column of interleaved x, y values as (N, L, 2)."""
    return np.stack([np.asarray(v, dtype=np.float64).reshape(-1, 2) for v in column])


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    return pq.read_table(path, columns=columns).to_pandas()


def baseline_errors(prepared_root: Path, datasets: list[str]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Per-sample errors of the mean-shape baseline: dataset -> split -> {"nme", "nme_ip" (68 points)}.

    The mean training shape (``train.parquet``, never the PDB copy) is placed in each box of the test
    splits and of the validation split (``val``, so the baseline stands in the validation column too).
    Datasets or splits without prepared files are left out.
    """
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for dataset in sorted(datasets):
        folder = Path(prepared_root) / dataset
        if not (folder / "train.parquet").exists():
            continue
        train = _read(folder / "train.parquet", ["landmarks", "bbox"])
        train_pts, train_box = _points(train["landmarks"]), np.stack([np.asarray(b, np.float64) for b in train["bbox"]])
        for split in SPLITS.get(dataset, ()) + (VAL_SPLIT,):
            path = folder / f"{split}.parquet"
            if not path.exists():
                continue
            test = _read(path, ["landmarks", "bbox", "norm"])
            gt = _points(test["landmarks"])
            pred = lm.mean_shape_baseline(train_pts, train_box, np.stack([np.asarray(b, np.float64)
                                                                          for b in test["bbox"]]))
            errors = {"nme": lm.nme_per_sample(pred, gt, test["norm"].to_numpy(np.float64))}
            if gt.shape[1] == 68:
                errors["nme_ip"] = lm.nme_per_sample(pred, gt, lm.inter_pupil(gt))
            out.setdefault(dataset, {})[split] = errors
    return out


def baseline_frame(errors: dict[str, dict[str, dict[str, np.ndarray]]]) -> pd.DataFrame:
    """One row per dataset with ``metrics.test_<split>_*`` (and ``metrics.val_nme``, ``val_nme_ip``)
    columns named like a training run's."""
    rows = []
    for dataset, splits in sorted(errors.items()):
        row: dict = {"dataset": dataset, "model": "mean_shape", "loss": "", "pdb": False}
        for split, errs in splits.items():
            if split == VAL_SPLIT:  # a training run logs only the mean NME(s) on validation
                row["metrics.val_nme"] = float(np.mean(errs["nme"]))
                if "nme_ip" in errs:
                    row["metrics.val_nme_ip"] = float(np.mean(errs["nme_ip"]))
                continue
            for name, value in lm.summarise(errs["nme"]).items():
                row[f"metrics.test_{split}_{name}"] = value
            if "nme_ip" in errs:
                row[f"metrics.test_{split}_nme_ip"] = float(np.mean(errs["nme_ip"]))
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["dataset", "model", "loss", "pdb"])


def baseline_rows(prepared_root: Path, datasets: list[str]) -> pd.DataFrame:
    """The mean-shape baseline of each dataset on each of its prepared test splits."""
    return baseline_frame(baseline_errors(prepared_root, datasets))


def baseline_ced(errors: np.ndarray) -> pd.DataFrame:
    """The baseline's CED on the same grid as the training runs' curves."""
    thresholds, fraction = lm.ced_curve(errors, max_threshold=CED_MAX, num=101)
    return pd.DataFrame({"threshold": thresholds, "fraction": fraction})


def splits_of(dataset: str, frames: list[pd.DataFrame]) -> list[str]:
    """The dataset's splits that have results in ``frames``: known ones in paper order, then others by name."""
    found = {c[len("metrics.test_"):-len("_nme")] for f in frames for c in f.columns
             if c.startswith("metrics.test_") and c.endswith("_nme") and f[c].notna().any()}
    known = [s for s in SPLITS.get(dataset, ()) if s in found]
    return known + sorted(found - set(known))
