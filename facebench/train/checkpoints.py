"""A run's checkpoints on disk: written whole, found newest-first, pruned to the last few.

facebench keeps its own checkpoint folder per run (``runs/<experiment>/<mlflow run id>/checkpoints``)
rather than Ray Train's: Ray resumes from the checkpoint its own snapshot last recorded, which lags the
folders on disk when a job dies between writing a checkpoint and recording it (a run restarted after
epoch 3 with epochs 4 and 5 on disk), and Train's local mode keeps none. Here a checkpoint is a folder
``epoch-000005`` built under a temporary name and renamed into place, so a folder with that name is
complete by construction; resuming takes the highest epoch. The same folder serves a restart of the
worker group inside one job (Ray's FailureConfig) and a re-run of the stage.

Each checkpoint holds the model and optimiser state (``model.pt``, ``optimizer.pt``), ``state.json``
(the epoch, the metrics of every epoch so far, the reads of each split) and, for the last epoch, the
task's final evaluation (``eval.json``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

MODEL = "model.pt"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
EVAL = "eval.json"
_NAME = re.compile(r"^epoch-(\d{6})$")


def epoch_dir(folder: Path, epoch: int) -> Path:
    return Path(folder) / f"epoch-{epoch:06d}"


def complete(folder: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every complete checkpoint in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return sorted(found)


def newest(folder: Path) -> Path | None:
    found = complete(folder)
    return found[-1][1] if found else None


def save(folder: Path, epoch: int, model_state: dict, optim_state: dict, state: dict[str, Any],
         evaluation: dict[str, Any] | None = None) -> Path:
    """Write checkpoint ``epoch`` whole: into a temporary folder, then one rename."""
    final = epoch_dir(folder, epoch)
    tmp = Path(folder) / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model_state, tmp / MODEL)
    torch.save(optim_state, tmp / OPTIMIZER)
    (tmp / STATE).write_text(json.dumps({**state, "epoch": epoch}, sort_keys=True))
    if evaluation is not None:
        (tmp / EVAL).write_text(json.dumps(evaluation))
    if final.exists():  # the same epoch again (a worker group restarted after writing it): same content
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def prune(folder: Path, keep: int) -> list[Path]:
    """Keep the newest ``keep`` complete checkpoints; remove older ones and temporary folders left by a
    writer that died (one process writes a run's checkpoints at a time: rank 0). Returns what went."""
    folder = Path(folder)
    removed = [p for _, p in complete(folder)[:-keep]] if keep > 0 else []
    if folder.is_dir():
        removed += [p for p in folder.iterdir() if p.name.startswith(".tmp-epoch-")]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def load_state(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / STATE).read_text())


def load_eval(path: Path) -> dict[str, Any] | None:
    p = Path(path) / EVAL
    return json.loads(p.read_text()) if p.is_file() else None


def load_model(path: Path) -> dict:
    return torch.load(Path(path) / MODEL, weights_only=True, map_location="cpu")


def load_optimizer(path: Path) -> dict:
    return torch.load(Path(path) / OPTIMIZER, weights_only=True, map_location="cpu")
