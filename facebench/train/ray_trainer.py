"""Ray Train wiring shared by every paper: TorchTrainer, DDP, checkpoints, resume, rank-0 logging.

The trainer knows nothing of any paper. It asks the task (facebench/papers/<paper>/task.py, named by config.TASK_CLASSES) for a model,
a loss, a Ray Dataset of raw batches, the augmentation that turns them into network input on the
training device, a training step, a validation metric (on the validation split) and a final
evaluation (on the test splits, once, after the last epoch). Everything else here is generic:
optimiser and schedule, AMP, per-epoch seeding, a checkpoint per epoch in the run's own folder
(train/checkpoints.py), resuming from the newest one, and per-epoch ``ray.train.report`` (or
``ray.tune.report`` in a sweep's trial).
"""

from __future__ import annotations

import os
import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facebench.config import Paths, ResolvedExperiment, TrainSettings
from facebench.train import checkpoints
from facebench.train.device_cache import DeviceCache

# bookkeeping in reports, not MLflow metrics (test_split_reads: reads of any split but validation so far)
_NOT_LOGGED = ("epoch", "world_size", "resumed_from", "test_split_reads")


def device_name(device: torch.device) -> str:
    """The device as a cost column names it: the GPU's name, or the CPU's model and its cores."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:  # Linux names the CPU model in /proc/cpuinfo; platform.processor() there is often blank
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {model} ({os.cpu_count()} cores)"


# Ray Train 2 redirects a worker's print() into its logger, which Ray also streams to the driver: every
# per-epoch line arrived twice. Workers print plainly (submit.py passes this to cluster jobs too).
WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


# --- local Ray ------------------------------------------------------------------------------------
def ensure_ray(min_cpus: int = 4, dashboard: bool = False) -> None:
    """Connect to RAY_ADDRESS if set, else start a local Ray sized for this machine.

    Logical CPUs are set a little above the physical count so Ray Data's decode tasks are not
    starved by the training workers' reservations on small machines. Sweeps ask for the dashboard
    (bound to 127.0.0.1): Ray Train's detached PlacementGroupCleaner asks the State API, which the
    dashboard serves, whether a controller is still alive. Without it, a Tune trial stopped by ASHA
    leaks its workers' placement group, and the next trials wait forever for those CPUs. A single
    training runs to its end and needs none; it starts without one (3 s of every training stage on
    2 cores) unless FACEBENCH_RAY_DASHBOARD=1 asks for it, to watch the run.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    if on_cluster():
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
    else:
        cpus = max(min_cpus, (os.cpu_count() or 1) + 2)
        dashboard = dashboard or os.environ.get("FACEBENCH_RAY_DASHBOARD") == "1"
        # The cleaner finds the State API through RAY_API_SERVER_ADDRESS, else through whichever local Ray it
        # detects: with two facebench jobs on one machine that can be the other job's, which does not know
        # this job's controller and so reports it dead, and the cleaner then removes this job's workers (seen
        # when the test suite ran beside `dvc repro`). Each local Ray therefore names its own dashboard, on a
        # free port; without a dashboard, a closed port, so the cleaner's query fails here and never elsewhere.
        port = _free_port()
        ray.init(num_cpus=cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1", dashboard_port=port,
                 log_to_driver=True,
                 runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}", **WORKER_ENV}})
    from ray.data import DataContext

    # Ray Data's progress bars are redrawn many times a second and streamed back to the driver: thousands
    # of log lines per stage that a small machine pays for. The per-epoch lines say what is needed.
    DataContext.get_current().enable_progress_bars = False


def on_cluster() -> bool:
    """RAY_ADDRESS names a Ray cluster to join (a job's driver has it set by Ray). A dashboard's http:// address
    is for `facebench submit`'s Jobs API, not for joining: with it, work here starts its own local Ray."""
    address = os.environ.get("RAY_ADDRESS", "")
    return bool(address) and not address.startswith(("http://", "https://"))


