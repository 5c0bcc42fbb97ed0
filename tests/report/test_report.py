"""The leaderboard against a real MLflow SQLite store: which runs count, what the tables say, and
that regenerating from the same runs gives the same bytes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow.tracking import MlflowClient  # noqa: E402

from facebench import tracking  # noqa: E402
from facebench.metrics import landmarks as lm  # noqa: E402
from facebench.report import build_report  # noqa: E402
from facebench.report.leaderboard import baseline_rows, collect_runs, collect_sweeps, load_ced  # noqa: E402
from facebench.report.paper_numbers import lookup  # noqa: E402
from facebench.train import identity  # noqa: E402

W300_SPLITS = ("common", "challenging", "full")
AFLW_SPLITS = ("test", "frontal")


def current_code(task: str) -> str:
    """The code hash a training of ``task`` carries when it runs from this working tree (what the report
    compares each run's tag with)."""
    return identity.code_hash(identity.training_modules(task))


CURRENT = "current"  # _train_run's default: tag the run with the code hash of today's sources


def _metrics(splits: tuple[str, ...], nme: float, ip: bool) -> dict[str, float]:
    out = {}
    for i, split in enumerate(splits):
        base = nme + 0.01 * i
        out.update({f"test_{split}_nme": base, f"test_{split}_auc08": 0.40 - 0.01 * i,
                    f"test_{split}_fr08": 0.05 + 0.01 * i, f"test_{split}_auc10": 0.50 - 0.01 * i,
                    f"test_{split}_fr10": 0.02 + 0.01 * i})
        if ip:
            out[f"test_{split}_nme_ip"] = base * 0.7
    return out


def _ced(nme: float) -> pd.DataFrame:
    thresholds = np.linspace(0.0, 0.1, 101)
    return pd.DataFrame({"threshold": thresholds, "fraction": np.clip(thresholds / (2 * nme), 0.0, 1.0)})


def _train_run(client: MlflowClient, exp_id: str, key: str, *, start: int, nme: float, status: str = "FINISHED",
               profile: str = "smoke", pdb: bool = False, ced: bool = True, seed: int | None = None,
               lr: float = 0.001, code_hash: str | None = CURRENT,
               code_version: str = "0123456789abcdef0123") -> str:
    """A landmark training run as experiment.py records it: val_nme per epoch (val_nme_ip too on 300-W,
    0.7 times it), ending at nme + 0.005; the test metrics once; ``code_hash`` None: an old run without one."""
    dataset, model, loss = key.split("_", 2)
    loss = loss.removesuffix("_pdb")
    tags = {"facebench.kind": "train", "facebench.experiment": key, "facebench.paper": "wing",
            "facebench.task": "landmarks", "facebench.dataset": dataset, "facebench.model": model,
            "facebench.loss": loss, "facebench.pdb": str(pdb).lower(), "facebench.profile": profile,
            "facebench.code_version": code_version}
    if code_hash is not None:
        tags["facebench.code_hash"] = current_code("landmarks") if code_hash == CURRENT else code_hash
    run_id = client.create_run(exp_id, run_name=key, tags=tags, start_time=start).info.run_id
    params = {"epochs": 2, "lr": lr, "batch_size": 16}
    if seed is not None:
        params["train.seed"] = seed
    if loss == "wing":
        params.update({"loss.w": 10.0, "loss.eps": 2.0})
    tracking.log_params(client, run_id, params)
    for epoch in (1, 2):
        val = {"val_nme": nme + 0.01 / epoch}
        if dataset == "w300":
            val["val_nme_ip"] = 0.7 * val["val_nme"]
        tracking.log_metrics(client, run_id, {"train_loss": 1.0 / epoch, **val}, step=epoch)
    splits = W300_SPLITS if dataset == "w300" else AFLW_SPLITS
    tracking.log_metrics(client, run_id, _metrics(splits, nme, ip=dataset == "w300"), step=2)
    if ced:
        tracking.log_tables(client, run_id, {f"ced/{s}.csv": _ced(nme) for s in splits})
    if status != "RUNNING":
        client.set_terminated(run_id, status=status, end_time=start + 1000)
    return run_id


def _write_split(path: Path, points: np.ndarray, boxes: np.ndarray, norm: np.ndarray, split: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "landmarks": pa.array([p.reshape(-1).tolist() for p in points], type=pa.list_(pa.float32())),
        "bbox": pa.array([b.tolist() for b in boxes], type=pa.list_(pa.float32())),
        "norm": pa.array(norm, type=pa.float32()),
        "split": pa.array([split] * len(points)),
    })
    pq.write_table(table, path)


def _faces(rng: np.random.Generator, n: int, num_points: int) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.column_stack([rng.uniform(10, 20, n), rng.uniform(10, 20, n), np.full(n, 80.0), np.full(n, 80.0)])
    unit = rng.uniform(0.1, 0.9, (num_points, 2))
    points = boxes[:, None, :2] + (unit[None] + rng.normal(0, 0.03, (n, num_points, 2))) * boxes[:, None, 2:]
    return points.astype(np.float32), boxes.astype(np.float32)


