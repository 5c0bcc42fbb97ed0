"""The smoke profile through a real `dvc repro` in a temporary git repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from facebench.papers.mtcnn import default_weights_dir

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    """Run ``cmd`` in its own session so that, if it hangs, it and the Ray it started die with it."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} ran past {timeout:.0f} s:\n{out[-6000:]}")
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-6000:]}"
    return out


def _stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _metrics(project: Path) -> dict[str, dict]:
    """Every metrics file of a pipeline run (stage metrics and sweeps), without the MLflow run ids, which name
    runs rather than results."""
    out = {}
    for path in sorted((project / "metrics").rglob("*.json")):
        data = json.loads(path.read_text())
        data.pop("mlflow_run_id", None)
        data.pop("mlflow_parent_run_id", None)
        for trial in data.get("trials", []):
            trial.pop("mlflow_run_id", None)
        out[str(path.relative_to(project))] = data
    return out


def _new_project(root: Path, params: dict, env: dict[str, str]) -> Path:
    root.mkdir()
    for name in ("dvc.yaml", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "facebench", root / "facebench", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], root, env)
    _run(["dvc", "init", "-q"], root, env)
    return root


@pytest.mark.timeout(1800)  # four papers' smoke stages, four times over
def test_smoke_dvc_repro_is_incremental_and_repeatable(tmp_path):
    """The smoke pipeline through `dvc repro`: every stage of the four papers runs, a second repro does nothing,
    a Wing parameter re-runs only what reads it, and the same pipeline from scratch in a second repository
    gives identical metrics files (same code, data, params and seeds: same numbers)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "smoke"
    # Two experiments (one per dataset) and two trials keep the test short and still show what
    # re-runs after a Wing parameter changes: the Wing stage and the report, not the L2 stage nor the
    # two-stage row built on it (the two-stage row is L2 so that this third repro stays two stages long).
    # w300_cnn6_wing_pdb: a row of `full` only, whose stage writes placeholder outputs under smoke.
    params["experiments"] = {k: v for k, v in params["experiments"].items()
                             if k in {"w300_cnn6_wing", "aflw_cnn6_l2", "w300_cnn6_wing_pdb"}}
    params["experiments"]["aflw_cnn6_l2"]["seeds"] = [0, 1]  # a row's seeds: two runs, one row in the report
    params["profiles"]["smoke"]["seeds"] = None  # every seed a row lists (smoke's own caps them at one)
    params["heatmap_experiments"] = {k: v for k, v in params["heatmap_experiments"].items() if k == "w300_hg_awing"}
    params["sweeps"]["wing_w_eps"]["grid"] = {"w": [5.0, 10.0], "eps": [2.0]}
    params["sweeps"]["wing_w_eps"]["experiment"] = "w300_cnn6_wing"  # the Wing row kept above
    params["heatmap_sweeps"] = {}  # the sweep code is shared with wing_w_eps (and tests/integration/test_tune.py)
    params["recognition_experiments"] = {k: v for k, v in params["recognition_experiments"].items()
                                         if k == "casia_cosface"}
    params["recognition_sweeps"] = {}
    params["two_stage_experiments"] = {k: v for k, v in params["two_stage_experiments"].items()
                                       if k == "aflw_cnn67_l2"}  # stage 1: aflw_cnn6_l2, kept above
    params["two_stage_experiments"]["aflw_cnn67_l2"].pop("profiles")  # trained under smoke here
    # the claims study's own sets (its pipeline, study/dvc.yaml, has its own test: tests/integration/test_study.py)
    params.pop("study")
    params["datasets"] = {k: v for k, v in params["datasets"].items() if not v.get("synth")}

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "RAY_ADDRESS"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "true"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["FACEBENCH_MTCNN_WEIGHTS"] = str(default_weights_dir())  # the copied package looks beside itself
    project = _new_project(tmp_path / "project", params, env)

    first = _run(["dvc", "repro"], project, env, timeout=1200)  # every stage of the smoke profile, four papers
    ran = _stages_run(first)
    assert "report" in ran and "tune@wing_w_eps" in ran
    assert {s for s in ran if s.startswith("train@")} == {f"train@{k}" for k in params["experiments"]}
    assert "train_heatmaps@w300_hg_awing" in ran
    assert {"synth@casia", "synth@lfw", "prepare@casia", "prepare@lfw", "train_recognition@casia_cosface"} <= ran
    assert "train_two_stage@aflw_cnn67_l2" in ran  # re-crop and CNN-7 training, one stage
    skipped = json.loads((project / "metrics" / "w300_cnn6_wing_pdb.json").read_text())
    assert skipped["not_trained"].startswith("w300_cnn6_wing_pdb is not trained under profile 'smoke'")
    mtcnn = {"synth@wider", "prepare@wider", "mtcnn_data_pnet", "train_mtcnn_pnet", "mtcnn_data_rnet",
             "train_mtcnn_rnet", "mtcnn_data_onet", "train_mtcnn_onet"}
    assert mtcnn <= ran
    onet_data = json.loads((project / "data" / "mtcnn" / "wider_onet" / "manifest.json").read_text())
    assert onet_data["splits"]["train"]["proposals"] > 0 and onet_data["splits"]["train"]["kept"]["landmark"] > 0
    onet = json.loads((project / "metrics" / "wider_onet.json").read_text())
    assert 0.0 <= onet["test_trained_ap_hard"] <= 1.0 and onet["test_published_ap_hard"] > 0.0
    _run(["facebench", "mtcnn-export"], project, env)  # the trained cascade in the published layout ...
    astronaut = Path(default_weights_dir()).parents[1] / "images" / "astronaut.png"
    out = _run(["facebench", "detect", str(astronaut), "--weights", "models/mtcnn_cascade"], project, env)
    found = json.loads(out[out.index("["):])
    assert found[0]["image"] == str(astronaut)  # ... loads in `facebench detect`
    manifest = json.loads((project / "data" / "stage2" / "aflw_cnn67_l2" / "manifest.json").read_text())
    assert manifest["stage1"] == "aflw_cnn6_l2" and manifest["splits"]["test"]["rows"] > 0
    assert "train_pdb" not in manifest["splits"]  # a row without PDB never reads the pose-balanced copy
    board = (project / "reports" / "leaderboard.md").read_text()
    assert "| Hourglass | AWing |" in board
    assert "| LMCL (CosFace) | SphereFace-4 | `casia` | `lfw` |" in board
    assert "| CNN-6/7 (two-stage) | L2 |" in board
    assert "## Wing loss paper: the paper's tables" in board
    assert "## MTCNN (WIDER-format scenes)" in board and "| trained here (P-Net, R-Net, O-Net above) |" in board
    assert re.search(r"\| CNN-6 \| L2 \| no \| \[`[0-9a-f]{8}`\]\(http://127\.0\.0\.1:5000/#/experiments/\d+/runs/"
                     r"[0-9a-f]{32}\?workflowType=machine_learning\) \(2 seeds\) \| [^|]+ \| \d+\.\d\d ± \d+\.\d\d \|", board)
    assert (project / "reports" / "figures" / "roc_lfw.png").exists()
    for key in params["experiments"]:
        assert params["experiments"][key]["loss"] in board
    assert (project / "reports" / "leaderboard.html").exists()
    # the register stage ran: smoke exports no model, so every run is listed as passed over, with why
    registry = json.loads((project / "models" / "registry.json").read_text())
    assert registry["registered"] == {} and registry["skipped"]
    assert all(reason.endswith("no logged model (train.export_model is off)") for reason in registry["skipped"])
    assert "w300_cnn6_wing_pdb" not in board  # the placeholder row has no run to show

    second = _run(["dvc", "repro"], project, env)
    assert _stages_run(second) == set()

    again = _new_project(tmp_path / "again", params, env)  # the same pipeline from scratch, elsewhere
    _run(["dvc", "repro"], again, env, timeout=1200)
    first_metrics = _metrics(project)
    rows = [k for table in ("experiments", "heatmap_experiments", "recognition_experiments", "two_stage_experiments",
                            "mtcnn_experiments") for k in params[table]]
    assert set(first_metrics) == {f"metrics/{k}.json" for k in rows} | {"metrics/sweeps/wing_w_eps.json"}
    assert _metrics(again) == first_metrics

    # DVC's experiments: the run above committed as the baseline, then one Wing parameter changed with -S
    git = {**env, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@localhost"}
    _run(["git", "add", "-A"], project, git)
    _run(["git", "commit", "-qm", "baseline"], project, git)
    third = _run(["dvc", "exp", "run", "-n", "wing-w8", "-S", "losses.wing.w=8"], project, git)
    # the Wing rows (the placeholder one too, cheaply), the registry and the report; neither L2 row (the
    # two-seed CNN-6 row, the two-stage row) re-runs
    assert _stages_run(third) == {"train@w300_cnn6_wing", "train@w300_cnn6_wing_pdb", "register", "report"}
    out = _run(["dvc", "exp", "show", "--json"], project, git)
    shown = json.loads(out[out.index("["):])
    baseline = next(rev for rev in shown if rev["rev"] != "workspace")
    experiments = [exp for group in baseline["experiments"] or [] for exp in group["revs"]]
    assert [exp["name"] for exp in experiments] == ["wing-w8"]

    def nme(rev: dict) -> float:
        return rev["data"]["metrics"]["metrics/w300_cnn6_wing.json"]["data"]["test_full_nme"]

    assert nme(baseline) > 0 and nme(experiments[0]) > 0 and nme(baseline) != nme(experiments[0])
    assert experiments[0]["data"]["params"]["params.yaml"]["data"]["losses"]["wing"]["w"] == 8
