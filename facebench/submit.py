"""`facebench submit`: run a command on a Ray cluster through the Ray Jobs API, with this project's code.

What the job gets (Ray's runtime environment, https://docs.ray.io/en/latest/ray-core/handling-dependencies.html):

* **The code, and only the code.** The project folder is uploaded as the job's working directory, less
  what ``.gitignore`` lists (Ray applies it: prepared data, models, runs, the MLflow store, all anchored
  at the top, so ``facebench/data/`` and ``facebench/papers/`` travel) and the ``EXCLUDES`` below. The
  repository's ``.git`` travels too (a few MB) so that a run's ``code_version`` names the submitted
  commit and its dirty state, as it does locally. ``pipelines/bin`` goes first on the job's PATH: its
  ``facebench`` runs ``python -m facebench.cli`` in that folder, so the job runs the uploaded package even
  where the cluster's Python has another copy installed. The cluster needs facebench's dependencies, not
  facebench; ``--install-deps`` has Ray install them for the job (a virtualenv on each node, from PyPI).
* **The command as typed.** The words are quoted with ``shlex.join``: ``-- bash -c "a && b"`` runs
  ``bash -c 'a && b'``.
* **The tracking server and the storage root.** ``MLFLOW_TRACKING_URI``, ``FACEBENCH_STORAGE`` (and
  ``FACEBENCH_DEBUG``) are passed on; without a tracking server the job's runs go to a store inside its
  temporary working directory and are lost, and without a storage root so do its data and outputs.
* **A DVC stage** (``--stage train@<experiment>``): its command, with the storage root as the data root; its
  data dependencies copied up first when the root lacks them, its outputs copied back and recorded in
  dvc.lock (``run_stage``).
* **Its outcome.** Logs stream while the job runs; the command exits with 0 when the job SUCCEEDED and 1
  otherwise.

The cluster is ``--address``, else ``RAY_ADDRESS`` (Ray's own variable; for jobs, the dashboard's
``http://<head>:8265``), else the older ``RAY_JOB_ADDRESS``. A cluster with token authentication (Ray 2.60,
``RAY_AUTH_MODE=token``) needs the same token on the submitting side (``RAY_AUTH_MODE=token`` with
``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``); a refused token or an unreachable dashboard is one error line.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from pathlib import Path
from typing import Callable

# Anchored (gitignore syntax, relative to the project folder): only these top-level folders are left out
# beyond .gitignore. The DVC cache and a virtual environment can be gigabytes and never run on a cluster.
EXCLUDES = ["/.venv/", "/.dvc/cache/", "/.dvc/tmp/", "/.facebench-tmp/", "/reports/figures/"]
RAY_DEFAULT_EXCLUDES = ".venv,venv,__pycache__"
PASSED_ENV = ("MLFLOW_TRACKING_URI", "FACEBENCH_STORAGE", "FACEBENCH_DEBUG")
FINAL = ("SUCCEEDED", "FAILED", "STOPPED")
AGENT_WAIT_S = 60.0  # how long a just-started cluster may take to accept jobs


def cluster_address(address: str | None) -> str:
    """The Jobs API address: the option, else RAY_ADDRESS, else RAY_JOB_ADDRESS."""
    found = address or os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_ADDRESS")
    if not found:
        raise ValueError("no Ray cluster named: give --address or set RAY_ADDRESS to the cluster's dashboard "
                         "(e.g. http://127.0.0.1:8265 through a port-forward)")
    return found


SHIM_DIR = "pipelines/bin"  # holds `facebench`: python -m facebench.cli, from the job's working directory


def entrypoint(command: list[str]) -> str:
    """The job's shell command: the words quoted as typed, with the uploaded ``pipelines/bin`` first on the
    PATH, so that every ``facebench`` the command runs (nested in ``bash -c "... && ..."`` too) is the
    uploaded package."""
    if not command:
        raise ValueError("nothing to run: give the command after --, e.g. facebench submit -- facebench train x")
    return f'PATH="$PWD/{SHIM_DIR}:$PATH" {shlex.join(command)}'


def runtime_env(project: Path, install_deps: bool = False) -> dict:
    # Ray 2.60 leaves .git out of every working directory (RAY_RUNTIME_ENV_DEFAULT_EXCLUDES); keep its other
    # defaults and ship .git, unless the user set the list.
    os.environ.setdefault("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", RAY_DEFAULT_EXCLUDES)
    # workers print plainly, as a local Ray's do (train/ray_trainer.py WORKER_ENV: no line twice in the log)
    env = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", **{k: os.environ[k] for k in PASSED_ENV if k in os.environ}}
    found = {"working_dir": str(project), "excludes": list(EXCLUDES), "env_vars": env}
    if install_deps:
        found["pip"] = {"packages": dependencies(project)}
    return found


def dependencies(project: Path) -> list[str]:
    """pyproject.toml's dependencies but Ray (the cluster's own Ray runs the job)."""
    import re
    import tomllib

    declared = tomllib.loads((project / "pyproject.toml").read_text())["project"]["dependencies"]
    return [d for d in declared if re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0].lower() != "ray"]


def use_token_if_present() -> None:
    """Ray 2.60 turns token authentication on for every cluster started where a token exists (it writes one
    to ~/.ray/auth_token for a new local cluster), but a Jobs API client only sends its token when
    RAY_AUTH_MODE=token. Do as `ray start` does: with the mode unset and a token at hand, use it. Ray's own
    helper does this and refreshes the mode a process has cached if it used Ray before; setting the variable
    alone would not reach such a process."""
    import logging

    try:
        from ray._private.authentication import authentication_token_setup as setup
    except ImportError:  # a Ray without token authentication (before 2.60)
        return
    log = logging.getLogger(setup.__name__)
    level = log.level
    log.setLevel(logging.ERROR)  # its "token authentication is enabled" warning: the client's output is ours
    try:
        setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        log.setLevel(level)


def _token_refused(address: str) -> ValueError:
    return ValueError(f"the Ray cluster at {address} refused this client's token: set RAY_AUTH_MODE=token and "
                      "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token")


def client_for(address: str):
    """A Jobs API client for ``address``; a refused token or no answer is a ValueError (one error line)."""
    use_token_if_present()
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except AuthenticationError as exc:
        raise _token_refused(address) from exc
    except ConnectionError as exc:
        raise ValueError(f"no Ray dashboard answers at {address} ({str(exc).splitlines()[0][:200]})") from exc


def submit(command: list[str], address: str | None, project: Path, wait: bool = True,
           echo: Callable[[str], None] = lambda s: print(s, end="", flush=True),
           install_deps: bool = False) -> tuple[str, str | None]:
    """Submit ``command``; with ``wait``, stream its logs and return (job id, final status)."""
    from ray.exceptions import AuthenticationError

    address = cluster_address(address)
    client = client_for(address)
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            job_id = client.submit_job(entrypoint=entrypoint(command), runtime_env=runtime_env(project, install_deps),
                                       metadata={"facebench.command": shlex.join(command)})
            break
        except AuthenticationError as exc:
            raise _token_refused(address) from exc
        except RuntimeError as exc:  # a cluster just started: its job agent is not up yet
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            echo("waiting for the cluster's job agent...\n")
            time.sleep(2)
    echo(f"submitted {job_id} to {address}\n")
    if not wait:
        return job_id, None

    async def follow() -> None:
        async for lines in client.tail_job_logs(job_id):
            echo(lines)

    asyncio.run(follow())  # ends when the job does
    status = str(client.get_job_status(job_id).value)
    while status not in FINAL:  # the log stream can close a moment before the status is final
        time.sleep(0.5)
        status = str(client.get_job_status(job_id).value)
    echo(f"{job_id}: {status}\n")
    return job_id, status


def main(command: list[str], address: str | None, wait: bool, stage: str | None = None,
         install_deps: bool = False) -> int:
    if stage is not None:
        if command:
            raise ValueError(f"give --stage {stage} or a command after --, not both")
        return run_stage(stage, address, Path.cwd(), install_deps=install_deps)
    _, status = submit(command, address, Path.cwd(), wait, install_deps=install_deps)
    return 0 if status in (None, "SUCCEEDED") else 1


# --- a DVC stage on the cluster ---------------------------------------------------------------------
def shared_root(project: Path) -> Path:
    """The storage root a ``--stage`` job writes to, mounted here too (its outputs are copied back)."""
    from facebench.config import STORAGE_ENV, load_params, storage_root

    store = storage_root(load_params(project / "params.yaml"), project)
    if store is None:
        raise ValueError(f"submit --stage needs a storage root that the cluster's nodes and this machine both "
                         f"mount: set {STORAGE_ENV} (e.g. /mnt/facebench)")
    if not store.is_dir():
        raise FileNotFoundError(f"{store}: the storage root ({STORAGE_ENV}) is not a folder here; mount it")
    return store


def stage_files(project: Path, stage: str) -> tuple[str, list[str], list[str]]:
    """A dvc.yaml stage's command, its data dependencies (not code, not params) and its outputs."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(project)) as repo:
            (found,) = repo.stage.collect(stage)
            deps = [d.def_path for d in found.deps
                    if not d.def_path.startswith("facebench/") and d.def_path != "params.yaml"]
            return found.cmd, deps, [o.def_path for o in found.outs]
    except DvcException as exc:
        raise ValueError(f"{project / 'dvc.yaml'}: {exc}") from exc