@pytest.fixture()
def prepared(tmp_path: Path) -> Path:
    """Tiny prepared splits (train, the test splits, val): 68-point 300-W (norm = outer eye corners) and
    19-point AFLW (norm = box width)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "prepared"
    for dataset, splits, num_points in (("w300", ("train",) + W300_SPLITS + ("val",), 68),
                                        ("aflw", ("train",) + AFLW_SPLITS + ("val",), 19)):
        for split in splits:
            points, boxes = _faces(rng, 12, num_points)
            norm = lm.inter_ocular(points) if num_points == 68 else boxes[:, 2]
            _write_split(root / dataset / f"{split}.parquet", points, boxes, norm.astype(np.float32), split)
    return root


@pytest.fixture()
def store(tmp_path: Path) -> dict:
    """A real SQLite store holding runs that must count, and runs that must not."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = tracking.get_or_create_experiment(client, "wing", tmp_path)
    ids = {
        "w300_l1_old": _train_run(client, exp_id, "w300_cnn6_l1", start=1_000, nme=0.2),
        "w300_l1": _train_run(client, exp_id, "w300_cnn6_l1", start=2_000, nme=0.0512),
        "w300_l1_default": _train_run(client, exp_id, "w300_cnn6_l1", start=3_000, nme=0.3, profile="default"),
        "w300_wing": _train_run(client, exp_id, "w300_cnn6_wing", start=2_000, nme=0.0456),
        "w300_wing_running": _train_run(client, exp_id, "w300_cnn6_wing", start=5_000, nme=0.4, status="RUNNING"),
        "w300_wing_failed": _train_run(client, exp_id, "w300_cnn6_wing", start=6_000, nme=0.5, status="FAILED"),
        "aflw_l1": _train_run(client, exp_id, "aflw_cnn6_l1", start=2_000, nme=0.0234),
        "aflw_l1_pdb": _train_run(client, exp_id, "aflw_cnn6_l1_pdb", start=2_000, nme=0.0221, pdb=True),
        "aflw_wing": _train_run(client, exp_id, "aflw_cnn6_wing", start=2_000, nme=0.0199, ced=False),
    }
    sweep_tags = {"facebench.kind": "sweep", "facebench.sweep": "wing_w_eps", "facebench.profile": "smoke",
                  "facebench.experiment": "aflw_cnn6_wing", "facebench.paper": "wing"}
    parent = client.create_run(exp_id, run_name="sweep:wing_w_eps", tags=sweep_tags, start_time=7_000).info.run_id
    tracking.log_params(client, parent, {"base_experiment": "aflw_cnn6_wing", "metric": "val_nme", "mode": "min",
                                         "chosen_on": "val"})
    trials = {}
    # As tune.py records them: FINISHED (every epoch), KILLED (ASHA stopped it after epoch 1), FAILED (it raised
    # after one epoch: its score, the lowest, is no candidate).
    for w, eps, val, status, verdict in ((5.0, 1.0, 0.034, "FINISHED", "finished"),
                                         (10.0, 2.0, 0.031, "FINISHED", "finished"),
                                         (15.0, 1.0, 0.045, "KILLED", "stopped_early"),
                                         (15.0, 3.0, 0.001, "FAILED", "failed")):
        tags = {"facebench.kind": "trial", "facebench.sweep": "wing_w_eps", "facebench.profile": "smoke",
                "mlflow.parentRunId": parent, "facebench.trial_status": verdict}
        if verdict == "stopped_early":
            tags.update({"facebench.stopped_early": "true",
                         "facebench.stop_reason": "ASHA stopped it after epoch 1 of 2"})
        trial = client.create_run(exp_id, run_name=f"wing_w_eps[eps={eps:g},w={w:g}]", tags=tags,
                                  start_time=7_100).info.run_id
        tracking.log_params(client, trial, {"loss.w": w, "loss.eps": eps, "train.epochs": 2})
        if status == "FINISHED":
            tracking.log_metrics(client, trial, {"val_nme": val + 0.01}, step=1)
            tracking.log_metrics(client, trial, {"val_nme": val}, step=2)
        else:
            tracking.log_metrics(client, trial, {"val_nme": val}, step=1)
        client.set_terminated(trial, status=status)
        trials[(w, eps)] = trial
    running = client.create_run(exp_id, run_name="wing_w_eps[eps=9,w=9]", start_time=7_200, tags={
        "facebench.kind": "trial", "facebench.sweep": "wing_w_eps", "facebench.profile": "smoke",
        "mlflow.parentRunId": parent}).info.run_id  # no verdict: not listed
    tracking.log_params(client, running, {"loss.w": 9.0, "loss.eps": 9.0})
    trials["running"] = running
    client.set_terminated(parent, status="FINISHED")
    ids["sweep_parent"] = parent
    return {"uri": uri, "ids": ids, "trials": trials}


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def test_collect_runs_keeps_the_newest_finished_run_per_experiment(store):
    runs = collect_runs(store["uri"], "smoke")
    ids = store["ids"]
    assert sorted(runs["run_id"]) == sorted([ids["w300_l1"], ids["w300_wing"], ids["aflw_l1"], ids["aflw_l1_pdb"],
                                             ids["aflw_wing"]])
    assert runs.loc[runs["run_id"] == ids["w300_l1"], "metrics.test_common_nme"].item() == pytest.approx(0.0512)
    assert runs.loc[runs["run_id"] == ids["aflw_l1_pdb"], "pdb"].item()
    everything = collect_runs(store["uri"], None)
    assert ids["w300_l1_default"] in set(everything["run_id"])  # one row per (experiment, profile)
    assert ids["w300_l1"] in set(everything["run_id"])


