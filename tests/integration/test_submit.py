"""`facebench submit` against a real Ray head started with `ray start` on 127.0.0.1 (its own temp folder, its
dashboard serving the Jobs API), from a project folder that is not the installed package."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from facebench.submit import entrypoint, runtime_env
from tests.conftest import REPO
from tests.integration.local_cluster import BIN, LocalCluster, free_ports, project_copy, submit_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_head():
    cluster = LocalCluster(head_cpus=2)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A committed copy of the project's code (not the installed package), with ignored data and models
    folders that must not be uploaded."""
    root = project_copy(tmp_path_factory.mktemp("submitted") / "project")
    for ignored in ("data/prepared/big.bin", "models/x/model.pt", "runs/x/ckpt"):
        (root / ignored).parent.mkdir(parents=True, exist_ok=True)
        (root / ignored).write_bytes(b"\0" * 1024)
    return root


def _submit(project: Path, cluster, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "facebench"), "submit", "--", *command], cwd=project,
                          env=submit_env(cluster), capture_output=True, text=True, timeout=300)


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
    assert {"data", "papers", "train"} <= set(expected)
    assert f"SUBPACKAGES {expected}" in out  # facebench/data travels; the top-level /data does not
    assert "IGNORED_PRESENT []" in out
    assert f"CODE_VERSION {sha}\n" in out  # the submitted commit, clean
    assert ": SUCCEEDED" in out

    # Quoting survives (two spaces, &&, a single-quoted word), logs stream back, a failed job is exit status 1.
    failed = _submit(project, ray_head, "bash", "-c", "echo 'two  spaces' && echo \"it's\" && exit 3")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "two  spaces\nit's\n" in failed.stdout and ": FAILED" in failed.stdout

    # A client without the cluster's token gets one error line.
    wrong = project.parent / "wrong_token"
    wrong.write_text("0" * 64)
    refused = subprocess.run([str(BIN / "facebench"), "submit", "--", "echo", "hi"], cwd=project,
                             env={**submit_env(ray_head), "RAY_AUTH_TOKEN_PATH": str(wrong)},
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.startswith(f"error: the Ray cluster at {ray_head.address} "
                                                                 "refused this client's token"), refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr

    # Every `facebench` of the command, nested in a shell too, is the uploaded package's.
    nested = _submit(project, ray_head, "bash", "-c", "pwd && command -v facebench && facebench --help")
    lines = nested.stdout.splitlines()
    assert nested.returncode == 0 and any(f"{pwd}/pipelines/bin/facebench" == found  # the job's working dir
                                          for pwd, found in zip(lines, lines[1:])), nested.stdout

    # A leading `facebench` runs the uploaded package's command line.
    helped = _submit(project, ray_head, "facebench", "--help")
    assert helped.returncode == 0 and "submit" in helped.stdout and ": SUCCEEDED" in helped.stdout


def test_entrypoint_quotes_and_runs_the_uploaded_package():
    shim = 'PATH="$PWD/pipelines/bin:$PATH" '
    assert entrypoint(["bash", "-c", "facebench synth w300 && facebench prepare w300"]) == \
        shim + "bash -c 'facebench synth w300 && facebench prepare w300'"
    assert entrypoint(["facebench", "train", "aflw_cnn6_wing"]) == shim + "facebench train aflw_cnn6_wing"
    with pytest.raises(ValueError, match="nothing to run"):
        entrypoint([])
    assert os.access(REPO / "pipelines" / "bin" / "facebench", os.X_OK)


def test_install_deps_asks_ray_for_the_dependencies_but_ray(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["torch>=2.11", '
                                             '"ray[default,train]>=2.60", "raylib==1", "pyyaml>=6"]\n')
    env = runtime_env(tmp_path, install_deps=True)
    assert env["pip"] == {"packages": ["torch>=2.11", "raylib==1", "pyyaml>=6"]}
    assert "pip" not in runtime_env(tmp_path)


def test_no_dashboard_is_one_error_line(tmp_path):  # no address at all: tests/test_cli.py
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_ADDRESS")}
    closed = subprocess.run([str(BIN / "facebench"), "submit", "--address", f"http://127.0.0.1:{free_ports(1)[0]}",
                             "--", "echo", "hi"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert closed.returncode == 2 and closed.stderr.startswith("error: no Ray dashboard answers at") \
        and len(closed.stderr.strip().splitlines()) == 1
