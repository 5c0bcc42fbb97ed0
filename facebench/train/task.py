"""What a task is to the trainer: the ``Task`` protocol, its training rows (``TrainSource``), and
``build_task``, which finds an experiment's task by the name config.TASK_CLASSES gives it.

A task (one per paper, facebench/papers/<paper>/task.py) says what a batch is, the training step and
the evaluation; the trainer (train/ray_trainer.py) knows no paper.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facebench.config import TASK_CLASSES, Paths, ResolvedExperiment
from facebench.train.identity import task_module


@dataclass(frozen=True)
class Description:
    """How a task presents a run: what the report and the MLflow run call it, beyond the shared fields
    (dataset, model, loss, PDB, schedule) every run has.

    ``label``: the system as a table row or a legend names it ("CNN-6", "Hourglass, no boundary");
    ``variant``: what an ablation turned off ("" for the full model); ``params``: the task's own settings,
    logged as the run's params (heatmap settings, backbone depth, verification set, head sharding)."""

    label: str
    variant: str = ""
    params: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    """Everything the trainer (train/ray_trainer.py) and the experiment driver (train/experiment.py) ask of
    a task. A task class subclasses this protocol, so the optional hooks below get their default bodies.

    ``reads`` counts the reads of each split (validation every few epochs, test splits once at the end),
    so a test can show that no test split is read before training ends. In a training step the trainer
    calls ``augment_batch``, then ``add_targets``, then ``training_step``."""

    reads: Counter

    def describe(self) -> Description: ...  # the run's label, variant and task params
    def input_files(self) -> list[Path]: ...  # every file the task reads: the run identity's data
    def check_inputs(self) -> None: ...  # the splits it needs exist and are not empty (before Ray starts)
    def build_model(self) -> Any: ...
    def build_loss(self) -> Any: ...
    def train_source(self) -> TrainSource: ...
    def augment_batch(self, batch: dict) -> dict: ...  # raw rows on the training device -> network input
    def training_step(self, model: Any, loss_fn: Any, batch: dict) -> Any: ...
    def validate(self, model: Any, device: Any) -> dict[str, float]: ...  # the validation split only
    def evaluate(self, model: Any, device: Any) -> dict[str, Any]: ...  # the test splits, after the last epoch
    def summarise(self, evaluation: dict[str, Any]) -> dict[str, float]: ...
    def curves(self, evaluation: dict[str, Any]) -> dict[str, Any]: ...
    def inference_model(self, model: Any) -> Any: ...
    def example_input(self) -> Any: ...

    # --- optional hooks, with what a task gets when it does not define them ---------------------------
    def add_targets(self, batch: dict) -> dict:
        """Network input -> the same plus what ``training_step`` needs that augmentation does not give
        (heatmap tasks draw their target maps here, from the warped landmarks). Default: nothing to add."""
        return batch

    def checkpoint_state(self, model: Any, opt: Any) -> tuple[dict, dict]:
        """The model's and the optimizer's state as a checkpoint stores them (called on every rank: a task
        whose model is split over the workers gathers it here). Default: the state dicts as they are."""
        return model.state_dict(), opt.state_dict()

    def restore_checkpoint_state(self, model: Any, opt: Any, model_state: dict, optim_state: dict
                                 ) -> tuple[dict, dict]:
        """A checkpoint's states -> what this worker's model and optimizer load. Default: as stored."""
        return model_state, optim_state


def require_splits(folder: Path, files: list[str], what: str) -> None:
    """An error naming each expected split file of ``folder`` that is missing or has no rows."""
    for name in files:
        path = Path(folder) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the {what} split {Path(name).stem!r} is missing from {folder} "
                                    f"(run the stage that prepares it)")
        if pq.ParquetFile(path).metadata.num_rows == 0:
            raise ValueError(f"{path}: the {what} split {Path(name).stem!r} in {folder} has no rows")


def build_task(exp: ResolvedExperiment, paths: Paths) -> Task:
    """The task of ``exp``: the class ``TASK_CLASSES`` (config.py) names for its ``task`` field, reading
    its files where ``paths`` says (its training data is ``paths.training_data(exp)``).

    The trainer reaches a paper's code only through this name, so shared code imports no paper
    (tests/test_layers.py); the table in config.py is the one place that says where each task lives."""
    module = task_module(exp.task)  # an unknown task is an error naming the known ones
    return getattr(importlib.import_module(module), TASK_CLASSES[exp.task].rsplit(".", 1)[1])(exp, paths)


@dataclass(frozen=True)
class TrainSource:
    """Where a task's training rows come from: a Parquet split, the columns it reads, and the function
    that turns a batch of rows into fixed-shape numpy arrays (raw crops, points, labels).

    The trainer picks one of two ways in (train/ray_trainer.py):
    - ``read_shard``: a split that fits in the device cache is read by each worker straight from Parquet
      (its rank's rows) and kept on the device. No Ray Data: on 2 cores its start-up (read tasks, a split
      coordinator) was 15-20 s of every training stage, for a read that takes well under a second.
    - ``ray_dataset``: a larger split streams through Ray Data shards every epoch.
    """

    path: Path
    columns: tuple[str, ...]
    to_arrays: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

    def check(self) -> None:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: prepared training split not found (run `facebench prepare`)")

    def num_rows(self) -> int:
        self.check()
        return pq.ParquetFile(self.path).metadata.num_rows

    def shard_nbytes(self, world: int) -> int:
        """Bytes of one worker's arrays, from the first row (rows are fixed-shape after ``to_arrays``)."""
        self.check()
        first = next(pq.ParquetFile(self.path).iter_batches(batch_size=1, columns=list(self.columns)))
        row = self.to_arrays({c: first.column(c).to_numpy(zero_copy_only=False) for c in self.columns})
        return sum(v.nbytes for v in row.values()) * -(-self.num_rows() // world)

    def read_shard(self, rank: int, world: int) -> dict[str, np.ndarray]:
        """Rows rank, rank + world, ...; the last shards wrap round to the first rows (as torch's
        DistributedSampler pads), so every rank has the same number of rows and of steps."""
        table = pq.read_table(self.path, columns=list(self.columns))
        n = table.num_rows
        if n == 0:
            raise ValueError(f"{self.path}: the training split has no rows")
        index = (rank + world * np.arange(-(-n // world))) % n
        table = table.take(pa.array(index))
        return self.to_arrays({c: table.column(c).to_numpy(zero_copy_only=False) for c in self.columns})

    def ray_dataset(self, cache: bool, label: str, seed: int = 0):
        """The split as a Ray Dataset. With ``cache``, kept in Ray's object store (Parquet read once per
        training, not per epoch; measured 200 -> 9,000 images/s on 2 cores) in small blocks, whose order
        is shuffled by ``seed`` (rows within a buffer are shuffled by the trainer, seeded per epoch: a full
        all-to-all shuffle costs more than it buys for a few thousand crops). Which worker gets which block
        depends on timing (Ray Data's streaming split): streamed training is not bit-for-bit repeatable."""
        import ray.data

        self.check()
        ds = ray.data.read_parquet(str(self.path.resolve())).select_columns(list(self.columns))
        ds = ds.map_batches(self.to_arrays, batch_format="numpy", batch_size=256)
        if cache:
            ds = ds.repartition(target_num_rows_per_block=128).materialize()
            print(f"[{label}] cached {ds.count()} training rows ({ds.size_bytes() / 2**20:.0f} MiB) in Ray's "
                  "object store", flush=True)
        return ds.randomize_block_order(seed=seed)