def _free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- optimisation ---------------------------------------------------------------------------------
def make_optimizer(model: nn.Module, t: TrainSettings) -> torch.optim.Optimizer:
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    if t.optimizer == "rmsprop":  # the Adaptive Wing paper's optimiser
        return torch.optim.RMSprop(model.parameters(), lr=t.lr, momentum=0.0, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, t: TrainSettings) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: constant, cosine to 1% of lr, or /10 at each epoch in lr_steps."""
    if t.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs, eta_min=t.lr * 0.01)
    if t.lr_schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=t.lr_steps, gamma=0.1)
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


# --- the per-worker loop --------------------------------------------------------------------------
def seed_everything(seed: int, rank: int, epoch: int | None = None) -> None:
    """Seed torch (every device), numpy and random from (seed, rank[, epoch]).

    Seeding again at the start of every epoch makes an epoch's data order, augmentation and dropout a
    function of (seed, rank, epoch) alone, so a run resumed from a checkpoint trains exactly as one
    that never stopped, without saving every generator's state."""
    import random

    import numpy as np

    entropy = [seed, rank] if epoch is None else [seed, rank, epoch]
    state = np.random.SeedSequence(entropy).generate_state(2)
    torch.manual_seed(int(state[0]))
    np.random.seed(int(state[1]))
    random.seed(int(state[0]))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker (or in-process in local mode). ``config`` holds plain data only.

    Rank 0 writes a checkpoint after every epoch into the run's own folder (train/checkpoints.py) and
    only then logs the epoch to MLflow, so a step is never logged without its checkpoint; a restart
    resumes from the newest checkpoint there. A Tune trial (``config["tune"]``) reports each epoch to
    Tune instead, keeps no checkpoints and never reads a test split."""
    from facebench.train.task import build_task

    exp = ResolvedExperiment.model_validate(config["experiment"])
    t = exp.train
    where = _Worker(config)
    rank, world, device = where.rank, where.world, where.device
    if where.node:
        print(f"[{exp.key}] rank {rank} of {world} on node {where.node} ({device})", flush=True)
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(t.seed, rank)

    task = build_task(exp, Paths.model_validate(config["paths"]))
    model = task.build_model()
    opt = make_optimizer(model, t)
    sched = make_scheduler(opt, t)
    folder = Path(config["checkpoint_dir"]) if config.get("checkpoint_dir") else None
    start_epoch, history = 0, []
    resume = checkpoints.newest(folder) if folder is not None else None
    if resume is not None:
        model_state, state = checkpoints.load_model(resume), checkpoints.load_optimizer(resume)
        optim_state = state["optimizer"]
        model_state, optim_state = task.restore_checkpoint_state(model, opt, model_state, optim_state)
        model.load_state_dict(model_state)
        opt.load_state_dict(optim_state)
        sched.load_state_dict(state["scheduler"])
        saved = checkpoints.load_state(resume)
        start_epoch, history = saved["epoch"], saved["history"]
        task.reads.update(saved.get("reads", {}))
        if rank == 0:
            print(f"[{exp.key}] resuming from {resume} (after epoch {start_epoch})", flush=True)
    restarted = start_epoch > int(config.get("first_epoch") or 0)  # Ray Train restarted this worker group
    model = where.prepare_model(model)
    loss_fn = task.build_loss().to(device)
    logger = _RankZeroLogger(config.get("tracking_uri"), config.get("run_id")) if rank == 0 else None
    if logger is not None and restarted:  # once per restart: the epochs its checkpoint holds, and the restart
        logger.restarted(history, start_epoch)
    amp = t.amp and device.type == "cuda"
    cache = DeviceCache(int(t.device_cache_gib * 2**30))
    if config.get("direct"):  # this rank's rows straight from Parquet onto the device (see make_trainer)
        shard_arrays = task.train_source().read_shard(rank, world)
        cache.fill({k: torch.from_numpy(v if v.flags.writeable else v.copy()).to(device) for k, v in shard_arrays.items()})
        if rank == 0:
            print(f"[{exp.key}] device cache: {cache.note} (read from Parquet; {world} shard(s))", flush=True)
        cache.note = ""
    else:
        shard = where.dataset_shard(task, exp)

    for epoch in range(start_epoch, t.epochs):
        seed_everything(t.seed, rank, epoch + 1)
        model.train()
        started, seen = time.perf_counter(), 0
        loss_sum = torch.zeros((), device=device)  # summed on the device: float() per step would stall the GPU
        if cache.ready:
            batches = cache.batches(t.batch_size)
        else:  # stream from Ray Data (recording the shard while the cache is on)
            batches = shard.iter_torch_batches(batch_size=t.batch_size, device=device, drop_last=False,
                                               prefetch_batches=t.prefetch_batches,
                                               local_shuffle_buffer_size=t.batch_size * t.shuffle_buffer_batches or None,
                                               local_shuffle_seed=t.seed * 100_003 + rank * 1_009 + epoch)
            if cache.max_bytes > 0:
                batches = cache.record(batches)
        for batch in batches:
            if next(iter(batch.values())).shape[0] < t.batch_size:
                continue  # the last partial batch (kept in the cache, not trained on: equal steps on every rank)
            batch = task.add_targets(task.augment_batch(batch))  # on the device, in float32, outside autocast
            with torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext():
                loss = task.training_step(model, loss_fn, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n = next(iter(batch.values())).shape[0]
            seen += n
            loss_sum += loss.detach().float() * n
        sched.step()
        if cache.note and rank == 0:
            print(f"[{exp.key}] device cache: {cache.note}", flush=True)
            cache.note = ""
        elapsed = time.perf_counter() - started
        done = epoch + 1
        last = done == t.epochs
        metrics: dict[str, float] = {
            "epoch": done,
            "train_loss": float(loss_sum) / max(seen, 1),
            "images_per_s": seen * world / max(elapsed, 1e-9),
            "train_s": elapsed,  # the epoch's training steps; epoch_s adds validation (the cost columns)
            "lr": opt.param_groups[0]["lr"],
            "world_size": world,
            "resumed_from": start_epoch,
        }
        if device.type == "cuda":
            metrics["gpu_peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        if folder is not None:  # every rank: a task whose model is split over the workers gathers it here
            model_state, optim_state = task.checkpoint_state(unwrap(model), opt)
        if rank == 0:
            if done % t.val_every == 0 or last:
                metrics.update(task.validate(unwrap(model), device))
            evaluation = task.evaluate(unwrap(model), device) if last and config.get("evaluate_test", True) else None
            metrics["test_split_reads"] = sum(n for split, n in task.reads.items() if split != "val")
            metrics["epoch_s"] = time.perf_counter() - started
            history.append(dict(metrics))
            if folder is not None:
                checkpoints.save(folder, done, model_state, {"optimizer": optim_state, "scheduler": sched.state_dict()},
                                 {"history": history, "reads": dict(task.reads),
                                  "device": f"{device_name(device)} x{world}"}, evaluation)
                checkpoints.prune(folder, t.keep_checkpoints)
            logger.log(metrics, step=done)
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k not in _NOT_LOGGED)
            print(f"[{exp.key}] epoch {done}/{t.epochs} {shown}", flush=True)
        where.report(metrics)


class _Worker:
    """Where the loop runs: a Ray Train worker (rank, device and DDP from Ray Train), or a Tune trial's own
    process (rank 0 of 1; Ray Train's context is not available inside Tune), which reports to Tune."""

    def __init__(self, config: dict[str, Any]):
        self.tune = bool(config.get("tune"))
        if self.tune:
            use_gpu = config["experiment"]["train"]["use_gpu"] and torch.cuda.is_available()
            self.rank, self.world = 0, 1
            self.device = torch.device("cuda" if use_gpu else "cpu")
        else:
            import ray.train
            import ray.train.torch

            ctx = ray.train.get_context()
            self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
            self.device = ray.train.torch.get_device()
        self.node = self._node() if not self.tune and self.world > 1 else ""

    @staticmethod
    def _node() -> str:
        """The Ray node this worker runs on (its id), to see where a worker group landed."""
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""

    def prepare_model(self, model: nn.Module) -> nn.Module:
        if self.tune:
            return model.to(self.device)
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def dataset_shard(self, task, exp: ResolvedExperiment):
        """The streamed training split: this worker's Ray Data shard (a trial streams the whole split)."""
        if self.tune:
            return task.train_source().ray_dataset(exp.train.cache_dataset, exp.key, seed=exp.train.seed).iterator()
        import ray.train

        return ray.train.get_dataset_shard("train")

    def report(self, metrics: dict[str, float]) -> None:
        if self.tune:
            import ray.tune

            ray.tune.report(metrics)  # blocks until Tune asks for more: a trial ASHA stops ends here
        else:
            import ray.train

            ray.train.report(metrics)


class _RankZeroLogger:
    """Per-epoch metrics into the driver's MLflow run; a no-op when no run was given."""

    def __init__(self, uri: str | None, run_id: str | None):
        self.uri, self.run_id = uri, run_id

    def _client(self):
        if not (self.uri and self.run_id):
            return None
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.uri)

    def log(self, metrics: dict[str, float], step: int) -> None:
        client = self._client()
        if client is not None:
            from facebench.tracking import log_metrics

            log_metrics(client, self.run_id, loggable(metrics), step)

    def restarted(self, history: list[dict[str, float]], epoch: int) -> None:
        """After Ray Train restarted the worker group: the checkpoint's epochs MLflow lacks (the group died
        between a checkpoint and its log line), then ``worker_restarts`` = 1 at the epoch it resumed from."""
        client = self._client()
        if client is not None:
            from facebench.tracking import log_metrics

            log_missing_epochs(client, self.run_id, history)
            log_metrics(client, self.run_id, {"worker_restarts": 1.0}, step=epoch)
            print(f"worker group restarted: resuming after epoch {epoch} in MLflow run {self.run_id}", flush=True)