def test_collect_sweeps_and_load_ced(store):
    trials = collect_sweeps(store["uri"], "smoke")
    # Every trial with a verdict, sorted by the hyperparameter names (eps, then w), as the sweep's own summary
    # sorts them: stopped-early (KILLED) and failed ones too, each with its status; the RUNNING one is not.
    assert list(zip(trials["loss.eps"], trials["loss.w"])) == [(1.0, 5.0), (1.0, 15.0), (2.0, 10.0), (3.0, 15.0)]
    assert trials["score"].tolist() == pytest.approx([0.034, 0.045, 0.031, 0.001])
    assert trials["status"].tolist() == ["finished", "stopped early", "finished", "failed"]
    assert trials["stopped_early"].tolist() == [False, True, False, False]
    assert trials["epochs"].tolist() == [2.0, 1.0, 2.0, 1.0] and set(trials["max_epochs"]) == {2.0}
    assert trials["stop_reason"].tolist() == ["", "ASHA stopped it after epoch 1 of 2", "", ""]
    assert set(trials["chosen_on"]) == {"val"} and store["trials"]["running"] not in set(trials["run_id"])
    ced = load_ced(store["uri"], store["ids"]["aflw_l1"], "frontal")
    pd.testing.assert_frame_equal(ced, _ced(0.0234))
    with pytest.raises(FileNotFoundError):
        load_ced(store["uri"], store["ids"]["aflw_wing"], "test")


def test_baseline_rows(prepared):
    rows = baseline_rows(prepared, ["w300", "aflw"])
    assert rows["dataset"].tolist() == ["aflw", "w300"]
    w300 = rows[rows["dataset"] == "w300"].iloc[0]
    assert {f"metrics.test_{s}_nme_ip" for s in W300_SPLITS} <= set(rows.columns)
    assert 0 < w300["metrics.test_common_nme"] < 1
    assert np.isnan(rows[rows["dataset"] == "aflw"].iloc[0]["metrics.test_common_nme"])


def _expected_baseline(prepared: Path, dataset: str, split: str, inter_pupil: bool = False) -> float:
    def read(name):
        t = pq.read_table(prepared / dataset / f"{name}.parquet").to_pandas()
        pts = np.stack([np.asarray(v, np.float64).reshape(-1, 2) for v in t["landmarks"]])
        return pts, np.stack([np.asarray(b, np.float64) for b in t["bbox"]]), t["norm"].to_numpy(np.float64)

    train_pts, train_box, _ = read("train")
    gt, box, norm = read(split)
    pred = lm.mean_shape_baseline(train_pts, train_box, box)
    return float(np.mean(lm.nme_per_sample(pred, gt, lm.inter_pupil(gt) if inter_pupil else norm)))


