"""`facebench submit`: run a command on a Ray cluster through the Ray Jobs API, with this project's code.

What the job gets (Ray's runtime environment, https://docs.ray.io/en/latest/ray-core/handling-dependencies.html):

* **The code, and only the code.** The project folder is uploaded as the job's working directory, less
  what ``.gitignore`` lists (Ray applies it: prepared data, models, runs, the MLflow store, all anchored
  at the top, so ``facebench/data/`` and ``facebench/models/`` travel) and the ``EXCLUDES`` below. The
  repository's ``.git`` travels too (a few MB) so that a run's ``code_version`` names the submitted
  commit and its dirty state, as it does locally. A leading ``facebench`` word runs ``python -m
  facebench.cli`` in that folder, so the job runs the uploaded package even where the cluster's Python
  has another copy installed (the cluster needs facebench's dependencies, not facebench).
* **The command as typed.** The words are quoted with ``shlex.join``: ``-- bash -c "a && b"`` runs
  ``bash -c 'a && b'``.
* **The tracking server.** ``MLFLOW_TRACKING_URI`` (and ``FACEBENCH_DEBUG``) are passed on; without a
  tracking server the job's runs go to a store inside its temporary working directory and are lost.
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


def entrypoint(command: list[str]) -> str:
    """The job's shell command: the words quoted as typed; a leading ``facebench`` runs the uploaded package."""
    if not command:
        raise ValueError("nothing to run: give the command after --, e.g. facebench submit -- facebench train x")
    words = list(command)
    if words[0] == "facebench":
        words = ["python", "-m", "facebench.cli", *words[1:]]
    return shlex.join(words)


def runtime_env(project: Path) -> dict:
    # Ray 2.60 leaves .git out of every working directory (RAY_RUNTIME_ENV_DEFAULT_EXCLUDES); keep its other
    # defaults and ship .git, unless the user set the list.
    os.environ.setdefault("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", RAY_DEFAULT_EXCLUDES)
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    return {"working_dir": str(project), "excludes": list(EXCLUDES), "env_vars": env}


def use_token_if_present() -> None:
    """Ray 2.60 turns token authentication on for every cluster started where a token exists (it writes one
    to ~/.ray/auth_token for a new local cluster), but a Jobs API client only sends its token when
    RAY_AUTH_MODE=token. Do as `ray start` does: with the mode unset and a token at hand, use it. Ray's own
    helper does this and refreshes the mode a process has cached if it used Ray before; setting the variable
    alone would not reach such a process."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication (before 2.60)
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


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
           echo: Callable[[str], None] = lambda s: print(s, end="", flush=True)) -> tuple[str, str | None]:
    """Submit ``command``; with ``wait``, stream its logs and return (job id, final status)."""
    from ray.exceptions import AuthenticationError

    address = cluster_address(address)
    client = client_for(address)
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            job_id = client.submit_job(entrypoint=entrypoint(command), runtime_env=runtime_env(project),
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


def main(command: list[str], address: str | None, wait: bool) -> int:
    _, status = submit(command, address, Path.cwd(), wait)
    return 0 if status in (None, "SUCCEEDED") else 1
