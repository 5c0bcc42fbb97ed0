"""The `facebench` command reports bad input as one `error:` line (exit 2); --debug shows the traceback;
a bug keeps its traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from facebench import cli
from facebench.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
SWEEPS = "['awing_alpha_omega', 'cosface_margin', 'wing_w_eps']"


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli.app, list(args), env={"FACEBENCH_DEBUG": "", **(env or {})})


def project(tmp_path: Path, mutate=None) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    if mutate:
        mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_sweep_is_one_error_line():
    result = invoke("tune", "nosuch", "--params", str(REPO / "params.yaml"))
    assert (result.exit_code, result.stderr, result.stdout) == (
        2, f"error: params.yaml: no sweep 'nosuch'; known: {SWEEPS}\n", "")


def test_unknown_experiment_is_one_error_line(tmp_path):
    result = invoke("train", "nosuch", "--params", str(REPO / "params.yaml"))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: params.yaml: no experiment 'nosuch'; known: ['aflw_cnn67_l1', ")
    assert result.stderr.count("\n") == 1


def test_bad_loss_parameter_stops_the_command_before_it_starts(tmp_path):
    path = project(tmp_path, lambda r: r["losses"]["wing"].update(w=-5))
    result = invoke("tune", "wing_w_eps", "--params", str(path))
    assert (result.exit_code, result.stderr) == (2, f"error: {path}: losses.wing.w: must be > 0, got -5\n")


def test_several_problems_keep_their_continuation_lines(tmp_path):
    def mutate(r):
        r["losses"]["wing"]["w"] = -5
        r["sweeps"]["wing_w_eps"]["grid"]["omega"] = [1.0]

    path = project(tmp_path, mutate)
    result = invoke("train", "aflw_cnn6_wing", "--params", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {path}: 2 invalid parameters:",
        "  losses.wing.w: must be > 0, got -5",
        "  sweeps.wing_w_eps.grid.omega: 'wing', the loss of aflw_cnn6_wing, has no parameter 'omega'; "
        "it takes eps, w, weight",
    ]


def test_missing_params_file(tmp_path):
    result = invoke("prepare", "aflw", "--params", str(tmp_path / "params.yaml"))
    assert (result.exit_code, result.stderr) == (
        2, f"error: {tmp_path / 'params.yaml'}: file not found (expected the project's params.yaml)\n")


def test_a_reader_error_is_one_line(tmp_path):
    """A dataset root that is not there: the reader's DatasetFormatError (a ValueError), named."""
    path = project(tmp_path)
    result = invoke("prepare", "aflw", "--params", str(path))
    assert result.exit_code == 2
    assert result.stderr == (f"error: {tmp_path / 'data/raw/aflw'}: AFLW root not found; expected a folder holding "
                             "AFLWinfo_release.mat and data/flickr/\n")


def test_command_line_override_out_of_range(tmp_path):
    result = invoke("train", "w300_cnn6_l1", "--epochs", "0", "--params", str(REPO / "params.yaml"))
    assert (result.exit_code, result.stderr) == (
        2, "error: experiment 'w300_cnn6_l1' with overrides {'epochs': 0}: train.epochs: Input should be greater "
           "than 0, got 0\n")


def test_submit_without_address(monkeypatch):
    monkeypatch.delenv("RAY_JOB_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = invoke("submit", "facebench", "report")
    assert (result.exit_code, result.stderr) == (
        2, "error: no Ray cluster named: give --address or set RAY_ADDRESS to the cluster's dashboard "
           "(e.g. http://127.0.0.1:8265 through a port-forward)\n")


@pytest.mark.parametrize("args, env", [(["--debug"], {}), ([], {"FACEBENCH_DEBUG": "1"})])
def test_debug_raises_the_expected_error(args, env):
    result = invoke(*args, "tune", "nosuch", "--params", str(REPO / "params.yaml"), env=env)
    assert isinstance(result.exception, ConfigError)
    assert "error:" not in result.stderr


def test_debug_prints_the_traceback():
    env = {**os.environ, "FACEBENCH_DEBUG": "", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "facebench.cli", "--debug", "tune", "nosuch", "--params",
                          str(REPO / "params.yaml")], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "ConfigError: params.yaml: no sweep 'nosuch'" in out.stderr


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(cli, "load_params", broken)
    result = invoke("tune", "wing_w_eps")
    assert isinstance(result.exception, RuntimeError) and result.exit_code == 1
    assert "error:" not in result.stderr


def test_every_command_reports_expected_errors():
    names = [c.name or c.callback.__name__ for c in cli.app.registered_commands]
    assert len(names) >= 12
    assert all(getattr(c.callback, "__wrapped__", None) is not None for c in cli.app.registered_commands), names


def test_a_row_the_profile_leaves_out_gets_outputs_that_say_so(tmp_path):
    """Under the default profile a full-only row trains nothing and touches no MLflow store; its DVC
    outputs (model folder, metrics file, empty plots folder; a two-stage row's re-crop folder) say why,
    in a fresh `facebench` process quickly enough for DVC to pass over 20 such rows (no torch imported)."""
    params = project(tmp_path)
    code = ("import sys; from facebench.cli import main; sys.argv = ['facebench'] + sys.argv[1:]; "
            "import atexit; atexit.register(lambda: print('torch' in sys.modules, file=sys.stderr)); main()")
    for args in (["train", "aflw_cnn6_wing_pdb"], ["train", "aflw_cnn67_l1", "--recrop"]):
        done = subprocess.run([sys.executable, "-c", code, *args, "--params", str(params)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip().splitlines()[-1] == "False"  # torch never imported
    why = "aflw_cnn6_wing_pdb is not trained under profile 'default'; profiles full, paper train it"
    assert (tmp_path / "models" / "aflw_cnn6_wing_pdb" / "NOT_TRAINED.txt").read_text() == why + "\n"
    assert json.loads((tmp_path / "metrics" / "aflw_cnn6_wing_pdb.json").read_text()) == {
        "experiment": "aflw_cnn6_wing_pdb", "not_trained": why}
    assert list((tmp_path / "plots" / "aflw_cnn6_wing_pdb").iterdir()) == []
    assert (tmp_path / "data" / "stage2" / "aflw_cnn67_l1" / "NOT_TRAINED.txt").is_file()
    assert (tmp_path / "models" / "aflw_cnn67_l1" / "NOT_TRAINED.txt").is_file()
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