def test_build_report(store, prepared, tmp_path):
    out = tmp_path / "reports"
    summary = build_report(store["uri"], prepared, out, "smoke", ["w300", "aflw"])
    ids = store["ids"]
    md = (out / "leaderboard.md").read_text()
    page = (out / "leaderboard.html").read_text()

    # 300-W: both normalisers per split, each with a paper column (AWing publishes io, Wing ip); the paper's
    # figures (CNN-6/7, hourglass) are never beside a CNN-6 row.
    # Validation first (val_nme 0.0512 + 0.005, val_nme_ip 0.7 times that), then the test splits.
    assert ("| model | loss | PDB | run | cost | val NME io (outer corners) | val NME ip (eye centres) | common NME io"
            " (outer corners) |") in md
    assert "common NME io (outer corners)" in md and "common NME ip (eye centres)" in md
    assert _row("CNN-6", "L1", "no", f"`{ids['w300_l1'][:8]}`", "—", "5.62", "3.93", "5.12", "—", "3.58", "—", "6.12",
                "—", "4.28", "—", "7.12", "—", "4.98", "—") in md
    assert _row("CNN-6", "Wing", "no", f"`{ids['w300_wing'][:8]}`", "—", "5.06", "3.54", "4.56", "—", "3.19",
                "—") in md  # a row's prefix
    assert "| CNN-6/7 (two-stage) | Wing | common | ip (eye centres) | 3.27 |" in md
    # AFLW: our box-width NME beside the paper's face-size figure; PDB row; unverified figure daggered.
    assert _row("CNN-6", "L1", "no", f"`{ids['aflw_l1'][:8]}`", "—", "2.84", "2.34", "2.00", "3.34", "—") in md
    assert _row("CNN-6", "L1", "yes", f"`{ids['aflw_l1_pdb'][:8]}`", "—", "2.71", "2.21", "1.89", "3.21", "—") in md
    assert _row("CNN-6", "Wing", "no", f"`{ids['aflw_wing'][:8]}`", "—", "2.49", "1.99", "1.88†", "2.99", "—") in md
    assert "† not verified against the paper" in md
    # Robustness table (AUC/FR in %).
    assert _row("challenging", "CNN-6", "L1", "no", f"`{ids['w300_l1'][:8]}`", "39.00", "6.00", "49.00",
                "3.00") in md
    # The baseline, computed from the prepared splits with the shared metric functions.
    # The baseline, computed from the prepared splits with the shared metric functions (validation too).
    def base(dataset, split, ip=False):
        return f"{100 * _expected_baseline(prepared, dataset, split, inter_pupil=ip):.2f}"

    assert _row("mean shape (baseline)", "—", "—", "baseline", "—", base("w300", "val"), base("w300", "val", True),
                base("w300", "common"), "—", base("w300", "common", True), "—") in md
    assert _row("mean shape (baseline)", "—", "—", "baseline", "—", base("aflw", "val"), base("aflw", "test"),
                "—") in md
    assert summary["baselines"] == ["aflw/test", "aflw/frontal", "aflw/val", "w300/common", "w300/challenging",
                                    "w300/full", "w300/val"]
    # Runs that must not count.
    for ignored in ("w300_l1_old", "w300_l1_default", "w300_wing_running", "w300_wing_failed"):
        assert ids[ignored][:8] not in md and ids[ignored][:8] not in page
    # Sweeps: every trial in (w, eps) order with its epochs and verdict; the best among the finished and
    # stopped ones (the failed trial's lower score is no candidate); chosen on validation, said so.
    trials = store["trials"]
    assert "| eps | w | val NME (%) | epochs | run | status | best |" in md
    assert _row("2", "10", "3.10", "2", f"`{trials[(10.0, 2.0)][:8]}`", "finished", "**best**") in md
    assert _row("1", "15", "4.50", "1 of 2", f"`{trials[(15.0, 1.0)][:8]}`", "stopped early", "") in md
    assert _row("3", "15", "0.10", "1 of 2", f"`{trials[(15.0, 3.0)][:8]}`", "failed", "") in md
    assert trials["running"][:8] not in md
    assert "chosen on the validation split (`val_nme`, min)" in md
    assert "hyperparameters are never chosen on test" in md and "no hyperparameter is chosen on test" in md
    # Every row here carries today's code hash: no mark, no note, nothing listed.
    assert "` ‡" not in md and "‡ trained with other code" not in md and summary["other_code"] == []
    # Header and the reading guide; no date.
    assert "Profile: `smoke`" in md and "lower is better" in md and "synthetic" in md
    # Figures: one CED per dataset/split, on disk and embedded; a run without its CED is reported.
    names = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert names == ["ced_aflw_frontal.png", "ced_aflw_test.png", "ced_w300_challenging.png",
                     "ced_w300_common.png", "ced_w300_full.png", "sweep_wing_w_eps_smoke.png"]
    assert all((out / "figures" / n).read_bytes().startswith(b"\x89PNG") for n in names)
    assert "](figures/ced_w300_common.png)" in md
    # The sweep's figure sits under its table (NME against w, a line per eps).
    assert md.index("](figures/sweep_wing_w_eps_smoke.png)") > md.index("| 2 | 10 | 3.10 |")
    assert page.count('src="data:image/png;base64,') == len(names)
    assert summary["missing_curves"] == ["aflw_cnn6_wing:test", "aflw_cnn6_wing:frontal"]
    # Self-contained HTML: nothing fetched from anywhere.
    lowered = page.lower()
    for needle in ("<script", "<link", 'src="http', "src='http", 'href="http', "url(http", "@import"):
        assert needle not in lowered

    # Regenerating from the same runs gives the same bytes, figures included.
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    build_report(store["uri"], prepared, out, "smoke", ["w300", "aflw"])
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert before == after


def test_paper_numbers_match_only_the_same_kind():
    assert lookup("aflw", "test", "cnn6", "l1", True, "face_size").nme_percent == 1.89
    assert lookup("aflw", "test", "cnn6", "wing", False, "face_size").verified is False
    assert lookup("w300", "full", "cnn6", "wing", False, "inter_pupil") is None  # the 4.04 is CNN-6/7
    assert lookup("w300", "full", "cnn6/7", "wing", None, "inter_pupil").nme_percent == 4.04
    assert lookup("w300", "full", "cnn6/7", "wing", None, "inter_ocular") is None
    # the paper does not say whether its two-stage system used PDB: its figure stands beside either row
    assert lookup("aflw", "test", "cnn6/7", "wing", False, "face_size").nme_percent == 1.65
    assert lookup("aflw", "test", "cnn6/7", "wing", True, "face_size").nme_percent == 1.65


