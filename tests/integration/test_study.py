"""The claims study end to end on the smoke profile: `facebench study` trains every cell through Ray Train
into its own MLflow experiment, writes the findings, reuses its runs when run again, and `facebench claims`
reports them."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout


def _summary(out: str) -> dict:
    """The command's JSON summary: its last lines, after the trainings' progress lines."""
    return json.loads(out[out.rindex("\n{\n") + 1:] if "\n{\n" in out else out)


@pytest.mark.timeout(1200)
def test_study_trains_tracks_finds_and_reuses(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["datasets"] = {"aflw": params["datasets"]["aflw"]}
    for table in ("heatmap_experiments", "recognition_experiments", "two_stage_experiments", "mtcnn_experiments",
                  "sweeps", "heatmap_sweeps", "recognition_sweeps"):
        params[table] = {}
    params["experiments"] = {k: params["experiments"][k] for k in ("aflw_cnn6_l2", "aflw_cnn6_wing")}
    # two systems, two lengths, two seeds: eight trainings of the smoke profile's two epochs on 60 faces
    params["study"] = {"profile": "smoke", "seeds": [0, 1],
                       "wing": {"rows": ["aflw_cnn6_l2", "aflw_cnn6_wing"], "datasets": {"aflw": "aflw"},
                                "lengths": [1, 2]}}
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "pyproject.toml", project / "pyproject.toml")
    shutil.copytree(REPO / "facebench", project / "facebench", ignore=shutil.ignore_patterns("__pycache__"))
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "RAY_ADDRESS"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONPATH"] = str(project)  # the copied package, as a DVC stage in that project would run it
    _run(["facebench", "synth", "aflw"], project, env)
    _run(["facebench", "prepare", "aflw"], project, env)

    first = _summary(_run(["facebench", "study", "wing"], project, env))
    assert first["cells"] == 8
    result = json.loads((project / "study" / "wing.json").read_text())
    cells = result["cells"]
    assert len({c["run_id"] for c in cells}) == 8 and {c["run"] for c in cells} == {"new"}
    assert {(c["system"], c["x"], c["epochs"]) for c in cells} == {
        ("L2", 1.0, 2), ("L2", 2.0, 4), ("Wing", 1.0, 2), ("Wing", 2.0, 4)}
    # the findings, recomputed here from the cells: means over the two seeds, spread = sum of the sample sds
    wing_l2 = next(f for f in result["findings"] if (f["first"], f["second"]) == ("Wing", "L2"))
    for point in wing_l2["points"]:
        a = [c["test"] for c in cells if c["system"] == "Wing" and c["x"] == point["x"]]
        b = [c["test"] for c in cells if c["system"] == "L2" and c["x"] == point["x"]]
        assert point["gain"] == pytest.approx(statistics.fmean(b) - statistics.fmean(a))
        assert point["spread"] == pytest.approx(statistics.stdev(a) + statistics.stdev(b))
    assert all(c["val"] is not None and 0 < c["test"] < 1 for c in cells)

    # the runs: in the study's own experiment, none in the paper's (which the leaderboard reads)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    study = client.get_experiment_by_name("facebench-study/wing")
    runs = client.search_runs([study.experiment_id])
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.info.run_id for r in runs} == {c["run_id"] for c in cells}
    paper = client.get_experiment_by_name("facebench/wing")
    assert paper is None or not client.search_runs([paper.experiment_id])

    # again: every cell reuses its finished run (same params, code and data), the findings are the same
    again = _summary(_run(["facebench", "study", "wing"], project, env))
    assert again["findings"] == first["findings"]
    redo = json.loads((project / "study" / "wing.json").read_text())
    assert {c["run"] for c in redo["cells"]} == {"reused"}
    assert [c["run_id"] for c in redo["cells"]] == [c["run_id"] for c in cells]

    _run(["facebench", "claims"], project, env)
    md = (project / "reports" / "claims.md").read_text()
    assert "## Wing against L1 and L2 as training lengthens" in md and "| Wing before L2 |" in md
    assert (project / "reports" / "claims" / "wing.png").stat().st_size > 0
