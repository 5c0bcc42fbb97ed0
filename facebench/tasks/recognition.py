"""Face recognition (CosFace paper): identities as classes, verification on LFW-style pairs.

The shared trainer (facebench/train/ray_trainer.py) calls only these methods. A batch is aligned
crops (uint8, 112x96 or 112x112) and class labels; on the training device the crops are scaled to
[-1, 1] ((x - 127.5) / 128, as SphereFace and CosFace do) and mirrored at random. The model is the
SphereFace residual network with one of the five heads of ``losses/margin.py`` on top: its forward
gives embeddings, or the head's logits when labels are passed, so one DDP forward covers both and
the head's weights train with the backbone. Evaluation embeds every verification image with its
mirror and runs the LFW protocol (``metrics/verification.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facebench.config import ResolvedExperiment
from facebench.data.parquet import read_metadata
from facebench.losses.margin import HEAD_NAMES, make_head
from facebench.metrics.verification import evaluate_pairs
from facebench.tasks import TrainSource

EMBEDDING_DIM = 512


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


class RecognitionTask:
    def __init__(self, exp: ResolvedExperiment, prepared_dir: Path):
        if exp.loss not in HEAD_NAMES:
            raise ValueError(f"{exp.key}: loss {exp.loss!r} is not a recognition head; use one of {HEAD_NAMES}")
        if exp.eval_dataset is None:
            raise ValueError(f"{exp.key}: a recognition experiment needs eval_dataset (an LFW-layout set)")
        self.exp = exp
        self.prepared_dir = Path(prepared_dir)
        self.train_path = self.prepared_dir / "train.parquet"
        self.eval_dir = self.prepared_dir.parent / exp.eval_dataset
        meta = read_metadata(self.train_path)
        self.num_classes = int(meta["num_classes"])
        self.crop = (int(meta["crop_height"]), int(meta["crop_width"]))
        self.encoding = str(meta["image_encoding"])

    # --- what the trainer asks for -------------------------------------------------------------
    def build_model(self) -> nn.Module:
        from facebench.models.sphereface import SphereFaceNet

        params = {k: v for k, v in self.exp.loss_params.items() if k != "weight"}
        if self.exp.model != "sphereface":
            raise ValueError(f"{self.exp.key}: recognition task has no model {self.exp.model!r} (known: sphereface)")
        backbone = SphereFaceNet(depth=self.exp.backbone_depth or 20, embedding_dim=EMBEDDING_DIM, input_size=self.crop)
        return Recognizer(backbone, make_head(self.exp.loss, EMBEDDING_DIM, self.num_classes, **params))

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
        return loss_fn(model(batch["image"], batch["label"]).float(), batch["label"])

    def inference_model(self, model: nn.Module) -> nn.Module:
        return model  # forward(images) gives the embeddings

    def example_input(self) -> np.ndarray:
        return np.zeros((2, 3, *self.crop), dtype=np.float32)

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        return {"val_accuracy": float(self.evaluate(model, device)["lfw"]["accuracy"])}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device, splits: list[str] | None = None) -> dict[str, Any]:
        """The verification protocol on the eval set (image + mirror embeddings, k-fold accuracy, TAR@FAR)."""
        model.eval()

        def embed(crops: np.ndarray) -> np.ndarray:
            x = to_network_input(torch.from_numpy(np.ascontiguousarray(crops)).to(device))
            return model(x).float().cpu().numpy()

        result = evaluate_pairs(embed, self.eval_dir)
        model.train()
        return {"lfw": result}

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
