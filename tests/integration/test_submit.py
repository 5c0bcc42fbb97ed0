"""`facebench submit` against a real Ray head started with `ray start` on 127.0.0.1 (its own temp folder, its
dashboard serving the Jobs API), from a project folder that is not the installed package."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from facebench.submit import client_for, entrypoint
from tests.conftest import process_tree, signal_all

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    """n distinct free ports (all held open until every one is chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _free_port() -> int:
    return _free_ports(1)[0]


def _stop(marker: str) -> None:
    """Stop every process of this head (their command lines name its temp folder) and their children; not
    `ray stop`, which would stop every Ray on the machine."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        signal_all(process_tree(lambda args: marker in args), sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and process_tree(lambda args: marker in args):
            time.sleep(0.3)


@pytest.fixture(scope="module")
def ray_head():
    temp = tempfile.mkdtemp(prefix="fbsub", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    gcs, dashboard, *others = _free_ports(9)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_ADDRESS")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the nodes run in the activated environment
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    started = subprocess.run(
        # Every port of its own, so that another Ray on this machine (a pipeline, a test's ray.init) cannot
        # hold one this head needs (its dashboard agent's 52365, say).
        [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--num-cpus", "2",
         *[f"--{name}={port}" for name, port in zip(
             ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
              "runtime-env-agent-port", "node-manager-port", "object-manager-port", "ray-client-server-port"),
             others)],
         "--temp-dir", temp, "--include-dashboard", "true", "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        address = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 60
        while True:  # the Jobs API answers a little after `ray start` returns
            try:
                client_for(address).list_jobs()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield address
    finally:
        _stop(temp)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A committed copy of the project's code (not the installed package), with ignored data and models
    folders that must not be uploaded."""
    root = tmp_path_factory.mktemp("submitted") / "project"
    root.mkdir()
    for name in ("pyproject.toml", "params.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "facebench", root / "facebench", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "."], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "submitted"], cwd=root, check=True)
    for ignored in ("data/prepared/big.bin", "models/x/model.pt", "runs/x/ckpt"):
        (root / ignored).parent.mkdir(parents=True, exist_ok=True)
        (root / ignored).write_bytes(b"\0" * 1024)
    return root


def _submit(project: Path, address: str, *command: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_JOB_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["RAY_ADDRESS"] = address  # Ray's own variable names the cluster
    return subprocess.run([str(BIN / "facebench"), "submit", "--", *command], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)


CHECK = """
import os, pathlib, facebench
from facebench.tracking import code_version
here = pathlib.Path.cwd().resolve()
package = pathlib.Path(facebench.__file__).resolve().parent
print("PACKAGE_IN_WORKING_DIR", package.parent == here)
print("SUBPACKAGES", sorted(p.name for p in package.iterdir() if (p / "__init__.py").is_file()))
print("IGNORED_PRESENT", [p for p in ("data/prepared", "models", "runs") if (here / p).exists()])
print("CODE_VERSION", code_version(here))
"""


def test_job_runs_the_uploaded_code_with_the_command_as_typed(ray_head, project):
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    done = _submit(project, ray_head, "python", "-c", CHECK)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "PACKAGE_IN_WORKING_DIR True" in out
    expected = sorted(p.name for p in (REPO / "facebench").iterdir() if (p / "__init__.py").is_file())
    assert {"data", "models", "mtcnn", "train"} <= set(expected)
    assert f"SUBPACKAGES {expected}" in out  # facebench/data and facebench/models travel; /data and /models do not
    assert "IGNORED_PRESENT []" in out
    assert f"CODE_VERSION {sha}\n" in out  # the submitted commit, clean
    assert ": SUCCEEDED" in out

    # Quoting survives (two spaces, &&, a single-quoted word), logs stream back, a failed job is exit status 1.
    failed = _submit(project, ray_head, "bash", "-c", "echo 'two  spaces' && echo \"it's\" && exit 3")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "two  spaces\nit's\n" in failed.stdout and ": FAILED" in failed.stdout

    # A leading `facebench` runs the uploaded package's command line.
    helped = _submit(project, ray_head, "facebench", "--help")
    assert helped.returncode == 0 and "submit" in helped.stdout and ": SUCCEEDED" in helped.stdout


def test_entrypoint_quotes_and_runs_the_uploaded_package():
    assert entrypoint(["bash", "-c", "facebench synth w300 && facebench prepare w300"]) == \
        "bash -c 'facebench synth w300 && facebench prepare w300'"
    assert entrypoint(["facebench", "train", "aflw_cnn6_wing"]) == "python -m facebench.cli train aflw_cnn6_wing"
    with pytest.raises(ValueError, match="nothing to run"):
        entrypoint([])


def test_no_dashboard_is_one_error_line(tmp_path):  # no address at all: tests/test_cli.py
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_ADDRESS")}
    closed = subprocess.run([str(BIN / "facebench"), "submit", "--address", f"http://127.0.0.1:{_free_port()}",
                             "--", "echo", "hi"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert closed.returncode == 2 and closed.stderr.startswith("error: no Ray dashboard answers at") \
        and len(closed.stderr.strip().splitlines()) == 1
