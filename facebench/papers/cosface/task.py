"""Face recognition (CosFace paper): identities as classes, verification on LFW-style pairs.

The shared trainer (facebench/train/ray_trainer.py) calls only these methods. A batch is aligned
crops (uint8, 112x96 or 112x112) and class labels; on the training device the crops are scaled to
[-1, 1] ((x - 127.5) / 128, as SphereFace and CosFace do) and mirrored at random. The model is the
SphereFace residual network with one of the five heads of ``papers/cosface/loss.py`` on top: its forward
gives embeddings, or the head's logits when labels are passed, so one DDP forward covers both and
the head's weights train with the backbone. Evaluation embeds every verification image with its
mirror and runs the LFW protocol (``data/pair_sets.py``, ``metrics/verification.py``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from facebench.config import Paths, ResolvedExperiment
from facebench.data.parquet import read_metadata
from facebench.data.pair_sets import evaluate_pairs
from facebench.papers.cosface.loss import HEAD_NAMES, make_head, make_sharded_head
from facebench.train.partial_fc import ShardedMarginHead
from facebench.train.task import Description, Task, TrainSource, require_splits

EMBEDDING_DIM = 512
VAL_FILES = ("val_images.parquet", "val_pairs.parquet")  # pairs of the training set's held-out identities
TEST_FILES = ("images.parquet", "pairs.parquet")  # the verification set (LFW layout), read once at the end


class Recognizer(nn.Module):
    """Backbone + classification head: ``forward(images)`` -> embeddings, ``forward(images, labels)`` -> logits."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        embeddings = self.backbone(images)
        return embeddings if labels is None else self.head(embeddings.float(), labels)


