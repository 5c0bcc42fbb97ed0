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

W300_SPLITS = ("common", "challenging", "full")
AFLW_SPLITS = ("test", "frontal")


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
               lr: float = 0.001) -> str:
    dataset, model, loss = key.split("_", 2)
    loss = loss.removesuffix("_pdb")
    tags = {"facebench.kind": "train", "facebench.experiment": key, "facebench.paper": "wing",
            "facebench.task": "landmarks", "facebench.dataset": dataset, "facebench.model": model,
            "facebench.loss": loss, "facebench.pdb": str(pdb).lower(), "facebench.profile": profile,
            "facebench.code_version": "0123456789abcdef0123"}
    run_id = client.create_run(exp_id, run_name=key, tags=tags, start_time=start).info.run_id
    params = {"epochs": 2, "lr": lr, "batch_size": 16}
    if seed is not None:
        params["train.seed"] = seed
    if loss == "wing":
        params.update({"loss.w": 10.0, "loss.eps": 2.0})
    tracking.log_params(client, run_id, params)
    for epoch in (1, 2):
        tracking.log_metrics(client, run_id, {"train_loss": 1.0 / epoch, "val_nme": nme + 0.01 / epoch}, step=epoch)
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
    """Tiny prepared splits: 68-point 300-W (norm = outer eye corners) and 19-point AFLW (norm = box width)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "prepared"
    for dataset, splits, num_points in (("w300", ("train",) + W300_SPLITS, 68), ("aflw", ("train",) + AFLW_SPLITS, 19)):
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
    tracking.log_params(client, parent, {"base_experiment": "aflw_cnn6_wing", "metric": "val_nme"})
    trials = {}
    for w, eps, val, status, stopped in ((5.0, 1.0, 0.034, "FINISHED", False), (10.0, 2.0, 0.031, "FINISHED", False),
                                         (15.0, 1.0, 0.045, "FINISHED", True), (15.0, 3.0, 0.001, "FAILED", False)):
        tags = {"facebench.kind": "trial", "facebench.sweep": "wing_w_eps", "facebench.profile": "smoke",
                "mlflow.parentRunId": parent}
        if stopped:
            tags["facebench.stopped_early"] = "true"
        trial = client.create_run(exp_id, run_name=f"wing_w_eps[eps={eps:g},w={w:g}]", tags=tags,
                                  start_time=7_100).info.run_id
        tracking.log_params(client, trial, {"loss.w": w, "loss.eps": eps})
        tracking.log_metrics(client, trial, {"val_nme": val + 0.01}, step=1)
        tracking.log_metrics(client, trial, {"val_nme": val}, step=2)
        client.set_terminated(trial, status=status)
        trials[(w, eps)] = trial
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
    # Sorted by the hyperparameter names (eps, then w), as the sweep's own summary sorts them; FAILED out.
    assert list(zip(trials["loss.eps"], trials["loss.w"])) == [(1.0, 5.0), (1.0, 15.0), (2.0, 10.0)]
    assert trials["score"].tolist() == pytest.approx([0.034, 0.045, 0.031])
    assert trials["stopped_early"].tolist() == [False, True, False]
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
    assert "common NME io (outer corners)" in md and "common NME ip (eye centres)" in md
    assert _row("CNN-6", "L1", "no", f"`{ids['w300_l1'][:8]}`", "5.12", "—", "3.58", "—", "6.12", "—", "4.28", "—",
                "7.12", "—", "4.98", "—") in md
    assert _row("CNN-6", "Wing", "no", f"`{ids['w300_wing'][:8]}`", "4.56", "—", "3.19", "—") in md  # a row's prefix
    assert "| CNN-6/7 (two-stage) | Wing | common | ip (eye centres) | 3.27 |" in md
    # AFLW: our box-width NME beside the paper's face-size figure; PDB row; unverified figure daggered.
    assert _row("CNN-6", "L1", "no", f"`{ids['aflw_l1'][:8]}`", "2.34", "2.00", "3.34", "—") in md
    assert _row("CNN-6", "L1", "yes", f"`{ids['aflw_l1_pdb'][:8]}`", "2.21", "1.89", "3.21", "—") in md
    assert _row("CNN-6", "Wing", "no", f"`{ids['aflw_wing'][:8]}`", "1.99", "1.88†", "2.99", "—") in md
    assert "† not verified against the paper" in md
    # Robustness table (AUC/FR in %).
    assert _row("challenging", "CNN-6", "L1", "no", f"`{ids['w300_l1'][:8]}`", "39.00", "6.00", "49.00",
                "3.00") in md
    # The baseline, computed from the prepared splits with the shared metric functions.
    w300_io = f"{100 * _expected_baseline(prepared, 'w300', 'common'):.2f}"
    w300_ip = f"{100 * _expected_baseline(prepared, 'w300', 'common', inter_pupil=True):.2f}"
    assert _row("mean shape (baseline)", "—", "—", "baseline", w300_io, "—", w300_ip, "—") in md
    aflw_test = f"{100 * _expected_baseline(prepared, 'aflw', 'test'):.2f}"
    assert _row("mean shape (baseline)", "—", "—", "baseline", aflw_test, "—") in md
    # Runs that must not count.
    for ignored in ("w300_l1_old", "w300_l1_default", "w300_wing_running", "w300_wing_failed"):
        assert ids[ignored][:8] not in md and ids[ignored][:8] not in page
    # Sweeps: trials in (w, eps) order, best marked, FAILED trial left out.
    trials = store["trials"]
    assert _row("2", "10", "3.10", f"`{trials[(10.0, 2.0)][:8]}`", "—", "**best**") in md
    assert _row("1", "15", "4.50", f"`{trials[(15.0, 1.0)][:8]}`", "stopped early", "") in md
    assert trials[(15.0, 3.0)][:8] not in md
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
    assert "| model | loss | PDB | profile | run |" in md
    assert _row("CNN-6", "L1", "no", "`default`", f"`{ids['w300_l1_default'][:8]}`", "30.00") in md
    assert _row("CNN-6", "L1", "no", "`smoke`", f"`{ids['w300_l1'][:8]}`", "5.12") in md
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
                "facebench.profile": "smoke", "facebench.code_version": "0123456789abcdef0123"}
        run_id = client.create_run(exp_id, run_name=key, tags=tags, start_time=1_000).info.run_id
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
    # Columns per split: io, paper io (AWing publishes io on 300-W), ip, paper ip.
    assert _row("Hourglass", "AWing", "no", f"`{ids['w300_hg_awing'][:8]}`", "4.10", "2.72†", "2.87", "—",
                "5.10", "4.52†", "3.57", "—", "6.10", "3.07†", "4.27", "—") in md
    assert _row("Hourglass, no weight map", "AWing", "no", f"`{ids['w300_hg_awing_no_map'][:8]}`", "4.70", "—",
                "3.29", "—", "5.70", "—", "3.99", "—", "6.70", "—", "4.69", "—") in md
    # The coordinate-regression row comes first, then the heatmap rows.
    assert md.index("| CNN-6 | Wing |") < md.index("| Hourglass | AWing |") < md.index("| Hourglass, no weight map |")
    assert "Adaptive Wing loss" in md
    # The ablation table: which parts each AWing row had, NME per split.
    assert _row("yes", "yes", "yes", f"`{ids['w300_hg_awing'][:8]}`", "4.10", "5.10", "6.10") in md
    assert _row("no", "yes", "yes", f"`{ids['w300_hg_awing_no_map'][:8]}`", "4.70", "5.70", "6.70") in md


def _recognition_run(client: MlflowClient, exp_id: str, head: str, *, accuracy: float, roc: bool = True) -> str:
    tags = {"facebench.kind": "train", "facebench.experiment": f"casia_{head}", "facebench.paper": "cosface",
            "facebench.task": "recognition", "facebench.dataset": "casia", "facebench.model": "sphereface",
            "facebench.loss": head, "facebench.pdb": "false", "facebench.profile": "smoke"}
    run_id = client.create_run(exp_id, run_name=f"casia_{head}", tags=tags, start_time=2_000).info.run_id
    tracking.log_params(client, run_id, {"backbone_depth": 4, "eval_dataset": "lfw"})
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
    tracking.log_params(client, parent, {"base_experiment": "casia_cosface", "metric": "val_accuracy", "mode": "max"})
    trials = {}
    for m, acc in ((0.0, 0.80), (0.2, 0.90), (0.4, 0.85)):
        trial = client.create_run(exp_id, run_name=f"cosface_margin[m={m:g}]", start_time=8_100, tags={
            "facebench.kind": "trial", "facebench.sweep": "cosface_margin", "facebench.profile": "smoke",
            "mlflow.parentRunId": parent}).info.run_id
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
    assert _row("LMCL (CosFace)", "SphereFace-4", "`casia`", "`lfw`", f"`{ids['cosface'][:8]}`", "91.25", "1.23",
                "61.25", "0.00", "99.33†") in md
    assert _row("NSL (normalised softmax)", "SphereFace-4", "`casia`", "`lfw`", f"`{ids['nsl'][:8]}`", "85.00",
                "1.23", "55.00", "0.00", "—") in md
    # The margin sweep: higher accuracy is best here.
    assert _row("0.2", "64", "90.00", f"`{trials[0.2][:8]}`", "—", "**best**") in md
    assert "val LFW accuracy (%)" in md
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
                "facebench.loss": "mtcnn", "facebench.pdb": "false", "facebench.profile": "smoke"}
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