def log_missing_epochs(client, run_id: str, history: list[dict[str, float]]) -> None:
    """Epochs a checkpoint's history holds but the MLflow run lacks (the job died between writing the
    checkpoint and logging it): logged now, so every step is logged once."""
    from facebench.tracking import log_metrics, logged_steps

    logged = logged_steps(client, run_id, "train_loss")
    for metrics in history:
        if int(metrics["epoch"]) not in logged:
            log_metrics(client, run_id, loggable(metrics), step=int(metrics["epoch"]))


def loggable(metrics: dict[str, float]) -> dict[str, float]:
    """An epoch's metrics as MLflow keeps them (without the bookkeeping)."""
    return {k: v for k, v in metrics.items() if k not in _NOT_LOGGED}


# --- the driver side ------------------------------------------------------------------------------
@dataclass
class TrainOutcome:
    metrics: dict[str, float]  # the last epoch's metrics
    evaluation: dict[str, Any]  # the task's final evaluation (from the last checkpoint)
    checkpoint_dir: Path
    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]]  # every epoch's metrics, resumed epochs included
    device: str  # what trained it, as rank 0 named it: "<GPU or CPU model> x<workers>" ("" before this was kept)

    def cost(self) -> dict[str, float]:
        """What the training cost: wall time of its epochs (training and validation, summed over resumes),
        training images/s over all epochs and, on GPUs, GPU-hours (wall time x workers)."""
        wall = sum(float(e.get("epoch_s", 0.0)) for e in self.history)
        train = sum(float(e.get("train_s", 0.0)) for e in self.history)
        if wall <= 0 or train <= 0:
            return {}  # trained before these were measured
        images = sum(float(e["images_per_s"]) * float(e["train_s"]) for e in self.history)
        cost = {"train_wall_s": wall, "train_images_per_s": images / train}
        if self.device and not self.device.startswith("CPU"):
            cost["gpu_hours"] = wall * float(self.history[-1].get("world_size", 1)) / 3600.0
        return cost