def test_build_report_all_profiles_shows_each_profile(store, prepared, tmp_path):
    out = tmp_path / "all"
    summary = build_report(store["uri"], prepared, out, None, ["w300"])
    md = (out / "leaderboard.md").read_text()
    ids = store["ids"]
    assert "| model | loss | PDB | profile | run | cost |" in md
    assert _row("CNN-6", "L1", "no", "`default`", f"`{ids['w300_l1_default'][:8]}`", "—", "30.50", "21.35", "30.00") in md
    assert _row("CNN-6", "L1", "no", "`smoke`", f"`{ids['w300_l1'][:8]}`", "—", "5.62", "3.93", "5.12") in md
    assert "## AFLW-Full" not in md and ids["w300_l1_old"][:8] not in md
    assert summary["runs"] == {"w300_cnn6_l1@default": ids["w300_l1_default"], "w300_cnn6_l1@smoke": ids["w300_l1"],
                               "w300_cnn6_wing@smoke": ids["w300_wing"]}


def test_heatmap_rows_stand_beside_the_regression_rows(prepared, tmp_path):
    """Adaptive Wing runs (task heatmaps) join the 300-W table; the paper's AWing figure stands only beside
    the full model's row, not beside an ablation."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    ids = {}
    for key, variant, nme in (("w300_hg_awing", "", 0.041), ("w300_hg_awing_no_map", "no weight map", 0.047)):
        exp_id = tracking.get_or_create_experiment(client, "awing", tmp_path)
        tags = {"facebench.kind": "train", "facebench.experiment": key, "facebench.paper": "awing",
                "facebench.task": "heatmaps", "facebench.dataset": "w300", "facebench.model": "hourglass",
                "facebench.loss": "awing", "facebench.pdb": "false", "facebench.variant": variant,
                "facebench.label": "Hourglass" + (f", {variant}" if variant else ""),
                "facebench.profile": "smoke", "facebench.code_version": "0123456789abcdef0123",
                "facebench.code_hash": current_code("heatmaps")}
        run_id = client.create_run(exp_id, run_name=key, tags=tags, start_time=1_000).info.run_id
        tracking.log_params(client, run_id, {"heatmap": {"weight_map": not variant, "boundary": True,
                                                         "coordconv": True}})
        tracking.log_metrics(client, run_id, {"val_nme": nme + 0.002, "val_nme_ip": 0.7 * (nme + 0.002)}, step=2)
        tracking.log_metrics(client, run_id, _metrics(W300_SPLITS, nme, ip=True), step=2)
        tracking.log_tables(client, run_id, {f"ced/{s}.csv": _ced(nme) for s in W300_SPLITS})
        client.set_terminated(run_id, status="FINISHED", end_time=3_000)
        ids[key] = run_id
    wing_exp = tracking.get_or_create_experiment(client, "wing", tmp_path)
    ids["cnn6"] = _train_run(client, wing_exp, "w300_cnn6_wing", start=1_000, nme=0.0456)

    out = tmp_path / "reports"
    summary = build_report(uri, prepared, out, "smoke", ["w300"])
    md = (out / "leaderboard.md").read_text()
    assert set(summary["runs"].values()) == set(ids.values())
    # Validation io and ip (0.041 + 0.002 and 0.7 times that), then per split: io, paper io (AWing publishes
    # io on 300-W), ip, paper ip.
    assert _row("Hourglass", "AWing", "no", f"`{ids['w300_hg_awing'][:8]}`", "—", "4.30", "3.01", "4.10", "2.72†",
                "2.87", "—", "5.10", "4.52†", "3.57", "—", "6.10", "3.07†", "4.27", "—") in md
    assert _row("Hourglass, no weight map", "AWing", "no", f"`{ids['w300_hg_awing_no_map'][:8]}`", "—", "4.90", "3.43",
                "4.70", "—", "3.29", "—", "5.70", "—", "3.99", "—", "6.70", "—", "4.69", "—") in md
    # The coordinate-regression row comes first, then the heatmap rows.
    assert md.index("| CNN-6 | Wing |") < md.index("| Hourglass | AWing |") < md.index("| Hourglass, no weight map |")
    assert "Adaptive Wing loss" in md
    # The ablation table: which parts each AWing row had, validation NME, then NME per test split.
    assert _row("yes", "yes", "yes", f"`{ids['w300_hg_awing'][:8]}`", "4.30", "4.10", "5.10", "6.10") in md
    assert _row("no", "yes", "yes", f"`{ids['w300_hg_awing_no_map'][:8]}`", "4.90", "4.70", "5.70", "6.70") in md


def _recognition_run(client: MlflowClient, exp_id: str, head: str, *, accuracy: float, roc: bool = True) -> str:
    tags = {"facebench.kind": "train", "facebench.experiment": f"casia_{head}", "facebench.paper": "cosface",
            "facebench.task": "recognition", "facebench.dataset": "casia", "facebench.model": "sphereface",
            "facebench.loss": head, "facebench.pdb": "false", "facebench.profile": "smoke",
            "facebench.code_version": "89abcdef0123456789ab", "facebench.code_hash": current_code("recognition")}
    run_id = client.create_run(exp_id, run_name=f"casia_{head}", tags=tags, start_time=2_000).info.run_id
    tracking.log_params(client, run_id, {"backbone_depth": 4, "eval_dataset": "lfw"})
    tracking.log_metrics(client, run_id, {"val_accuracy": accuracy - 0.05}, step=1)
    tracking.log_metrics(client, run_id, {"val_accuracy": accuracy - 0.02}, step=2)  # the last epoch's counts
    tracking.log_metrics(client, run_id, {"lfw_accuracy": accuracy, "lfw_accuracy_std": 0.0123,
                                          "lfw_tar_at_far_0.001": accuracy - 0.3, "lfw_tar_at_far_0.0001": 0.0}, step=2)
    if roc:
        fpr = np.linspace(0.0, 1.0, 11)
        tracking.log_tables(client, run_id, {"roc/lfw.csv": pd.DataFrame({"fpr": fpr, "tpr": np.sqrt(fpr)})})
    client.set_terminated(run_id, status="FINISHED", end_time=3_000)
    return run_id


def test_recognition_section_table_roc_and_margin_sweep(store, prepared, tmp_path):
    client = MlflowClient(store["uri"])
    exp_id = tracking.get_or_create_experiment(client, "cosface", tmp_path)
    ids = {"cosface": _recognition_run(client, exp_id, "cosface", accuracy=0.9125),
           "softmax": _recognition_run(client, exp_id, "softmax", accuracy=0.805),
           "nsl": _recognition_run(client, exp_id, "nsl", accuracy=0.85, roc=False)}
    tags = {"facebench.kind": "sweep", "facebench.sweep": "cosface_margin", "facebench.profile": "smoke",
            "facebench.experiment": "casia_cosface", "facebench.paper": "cosface"}
    parent = client.create_run(exp_id, run_name="sweep:cosface_margin", tags=tags, start_time=8_000).info.run_id
    tracking.log_params(client, parent, {"base_experiment": "casia_cosface", "metric": "val_accuracy", "mode": "max",
                                         "chosen_on": "val"})
    trials = {}
    for m, acc in ((0.0, 0.80), (0.2, 0.90), (0.4, 0.85)):
        trial = client.create_run(exp_id, run_name=f"cosface_margin[m={m:g}]", start_time=8_100, tags={
            "facebench.kind": "trial", "facebench.sweep": "cosface_margin", "facebench.profile": "smoke",
            "mlflow.parentRunId": parent, "facebench.trial_status": "finished"}).info.run_id
        tracking.log_params(client, trial, {"loss.m": m, "loss.s": 64.0})
        tracking.log_metrics(client, trial, {"val_accuracy": acc}, step=2)
        client.set_terminated(trial, status="FINISHED")
        trials[m] = trial
    client.set_terminated(parent, status="FINISHED")

    out = tmp_path / "reports"
    summary = build_report(store["uri"], prepared, out, "smoke", ["w300", "aflw"])
    md = (out / "leaderboard.md").read_text()
    # Heads in the papers' order, whatever order the runs came in; the paper figure beside its head only.
    section = md[md.index("## Face recognition"):md.index("## Loss-parameter sweeps")]
    assert section.index("| Softmax |") < section.index("| NSL") < section.index("| LMCL (CosFace) |")
    # Validation accuracy (the last epoch's: LFW accuracy - 0.02) before the LFW test figures.
    assert "| run | cost | val accuracy (%) | LFW accuracy (%) |" in section
    assert _row("LMCL (CosFace)", "SphereFace-4", "`casia`", "`lfw`", f"`{ids['cosface'][:8]}`", "—", "89.25", "91.25",
                "1.23", "61.25", "0.00", "99.33†") in md
    assert _row("NSL (normalised softmax)", "SphereFace-4", "`casia`", "`lfw`", f"`{ids['nsl'][:8]}`", "—", "83.00",
                "85.00", "1.23", "55.00", "0.00", "—") in md
    # The margin sweep: higher accuracy is best here, chosen on validation.
    assert _row("0.2", "64", "90.00", "2", f"`{trials[0.2][:8]}`", "finished", "**best**") in md
    assert "| m | s | val accuracy (%) |" in md
    assert "chosen on the validation split (`val_accuracy`, max)" in md
    # Figures: the ROC of the runs that logged one, the margin curve; a missing ROC is reported.
    names = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "roc_lfw.png" in names and "sweep_cosface_margin_smoke.png" in names
    assert "](figures/roc_lfw.png)" in md
    assert summary["missing_curves"][-1] == "casia_nsl:roc"
    assert ids["cosface"] in summary["runs"].values()
    # The run list names the recognition runs too.
    assert md[md.index("## Runs"):].count("`casia_") == 3


def test_seeds_of_one_configuration_average_and_others_stay_out(tmp_path):
    """Runs of other seeds join the newest run's row only with the same parameters, one run per seed."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = tracking.get_or_create_experiment(client, "wing", tmp_path)
    ids = {
        "seed1_stale": _train_run(client, exp_id, "aflw_cnn6_l1", start=500, nme=0.9, seed=1),
        "seed0": _train_run(client, exp_id, "aflw_cnn6_l1", start=1_000, nme=0.02, seed=0),
        "seed2_other_lr": _train_run(client, exp_id, "aflw_cnn6_l1", start=1_500, nme=0.5, seed=2, lr=0.01),
        "seed1": _train_run(client, exp_id, "aflw_cnn6_l1", start=2_000, nme=0.03, seed=1),
        "wing": _train_run(client, exp_id, "aflw_cnn6_wing", start=2_000, nme=0.04, seed=0),
    }
    runs = collect_runs(uri, "smoke").set_index("experiment")
    l1 = runs.loc["aflw_cnn6_l1"]
    assert l1["run_id"] == ids["seed1"] and l1["seeds"] == 2
    assert set(l1["seed_run_ids"].split(",")) == {ids["seed0"], ids["seed1"]}
    # hand-computed: mean(0.02, 0.03) = 0.025; sample sd = |0.03 - 0.02| / sqrt(2)
    assert l1["metrics.test_test_nme"] == pytest.approx(0.025)
    assert l1["sd.test_test_nme"] == pytest.approx(0.01 / np.sqrt(2))
    assert runs.loc["aflw_cnn6_wing", "seeds"] == 1 and pd.isna(runs.loc["aflw_cnn6_wing", "sd.test_test_nme"])
    build_report(uri, tmp_path / "none", tmp_path / "out", "smoke", ["aflw"])
    board = (tmp_path / "out" / "leaderboard.md").read_text()
    assert f"`{ids['seed1'][:8]}` (2 seeds)" in board
    assert "| 2.50 ± 0.71 |" in board          # the AFLW test NME cell
    assert "| 4.00 |" in board                  # one seed: no spread


