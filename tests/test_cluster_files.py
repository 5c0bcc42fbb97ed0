"""pipelines/: the Ray cluster launcher config passes Ray's own validation (as `ray up` runs it) and the
KubeRay RayJob has the fields KubeRay requires, with storage, shared memory and workers that match its job."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from facebench.config import load_params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def launcher() -> dict:
    return yaml.safe_load((REPO / "pipelines" / "ray-cluster.yaml").read_text())


@pytest.fixture
def rayjob() -> dict:
    return yaml.safe_load((REPO / "pipelines" / "kuberay-rayjob.yaml").read_text())


def test_launcher_config_passes_rays_validation(launcher):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(launcher))  # what `ray up` does before it touches a machine

    broken = {**launcher, "setup_command": ["make setup"]}  # the check can fail: a misspelt key
    with pytest.raises(Exception, match="setup_command"):
        validate_config(prepare_config(broken))


def test_launcher_puts_the_repository_its_venv_and_storage_on_every_node(launcher):
    assert launcher["file_mounts"]["~/facebench"] == "."  # the repository, from where `ray up` runs
    assert "~/.ray/auth_token" in launcher["file_mounts"]  # the cluster's token on every node
    assert ".gitignore" in launcher["rsync_filter"]  # not data, models or the venv
    setup = " && ".join(launcher["setup_commands"])
    assert "make setup" in setup and "mount -t nfs" in setup and "/mnt/facebench" in setup
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in launcher[key] if " start " in c]
        assert len(start) == 1 and "~/facebench/.venv/bin/ray start" in start[0], key
        assert start[0].startswith("RAY_AUTH_MODE=token "), key
    head = shlex.split(next(c for c in launcher["head_start_ray_commands"] if " start " in c))
    assert "--dashboard-host=127.0.0.1" in head  # the Jobs API runs code: port-forward only


def _pods(rayjob: dict) -> list[tuple[dict, int]]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    pods = [(cluster["headGroupSpec"]["template"]["spec"], 1)]
    pods += [(group["template"]["spec"], group["replicas"]) for group in cluster["workerGroupSpecs"]]
    return pods


def test_rayjob_has_kuberays_required_fields(rayjob):
    import ray

    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob" and rayjob["metadata"]["name"]
    spec = rayjob["spec"]
    assert spec["entrypoint"].startswith("facebench ")
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__  # the image's Ray is the one facebench is built against
    assert "rayStartParams" in cluster["headGroupSpec"]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and "rayStartParams" in group
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for pod, _ in _pods(rayjob):
        assert pod["containers"] and all(c["name"] and c["image"] for c in pod["containers"])
    env = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    assert env["MLFLOW_TRACKING_URI"].startswith("http://")


def test_rayjob_storage_shared_memory_and_workers_match_its_job(rayjob):
    spec = rayjob["spec"]
    storage = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]["FACEBENCH_STORAGE"]
    for pod, _ in _pods(rayjob):
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            assert mounts["/dev/shm"]["emptyDir"]["medium"] == "Memory"
            shared = [path for path, v in mounts.items() if "persistentVolumeClaim" in v]
            assert any(storage == path or storage.startswith(path + "/") for path in shared), (storage, shared)

    words = shlex.split(spec["entrypoint"])
    workers = int(words[words.index("--num-workers") + 1])
    assert "--gpu" in words
    gpus = sum(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) * replicas
               for pod, replicas in _pods(rayjob) for c in pod["containers"])
    assert gpus == workers  # one GPU per DDP rank, none idle
    profile = words[words.index("--profile") + 1]
    params = load_params(REPO / "params.yaml", profile)
    assert words[2] in params.all_experiments  # `facebench train <experiment>` names a real row