def to_network_input(crops: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1]."""
    return (crops.permute(0, 3, 1, 2).float() - 127.5) / 128.0


class RecognitionTask(Task):
    def __init__(self, exp: ResolvedExperiment, paths: Paths):
        if exp.loss not in HEAD_NAMES:
            raise ValueError(f"{exp.key}: loss {exp.loss!r} is not a recognition head; use one of {HEAD_NAMES}")
        if exp.eval_dataset is None:
            raise ValueError(f"{exp.key}: a recognition experiment needs eval_dataset (an LFW-layout set)")
        self.exp = exp
        self.prepared_dir = paths.training_data(exp)
        self.train_path = self.prepared_dir / "train.parquet"
        self.eval_dir = paths.prepared(exp.eval_dataset)
        meta = read_metadata(self.train_path)
        self.num_classes = int(meta["num_classes"])
        self.crop = (int(meta["crop_height"]), int(meta["crop_width"]))
        self.encoding = str(meta["image_encoding"])
        self.reads: Counter = Counter()

    def describe(self) -> Description:
        """The backbone's depth, the LFW-layout set verified on, and whether the classifier is split over
        the workers (only when there are several)."""
        depth = self.exp.backbone_depth
        params: dict[str, object] = {} if depth is None else {"backbone_depth": depth}
        params["eval_dataset"] = self.exp.eval_dataset
        if self.exp.shard_head is not None:
            params["shard_head"] = self.exp.shard_head and self.exp.train.num_workers > 1
        return Description(label=f"SphereFace-{depth}" if depth else "SphereFace", params=params)

    def input_files(self) -> list[Path]:
        return ([self.train_path] + [self.prepared_dir / f for f in VAL_FILES]
                + [self.eval_dir / f for f in TEST_FILES])

    def check_inputs(self) -> None:
        require_splits(self.prepared_dir, [self.train_path.name], "training")
        require_splits(self.prepared_dir, list(VAL_FILES), "validation")
        require_splits(self.eval_dir, list(TEST_FILES), "test")

    # --- what the trainer asks for -------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """Backbone + head. Inside a multi-worker run with ``shard_head``, each worker holds 1/R of the
        classifier (``ShardedMarginHead``, softmax by collectives) and DDP syncs only the backbone."""
        from facebench.papers.cosface.model import SphereFaceNet

        params = {k: v for k, v in self.exp.loss_params.items() if k != "weight"}
        if self.exp.model != "sphereface":
            raise ValueError(f"{self.exp.key}: recognition task has no model {self.exp.model!r} (known: sphereface)")
        backbone = SphereFaceNet(depth=self.exp.backbone_depth or 20, embedding_dim=EMBEDDING_DIM, input_size=self.crop)
        if not (self.exp.shard_head and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return Recognizer(backbone, make_head(self.exp.loss, EMBEDDING_DIM, self.num_classes, **params))
        # DDP averages the backbone's gradients over the R workers, while the sharded loss is already the
        # mean over all of them: the head scales its embedding gradients by R to undo the averaging.
        head = make_sharded_head(self.exp.loss, EMBEDDING_DIM, self.num_classes, ddp_grad_compensation=True, **params)
        model = Recognizer(backbone, head)
        print(f"[{self.exp.key}] classifier split over {dist.get_world_size()} workers: classes "
              f"[{head.class_start}, {head.class_end}) of {self.num_classes} on rank {dist.get_rank()}", flush=True)
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            model, [f"head.{name}" for name in head.sharded_names()])  # each worker's slice is its own
        return model

    def build_loss(self) -> nn.Module:
        return nn.CrossEntropyLoss()

    def train_source(self) -> TrainSource:
        return TrainSource(self.train_path, ("image", "identity"),
                           IdentityArrays(self.crop, self.encoding, str(self.train_path)))

    def augment_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Scale to [-1, 1] and mirror half the faces (the papers' only training augmentation)."""
        images = to_network_input(batch["image"])
        if self.exp.train.augment:
            flip = torch.rand(len(images), device=images.device) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(3), images)
        return {"image": images, "label": batch["label"].long()}

    def training_step(self, model: nn.Module, loss_fn: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(batch["image"], batch["label"])  # logits, or the loss itself from a sharded head
        return out if out.dim() == 0 else loss_fn(out.float(), batch["label"])

    # --- checkpoints: always in the whole-head layout, whatever the number of workers ---------------
    def checkpoint_state(self, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
        return whole_head_state(model, opt)

    def restore_checkpoint_state(self, model: nn.Module, opt: torch.optim.Optimizer, state: dict,
                                 optim: dict) -> tuple[dict, dict]:
        return this_workers_state(model, state, optim)

    def inference_model(self, model: nn.Module) -> nn.Module:
        return model  # forward(images) gives the embeddings

    def example_input(self) -> np.ndarray:
        return np.zeros((2, 3, *self.crop), dtype=np.float32)

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Verification accuracy on pairs of the training set's held-out identities (never LFW)."""
        result = self._verify(model, device, self.prepared_dir, VAL_FILES, "val")
        return {"val_accuracy": float(result["accuracy"])}

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        """The verification protocol on the eval set (after the last epoch only)."""
        return {"lfw": self._verify(model, device, self.eval_dir, TEST_FILES, "lfw")}

    @torch.no_grad()
    def _verify(self, model: nn.Module, device: torch.device, folder: Path, files: tuple[str, str],
                split: str) -> dict[str, Any]:
        """Image + mirror embeddings, k-fold accuracy, TAR@FAR and ROC on one pair set."""
        self.reads[split] += 1
        model.eval()

        def embed(crops: np.ndarray) -> np.ndarray:
            x = to_network_input(torch.from_numpy(np.ascontiguousarray(crops)).to(device))
            return model(x).float().cpu().numpy()

        result = evaluate_pairs(embed, folder, images=files[0], pairs=files[1])
        model.train()
        return result

    @staticmethod
    def summarise(evaluation: dict[str, Any]) -> dict[str, float]:
        r = evaluation["lfw"]
        out = {"lfw_accuracy": float(r["accuracy"]), "lfw_accuracy_std": float(r["accuracy_std"])}
        out.update({f"lfw_tar_at_far_{far}": float(tar) for far, tar in r["tar_at_far"].items()})
        return out

    @staticmethod
    def curves(evaluation: dict[str, Any]) -> dict[str, Any]:
        import pandas as pd

        roc = evaluation["lfw"]["roc"]
        return {"roc/lfw.csv": pd.DataFrame({"fpr": roc["fpr"], "tpr": roc["tpr"]})}


class IdentityArrays:
    """Batch function: Parquet rows -> uint8 crops and int64 labels."""

    def __init__(self, crop: tuple[int, int], encoding: str, where: str):
        self.crop, self.encoding, self.where = crop, encoding, where

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from facebench.data.parquet import decode_crops

        images = decode_crops(batch["image"], self.crop[0], self.crop[1], self.encoding, self.where)
        return {"image": images, "label": np.asarray(batch["identity"], dtype=np.int64)}


def whole_head_state(model: Recognizer, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(model state, optimiser state) as one worker with the whole head would hold them, so that
    evaluation, the MLflow model and a resume on any number of workers read the same files. With a
    sharded head this gathers the class rows (a collective: the trainer calls it on every rank)."""
    state, optim = model.state_dict(), opt.state_dict()
    if not isinstance(model.head, ShardedMarginHead):
        return state, optim
    state, optim = _map_head_rows(model, state, optim, model.head.gather_rows)
    # "head.head.weight" -> "head.weight": the unsharded Recognizer's names
    return {k.removeprefix("head.") if k.startswith("head.head.") else k: v for k, v in state.items()}, optim


def this_workers_state(model: Recognizer, state: dict, optim: dict) -> tuple[dict, dict]:
    """The inverse of ``whole_head_state`` for this worker's model: its slice of the whole head."""
    if not isinstance(model.head, ShardedMarginHead):
        return state, optim
    state = {f"head.{k}" if k.startswith("head.") else k: v for k, v in state.items()}
    return _map_head_rows(model, state, optim, model.head.local_rows)


def _map_head_rows(model: Recognizer, state: dict, optim: dict, rows) -> tuple[dict, dict]:
    """``rows`` applied to the sharded head's tensors in a (sharded-layout) model state and to their
    optimiser moments (momentum, Adam's); copies, the live optimiser state is left alone."""
    index = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    state, optim = dict(state), {**optim, "state": dict(optim["state"])}
    for name in model.head.sharded_names():
        key = f"head.{name}"
        state[key] = rows(state[key])
        slot = optim["state"].get(index[key])
        if slot is not None:
            optim["state"][index[key]] = {k: rows(v) if torch.is_tensor(v) and v.dim() else v for k, v in slot.items()}
    return state, optim