def loop_config(exp: ResolvedExperiment, paths: Paths, run_dir: Path | None, workers: int, *,
                tracking_uri: str | None = None, run_id: str | None = None, tune: bool = False) -> dict[str, Any]:
    """What ``train_loop_per_worker`` is given (plain data: it crosses processes). ``first_epoch`` is where
    the run stands as the trainer starts: a worker that finds a newer checkpoint was restarted by Ray Train."""
    from facebench.train.task import build_task

    t = exp.train
    newest = checkpoints.newest(Path(run_dir) / "checkpoints") if run_dir is not None else None
    return {
        "experiment": exp.model_dump(mode="json"),
        "paths": paths.model_dump(mode="json"),
        "checkpoint_dir": str((Path(run_dir) / "checkpoints").resolve()) if run_dir is not None else None,
        "first_epoch": checkpoints.load_state(newest)["epoch"] if newest is not None else 0,
        "tracking_uri": tracking_uri,
        "run_id": run_id,
        "threads": t.cpus_per_worker or max(1, (os.cpu_count() or 1) // workers),
        "direct": in_memory(build_task(exp, paths).train_source(), t, workers),
        "tune": tune,
        "evaluate_test": not tune,
    }


def trial_config(exp: ResolvedExperiment, paths: Paths) -> dict[str, Any]:
    """A Tune trial's loop: one process, no checkpoints, no MLflow (the sweep's driver records what Tune
    sees), no test split."""
    return loop_config(exp, paths, None, 1, tune=True)


def runs_locally(t: TrainSettings) -> bool:
    """One CPU worker trains in this process (Ray Train's local mode): the same loop without a worker
    group, a placement group or, for a set that fits in memory, a Ray at all (about 20 s less per stage
    on 2 cores). Several workers or a GPU start Ray Train's workers."""
    return t.local_mode and t.num_workers == 1 and not t.use_gpu


def make_trainer(exp: ResolvedExperiment, paths: Paths, run_dir: Path, *,
                 tracking_uri: str | None = None, run_id: str | None = None):
    """A TorchTrainer for one experiment. ``run_dir`` holds the run's checkpoints (``checkpoints/``, resumed
    from) and Ray's own files (``ray/``)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from facebench.train.task import build_task

    t = exp.train
    local = runs_locally(t)
    config = loop_config(exp, paths, run_dir, t.num_workers, tracking_uri=tracking_uri, run_id=run_id)
    resources = {"CPU": config["threads"], **({"GPU": 1} if t.use_gpu else {})}
    datasets = {} if config["direct"] else {
        "train": build_task(exp, paths).train_source().ray_dataset(t.cache_dataset, exp.key, seed=t.seed)}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=0 if local else t.num_workers, use_gpu=t.use_gpu,
                                               resources_per_worker=None if local else resources,
                                               placement_strategy=t.placement_strategy),
        run_config=ray.train.RunConfig(name="ray", storage_path=str(Path(run_dir).resolve()),
                                       failure_config=ray.train.FailureConfig(
                                           max_failures=0 if local else max_failures(t))),
        datasets=datasets,
    )


def max_failures(t: TrainSettings) -> int:
    """Worker-group restarts allowed: the setting, else 3 on a cluster and none on this machine (where a
    failure is a bug to see at once, not a lost node)."""
    if t.max_failures is not None:
        return t.max_failures
    return 3 if on_cluster() else 0


def in_memory(source, t: TrainSettings, workers: int | None = None) -> bool:
    """Whether each worker reads its shard straight from Parquet into the device cache (a set that
    fits, the embedded default and the landmark sets at paper size) or streams Ray Data shards."""
    limit = t.device_cache_gib * 2**30
    return t.cache_dataset and limit > 0 and source.shard_nbytes(workers or t.num_workers) <= limit


def fit(exp: ResolvedExperiment, paths: Paths, run_dir: Path, *,
        tracking_uri: str | None = None, run_id: str | None = None) -> TrainOutcome:
    """Train one experiment on Ray (resuming from the newest checkpoint in ``run_dir``) and return its
    final checkpoint's contents."""
    folder = Path(run_dir) / "checkpoints"
    final = checkpoints.newest(folder)
    if final is None or checkpoints.load_state(final)["epoch"] < exp.train.epochs:
        from facebench.train.task import build_task

        if not (runs_locally(exp.train) and in_memory(build_task(exp, paths).train_source(), exp.train, 1)):
            ensure_ray()  # Ray Train's workers, or Ray Data streaming the split
        make_trainer(exp, paths, run_dir, tracking_uri=tracking_uri, run_id=run_id).fit()
        final = checkpoints.newest(folder)
    return outcome_of(exp, final)


def outcome_of(exp: ResolvedExperiment, final: Path | None) -> TrainOutcome:
    """A finished run's outputs from its last checkpoint (an error if it has none)."""
    if final is None or checkpoints.load_state(final)["epoch"] != exp.train.epochs:
        raise RuntimeError(f"{exp.key}: no checkpoint of the last epoch ({exp.train.epochs}) in "
                           f"{final.parent if final is not None else 'the run folder'}")
    state = checkpoints.load_state(final)
    return TrainOutcome(metrics=state["history"][-1], evaluation=checkpoints.load_eval(final) or {},
                        checkpoint_dir=final, state_dict=checkpoints.load_model(final), history=state["history"],
                        device=state.get("device", ""))
