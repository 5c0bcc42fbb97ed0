"""Shared fixtures. Integration fixtures start the real things: a local Ray, an MLflow SQLite store."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "true")


def process_tree(match: Callable[[str], bool] = lambda args: False, roots: tuple[int, ...] = ()) -> list[int]:
    """Live processes whose command line satisfies ``match`` or whose pid is in ``roots``, and all their
    descendants. (Ray renames its workers' command lines to ``ray::<actor>``: find them as descendants.)"""
    # -ww: whole command lines; ps otherwise cuts them at $COLUMNS (set under pytest), before a folder name
    listing = subprocess.run(["ps", "-ww", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    table = [line.split(None, 2) for line in listing.splitlines()[1:] if len(line.split(None, 2)) == 3]
    pids = {int(pid) for pid, _, args in table if match(args) or int(pid) in roots}
    while True:
        more = {int(pid) for pid, ppid, _ in table if int(ppid) in pids} - pids
        if not more:
            return sorted(pid for pid in pids if running(pid))
        pids |= more


def signal_all(pids, sig: int) -> None:
    """Send ``sig`` to each pid; one that has exited meanwhile is skipped."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody has reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip cleanly where no CUDA device is present (CI has none)."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _published_weights() -> bool:
    from facebench.papers.mtcnn import default_weights_dir

    return (default_weights_dir() / "onet.pt").is_file()


# Tests that run the published MTCNN weights (../shared/models/mtcnn-published, or $FACEBENCH_MTCNN_WEIGHTS).
needs_published_weights = pytest.mark.skipif(not _published_weights(),
                                             reason="published MTCNN weights not available (../shared)")


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray with room for two training workers plus Ray Data tasks (one per test module,
    so what one module's runs leave behind cannot starve the next)."""
    import ray

    os.environ.pop("RAY_ADDRESS", None)
    if not ray.is_initialized():
        # The dashboard serves the State API that Ray Train's placement-group cleaner relies on.
        ray.init(num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_project(tmp_path_factory) -> Path:
    """A project root with the repo's params.yaml (smoke profile) and a prepared synthetic AFLW set."""
    from facebench.config import Paths, load_params
    from facebench.stages import prepare_dataset, synth_dataset

    root = tmp_path_factory.mktemp("project")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    params = load_params(root / "params.yaml", profile="smoke")
    paths = Paths(root=root)
    synth_dataset(params, "aflw", paths)
    prepare_dataset(params, "aflw", paths)
    return root


@pytest.fixture
def private_project(smoke_project, tmp_path) -> Path:
    """A copy of ``smoke_project`` (params.yaml and the prepared AFLW set) with its own MLflow store and
    runs/, so that what a test trains, reuses or resumes does not depend on what other tests ran."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(smoke_project / "params.yaml", root / "params.yaml")
    shutil.copytree(smoke_project / "data" / "prepared", root / "data" / "prepared")
    return root


@pytest.fixture(scope="session")
def recognition_project(tmp_path_factory):
    """The repo's params.yaml (smoke profile: synthetic CASIA of 6 identities, LFW of 2 folds, one
    experiment per head, ``casia_<head>``) with both sets written and prepared through the dataset stages."""
    from facebench.config import Paths, load_params
    from facebench.stages import prepare_dataset, synth_dataset

    root = tmp_path_factory.mktemp("recognition")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    params = load_params(root / "params.yaml", profile="smoke")
    paths = Paths(root=root)
    for name in ("casia", "lfw"):
        synth_dataset(params, name, paths)
        prepare_dataset(params, name, paths)
    return params, paths