def test_mtcnn_section_shows_each_stage_and_the_cascade_ap(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = tracking.get_or_create_experiment(client, "mtcnn", tmp_path)
    ids = {}
    for i, (key, model) in enumerate((("wider_onet", "onet"), ("wider_pnet", "pnet"), ("wider_rnet", "rnet"))):
        tags = {"facebench.kind": "train", "facebench.experiment": key, "facebench.paper": "mtcnn",
                "facebench.task": "detection", "facebench.dataset": "wider", "facebench.model": model,
                "facebench.loss": "mtcnn", "facebench.pdb": "false", "facebench.profile": "smoke",
                "facebench.code_hash": current_code("detection")}
        run = client.create_run(exp_id, run_name=key, tags=tags, start_time=1_000 + i).info.run_id
        metrics = {"val_crop_accuracy": 0.9 + 0.01 * i, "val_crop_recall": 0.8, "val_crop_box_rmse": 0.07}
        if model == "onet":
            metrics.update({"val_crop_landmark_nme": 0.05, "test_trained_ap_easy": 0.61, "test_trained_ap_medium": 0.52,
                            "test_trained_ap_hard": 0.4321, "test_trained_faces_hard": 250.0,
                            "test_trained_landmark_nme": 0.081, "test_published_ap_hard": 0.7})
        tracking.log_metrics(client, run, metrics)
        client.set_terminated(run, status="FINISHED")
        ids[model] = run
    build_report(uri, tmp_path / "none", tmp_path / "out", "smoke", ["aflw"])
    board = (tmp_path / "out" / "leaderboard.md").read_text()
    section = board.split("## MTCNN (WIDER-format scenes)")[1]
    stages = [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| P-Net") or
              line.startswith("| R-Net") or line.startswith("| O-Net")]
    assert stages == ["| P-Net (12 px)", "| R-Net (24 px)", "| O-Net (48 px)"]  # cascade order, not run order
    assert f"| trained here (P-Net, R-Net, O-Net above) | `{ids['onet'][:8]}` | 61.00 | 52.00 | 43.21 | 8.10 | 250 |" \
        in section
    assert "| published (the authors' Caffe model" in section and "approximation by face height" in section
    # The stage table is on the validation crops, the cascade's AP on the test scenes (WIDER_val).
    assert "### Each stage on its validation crops" in section and "| val accuracy (%) | val recall (%) |" in section
    assert f"| O-Net (48 px) | `wider_onet` | `{ids['onet'][:8]}` | — | 90.00 | 80.00 | 7.00 | 5.00 |" in section
    assert "### The cascade on the test scenes (WIDER_val): average precision" in section
    assert "validation scenes" not in section


def test_rows_trained_with_other_code_are_marked_noted_and_listed(tmp_path):
    """A row whose run's code hash is not the hash of today's training sources (or that has none: a run from
    before run identities) is marked in every table, named with the reason under the table and returned."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = tracking.get_or_create_experiment(client, "wing", tmp_path)
    ours = current_code("landmarks")
    ids = {
        "l1": _train_run(client, exp_id, "aflw_cnn6_l1", start=1_000, nme=0.03),
        "l2": _train_run(client, exp_id, "aflw_cnn6_l2", start=1_000, nme=0.04, code_hash=None),
        "smooth0": _train_run(client, exp_id, "aflw_cnn6_smooth_l1", start=1_000, nme=0.02, seed=0),
        "smooth1": _train_run(client, exp_id, "aflw_cnn6_smooth_l1", start=2_000, nme=0.03, seed=1,
                              code_hash="0" * 64),
        "wing": _train_run(client, exp_id, "aflw_cnn6_wing", start=1_000, nme=0.05, code_hash="deadbeef" * 8,
                           code_version="fedcba9876543210fedc-dirty"),
    }
    out = tmp_path / "out"
    summary = build_report(uri, tmp_path / "none", out, "smoke", ["aflw"])
    md = (out / "leaderboard.md").read_text()

    assert summary["other_code"] == ["aflw_cnn6_l2", "aflw_cnn6_smooth_l1", "aflw_cnn6_wing"]  # table order
    section = md[md.index("## AFLW-Full (`aflw`)"):]
    # The mark sits in the run cell; the current row has none. (val: nme + 0.005; test: nme)
    assert _row("CNN-6", "L1", "no", f"`{ids['l1'][:8]}`", "—", "3.50", "3.00") in section
    assert _row("CNN-6", "L2", "no", f"`{ids['l2'][:8]}` ‡", "—", "4.50", "4.00") in section
    assert _row("CNN-6", "smooth L1", "no", f"`{ids['smooth1'][:8]}` (2 seeds) ‡", "—", "3.00 ± 0.71", "2.50 ± 0.71") \
        in section
    assert _row("CNN-6", "Wing", "no", f"`{ids['wing'][:8]}` ‡", "—", "5.50", "5.00") in section
    note = ("‡ trained with other code than this report's: `aflw_cnn6_l2` (no code hash recorded);"
            " `aflw_cnn6_smooth_l1` (1 of 2 seed runs: code hash `00000000`, this report's"
            f" `{ours[:8]}`); `aflw_cnn6_wing` (code hash `deadbeef`, this report's `{ours[:8]}`).")
    assert note in section
    # Under the Wing paper's AFLW table, under the dataset table and under the run list.
    assert md.count(note) == 3
    # The run list: each row's commit, short, -dirty kept, marked where the code is not this report's.
    runs = md[md.index("## Runs"):]
    assert _row("`aflw_cnn6_wing`", "`smoke`", f"`{ids['wing'][:8]}`", "`fedcba98-dirty` ‡", "2",
                "eps=2.0, w=10.0", "—", "—", "—", "—") in runs
    assert _row("`aflw_cnn6_l1`", "`smoke`", f"`{ids['l1'][:8]}`", "`01234567`", "2", "—", "—", "—", "—",
                "—") in runs

    # Once every run carries today's hash, nothing is marked.
    for key in ("l2", "smooth1", "wing"):
        client.set_tag(ids[key], "facebench.code_hash", ours)
    again = build_report(uri, tmp_path / "none", out, "smoke", ["aflw"])
    board = (out / "leaderboard.md").read_text()
    assert again["other_code"] == [] and "` ‡" not in board and "trained with other code than this report's:" \
        not in board


def test_other_code_reasons():
    from facebench.report.leaderboard import current_code_hashes, other_code

    a, b = "a" * 64, "b" * 64
    current = {"landmarks": a, "gone": None}
    assert other_code("landmarks", a, current) == ""
    assert other_code("landmarks", f"{a},{a}", current) == ""
    assert other_code("landmarks", b, current) == "code hash `bbbbbbbb`, this report's `aaaaaaaa`"
    assert other_code("landmarks", "", current) == "no code hash recorded"
    assert other_code("landmarks", f"{a},", current) == "1 of 2 seed runs: no code hash recorded"
    assert other_code("landmarks", f"{b},,{a}", current) == \
        "2 of 3 seed runs: code hash `bbbbbbbb`, this report's `aaaaaaaa`; no code hash recorded"
    assert other_code("gone", a, current) == "no `gone` training in this code"
    assert current_code_hashes(["landmarks", "recognition", "landmarks", "no_such_task", ""]) == {
        "landmarks": current_code("landmarks"), "recognition": current_code("recognition"), "no_such_task": None}
    assert current_code("landmarks") != current_code("recognition")  # each task hashes its own sources


def test_sweep_figure_joins_only_finished_trials():
    """Lines join the trials that ran every epoch; a stopped trial is a point of its own; failed ones are out."""
    from facebench.report.sweeps import sweep_figure, sweep_points

    group = pd.DataFrame({
        "loss.w": [5.0, 10.0, 15.0, 20.0, 5.0, 10.0, 15.0, 20.0],
        "loss.eps": [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0],
        "score": [0.05, 0.04, 0.06, 0.01, 0.03, 0.02, 0.07, 0.08],
        "status": ["finished", "stopped early", "finished", "failed",
                   "stopped early", "finished", "finished", "finished"],
        "metric": "val_nme",
    }).sample(frac=1.0, random_state=3)  # the order trials arrive in does not matter
    x, series, parts = sweep_points(group)
    assert (x, series) == ("loss.w", "loss.eps")
    assert [name for name, _, _ in parts] == ["eps=1", "eps=2"]
    (_, line1, cross1), (_, line2, cross2) = parts
    assert line1["x"].tolist() == [5.0, 15.0] and line1["score"].tolist() == pytest.approx([5.0, 6.0])
    assert cross1["x"].tolist() == [10.0] and cross1["score"].tolist() == pytest.approx([4.0])
    assert line2["x"].tolist() == [10.0, 15.0, 20.0] and cross2["x"].tolist() == [5.0]
    png = sweep_figure("wing_w_eps", group)
    assert png.startswith(b"\x89PNG") and png == sweep_figure("wing_w_eps", group)
    assert sweep_figure("flat", group.assign(**{"loss.w": 1.0, "loss.eps": 1.0})) is None  # nothing varies
