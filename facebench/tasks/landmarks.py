"""Landmark coordinate regression (Wing loss paper): what a batch is, the step, the evaluation.

The shared trainer (facebench/train/ray_trainer.py) calls only the methods of ``LandmarkTask``;
it knows nothing of landmarks. Predictions and targets are in pixels of the network input, so
Wing's w and eps keep their published meaning (DESIGN.md, "Protocol traps").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from facebench.config import ResolvedExperiment
from facebench.data.parquet import read_metadata, read_samples
from facebench.data.transforms import Augment, LandmarkBatchTransform, apply_affine, resize_matrix
from facebench.losses.landmark import make_landmark_loss
from facebench.metrics import landmarks as lm

INPUT_SIZE = {"cnn6": 64}

# Test splits per dataset format, the first one is validated every `val_every` epochs.
TEST_SPLITS = {"w300": ["full", "common", "challenging"], "aflw_full": ["test", "frontal"]}


class LandmarkTask:
    def __init__(self, exp: ResolvedExperiment, prepared_dir: Path):
        self.exp = exp
        self.prepared_dir = Path(prepared_dir)
        self.metadata = read_metadata(self.prepared_dir / "train.parquet")
        self.num_landmarks = int(self.metadata["num_landmarks"])
        self.flip_permutation = list(self.metadata["flip_permutation"])
        self.input_size = INPUT_SIZE[exp.model]
        self.is_w300 = exp.dataset_config.format == "w300"
        self.test_splits = [s for s in TEST_SPLITS[exp.dataset_config.format]
                            if (self.prepared_dir / f"{s}.parquet").exists()]

    # --- what the trainer asks for -------------------------------------------------------------
    def build_model(self) -> nn.Module:
        if self.exp.model == "cnn6":
            from facebench.models.cnn6 import CNN6

            return CNN6(num_landmarks=self.num_landmarks)
        raise ValueError(f"landmark task has no model {self.exp.model!r}")

    def example_input(self) -> np.ndarray:
        """A network input batch, for exporting the model (MLflow's pt2 format traces it)."""
        return np.zeros((2, 3, self.input_size, self.input_size), dtype=np.float32)  # 2: keeps batch dynamic

    def build_loss(self) -> nn.Module:
        params = dict(self.exp.loss_params)
        weight = float(params.pop("weight", 1.0))
        loss = make_landmark_loss(self.exp.loss, **params)
        return _Scaled(loss, weight) if weight != 1.0 else loss

    def train_dataset(self):
        """Ray Dataset of network-ready batches: decode and augmentation run in Ray Data tasks."""
        import ray.data

        name = "train_pdb.parquet" if self.exp.pdb else "train.parquet"
        path = self.prepared_dir / name
        if not path.exists():
            raise FileNotFoundError(f"{path}: prepared training split not found (run `facebench prepare`)")
        augment = Augment() if self.exp.train.augment else None
        transform = LandmarkBatchTransform(self.input_size, self.flip_permutation, augment)
        ds = ray.data.read_parquet(str(path.resolve()), columns=["image", "landmarks", "norm"])
        # Block order is shuffled here and rows within a buffer by the trainer: a full all-to-all
        # shuffle costs more than it buys for a few thousand crops.
        return ds.randomize_block_order().map_batches(transform, batch_format="numpy", batch_size=64)

    def training_step(self, model: nn.Module, loss_fn: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pred = model(batch["image"])
        return loss_fn(pred.float(), batch["landmarks"])

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """The per-epoch validation metric (mean NME on the first test split), for logs and Tune."""
        split = self.test_splits[0]
        errors = self.evaluate(model, device, [split])[split]["nme"]
        return {"val_nme": float(np.mean(errors))}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device, splits: list[str] | None = None,
                 batch_size: int = 256) -> dict[str, dict[str, list[float]]]:
        """Per-sample errors on each test split, computed in the prepared crop's pixels."""
        model.eval()
        out: dict[str, dict[str, list[float]]] = {}
        transform = LandmarkBatchTransform(self.input_size, None, None)
        for split in splits or self.test_splits:
            df = read_samples(self.prepared_dir / f"{split}.parquet")
            preds = []
            for start in range(0, len(df), batch_size):
                rows = df.iloc[start:start + batch_size]
                batch = transform({"image": rows["image"].to_numpy(), "landmarks": rows["landmarks"].to_numpy(),
                                   "norm": rows["norm"].to_numpy()})
                x = torch.from_numpy(batch["image"]).to(device)
                preds.append(model(x).float().cpu().numpy())
            pred = np.concatenate(preds).reshape(len(df), -1, 2)
            crop = int(df["height"].iloc[0])
            back = cv2.invertAffineTransform(resize_matrix(crop, self.input_size))
            pred = np.stack([apply_affine(p, back) for p in pred])
            gt = np.stack([np.asarray(v, dtype=np.float64).reshape(-1, 2) for v in df["landmarks"]])
            norm = df["norm"].to_numpy(dtype=np.float64)
            errors = {"nme": lm.nme_per_sample(pred, gt, norm).tolist(),
                      "sample_id": df["sample_id"].tolist()}
            if self.is_w300:
                errors["nme_ip"] = lm.nme_per_sample(pred, gt, lm.inter_pupil(gt)).tolist()
            out[split] = errors
        model.train()
        return out

    @staticmethod
    def summarise(evaluation: dict[str, dict[str, list[float]]]) -> dict[str, float]:
        """Flat MLflow metrics: test_<split>_{nme, auc08, fr08, auc10, fr10} (+ nme_ip on 300-W)."""
        metrics: dict[str, float] = {}
        for split, errs in evaluation.items():
            for name, value in lm.summarise(np.asarray(errs["nme"])).items():
                metrics[f"test_{split}_{name}"] = float(value)
            if "nme_ip" in errs:
                metrics[f"test_{split}_nme_ip"] = float(np.mean(errs["nme_ip"]))
        return metrics

    @staticmethod
    def curves(evaluation: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
        """CED curve per split (primary normaliser), as tables for plots and artifacts."""
        import pandas as pd

        tables = {}
        for split, errs in evaluation.items():
            thresholds, fraction = lm.ced_curve(np.asarray(errs["nme"]), max_threshold=0.1, num=101)
            tables[f"ced/{split}.csv"] = pd.DataFrame({"threshold": thresholds, "fraction": fraction})
        return tables


class _Scaled(nn.Module):
    def __init__(self, loss: nn.Module, weight: float):
        super().__init__()
        self.loss, self.weight = loss, weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.weight * self.loss(pred, target)
