"""A real Ray cluster on 127.0.0.1 for the integration tests: a head started with `ray start --head` and worker
nodes started with `ray start --address`, each with its own temp folder, ports and CPUs, so that Ray schedules
on them as on separate machines. Stopping a node kills its processes (found by its temp folder), never another
Ray on this machine (`ray stop` would stop them all). Also: a committed copy of the project to submit."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import REPO, process_tree, signal_all

BIN = Path(sys.executable).parent
NODE_PORTS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
              "runtime-env-agent-port", "node-manager-port", "object-manager-port")


def free_ports(n: int) -> list[int]:
    """n distinct free ports (all held open until every one is chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@contextmanager
def mlflow_server(folder: Path, backend_store_uri: str | None = None) -> Iterator[str]:
    """A real `facebench server` (MLflow, 127.0.0.1, one worker) on a free port, its store and artifacts in
    ``folder`` unless ``backend_store_uri`` names a store; yields its address, stops its whole tree after."""
    port = free_ports(1)[0]
    server = subprocess.Popen([str(BIN / "facebench"), "server", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}",
                               "--artifacts-destination", str(folder / "artifacts")],
                              cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_for_server(uri, server)
        yield uri
    finally:
        signal_all(process_tree(roots=(server.pid,)), 9)


def wait_for_server(uri: str, server: subprocess.Popen, timeout: float = 90.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"facebench server did not answer at {uri} (exit {server.poll()})")
        time.sleep(0.5)


def stop_processes(marker: str) -> None:
    """Stop every process whose command line names ``marker`` and their children: SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        signal_all(process_tree(lambda args: marker in args), sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and process_tree(lambda args: marker in args):
            time.sleep(0.3)


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_ADDRESS")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the nodes run in the activated environment
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return {**env, **(extra or {})}


class LocalCluster:
    """A head (``head_cpus``) and named worker nodes; ``address`` is the dashboard (Jobs API)."""

    def __init__(self, head_cpus: int = 2, env: dict[str, str] | None = None):
        # short: Ray's socket paths must stay under 108 bytes
        self.base = Path(tempfile.mkdtemp(prefix="fbray", dir="/tmp"))
        # Token authentication as Ray 2.60 expects it: the cluster's own token on every node, and for its
        # clients (``client_env``), never the user's ~/.ray/auth_token.
        token = self.base / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.client_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        self.env = node_env({**self.client_env, **(env or {})})
        self.nodes: dict[str, Path] = {}
        self.gcs, dashboard, client, *ports = free_ports(3 + len(NODE_PORTS))
        self.address = f"http://127.0.0.1:{dashboard}"
        self._start(self.base / "head", ["--head", "--port", str(self.gcs), "--dashboard-host", "127.0.0.1",
                                         "--dashboard-port", str(dashboard), "--include-dashboard", "true",
                                         f"--ray-client-server-port={client}", "--num-cpus", str(head_cpus)],
                    ports)
        deadline = time.monotonic() + 60
        while True:  # the Jobs API answers a little after `ray start` returns
            try:
                subprocess.run([str(BIN / "python"), "-c", _JOBS, self.address], env=self.env, check=True,
                               capture_output=True, timeout=60)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def _start(self, temp: Path, args: list[str], ports: list[int]) -> None:
        temp.mkdir(parents=True, exist_ok=True)
        started = subprocess.run(
            [str(BIN / "ray"), "start", "--node-ip-address", "127.0.0.1", *args,
             # every port of its own, so that another Ray on this machine cannot hold one this node needs
             *[f"--{name}={port}" for name, port in zip(NODE_PORTS, ports)],
             "--temp-dir", str(temp), "--disable-usage-stats"],
            env=self.env, capture_output=True, text=True, timeout=180)
        if started.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{started.stdout}\n{started.stderr}")

    def add_node(self, name: str, cpus: int) -> None:
        """A worker node with ``cpus`` CPUs and a resource named after it (``{name: 1}``)."""
        temp = self.base / name
        self._start(temp, ["--address", f"127.0.0.1:{self.gcs}", "--num-cpus", str(cpus),
                           "--resources", json.dumps({name: 1})], free_ports(len(NODE_PORTS)))
        self.nodes[name] = temp
        self.wait_for(lambda alive: name in alive, f"node {name} to join")

    def alive(self) -> dict[str, str]:
        """Live worker nodes by name -> Ray node id (from the cluster's own node table)."""
        out = subprocess.run([str(BIN / "python"), "-c", _NODES, f"127.0.0.1:{self.gcs}"], env=self.env,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        table = json.loads(out.stdout.strip().splitlines()[-1])
        return {name: node_id for node_id, resources in table.items() for name in self.nodes if name in resources}

    def wait_for(self, check, what: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not check(self.alive()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for {what}")
            time.sleep(1)

    def kill_node(self, name: str) -> None:
        """A lost machine: SIGKILL to the node's raylet and every process under it, at once."""
        signal_all(process_tree(lambda args: str(self.nodes[name]) in args), signal.SIGKILL)

    def ensure_node(self, name: str, cpus: int) -> None:
        """The node, started again if it was stopped."""
        if name not in self.alive():
            stop_processes(str(self.base / name))
            shutil.rmtree(self.base / name, ignore_errors=True)
            self.add_node(name, cpus)

    def stop(self) -> None:
        stop_processes(str(self.base))
        shutil.rmtree(self.base, ignore_errors=True)


# The Jobs API's answer (a fresh process: this one's Ray would keep the first token mode it saw).
_JOBS = """
import sys
from ray.job_submission import JobSubmissionClient
JobSubmissionClient(sys.argv[1]).list_jobs()
"""

# Live nodes' resources, read through a driver connected to the cluster (one line of JSON).
_NODES = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(json.dumps({n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}))
"""


def project_copy(root: Path, edit_params=None, dvc: bool = False) -> Path:
    """A committed copy of the project's code (not the installed package) in ``root``; ``edit_params`` may
    change the parsed params.yaml before it is written and committed; ``dvc``: with dvc.yaml, a DVC repo."""
    import yaml

    root.mkdir(parents=True)
    for name in ("pyproject.toml", ".gitignore", *((".dvcignore", "dvc.yaml") if dvc else ())):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "pipelines", root / "pipelines")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if edit_params is not None:
        edit_params(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(REPO / "facebench", root / "facebench", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    if dvc:
        subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "."], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "submitted"], cwd=root, check=True)
    return root


def submit_env(cluster: LocalCluster, **extra: str) -> dict[str, str]:
    """A submitting client's environment: the cluster's address (RAY_ADDRESS, as Ray names it) and token."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_JOB_ADDRESS", "MLFLOW_TRACKING_URI",
                                                             "FACEBENCH_STORAGE")}
    return {**env, **cluster.client_env, "RAY_ADDRESS": cluster.address, **extra}