def _copy(src: Path, dst: Path) -> None:
    """``src`` to ``dst`` whole or not at all (a file or a folder)."""
    import shutil

    from facebench.atomic import atomic_write_bytes, build_dir

    if src.is_dir():
        build_dir(dst, lambda tmp: shutil.copytree(src, tmp, dirs_exist_ok=True))
    else:
        atomic_write_bytes(dst, src.read_bytes())


def run_stage(stage: str, address: str | None, project: Path,
              echo: Callable[[str], None] = lambda s: print(s, end="", flush=True), install_deps: bool = False) -> int:
    """Run a DVC stage's command on the cluster with the storage root as its data root: its data dependencies
    are copied up when the root lacks them, its outputs copied back here and recorded in dvc.lock."""
    store = shared_root(project)
    command, deps, outs = stage_files(project, stage)
    for rel in deps:
        if not (store / rel).exists():
            if not (project / rel).exists():
                raise FileNotFoundError(f"{rel}: {stage} needs it and neither {project} nor {store} has it; "
                                        "run the stage that makes it first")
            echo(f"copying {rel} to {store}\n")
            _copy(project / rel, store / rel)
    os.environ["FACEBENCH_STORAGE"] = str(store)  # the job's data root, absolute
    _, status = submit(["bash", "-c", command], address, project, echo=echo, install_deps=install_deps)
    if status != "SUCCEEDED":
        return 1
    for rel in outs:
        if not (store / rel).exists():
            raise FileNotFoundError(f"{store / rel}: {stage} SUCCEEDED on the cluster but did not write {rel}")
        _copy(store / rel, project / rel)
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        repo.commit(stage, force=True)
    echo(f"{stage}: outputs copied back from {store} and recorded in dvc.lock\n")
    return 0
