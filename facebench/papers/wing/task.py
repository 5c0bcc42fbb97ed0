"""Landmark coordinate regression (Wing loss paper): what a batch is, the step, the evaluation.

The shared trainer (facebench/train/ray_trainer.py) calls only the methods of ``LandmarkTask``;
it knows nothing of landmarks. Predictions and targets are in pixels of the network input, so
Wing's w and eps keep their published meaning (DESIGN.md, "Protocol traps").
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facebench.config import Paths, ResolvedExperiment
from facebench.data.parquet import ENCODED, decode_crops, read_metadata, read_samples
from facebench.data.transforms import Augment, LandmarkBatchTransform
from facebench.metrics import landmarks as lm
from facebench.papers.wing.loss import make_landmark_loss
from facebench.train.task import Description, Task, TrainSource, require_splits

INPUT_SIZE = {"cnn6": 64, "cnn7": 128, "resnet50": 224}

# Test splits per dataset format, evaluated once after the last epoch: the required ones, then the
# optional ones (AFLW-Frontal: the test faces with every point visible, absent when there are none).
TEST_SPLITS = {"w300": ["full", "common", "challenging"], "aflw_full": ["test"]}
OPTIONAL_TEST_SPLITS = {"w300": ["private"], "aflw_full": ["frontal"]}
VAL_SPLIT = "val"  # held out from the training images by prepare; epochs, sweeps and ASHA are judged on it


MODEL_LABEL = {"cnn6": "CNN-6", "cnn7": "CNN-6/7 (two-stage)", "resnet50": "ResNet-50"}


class LandmarkTask(Task):
    def __init__(self, exp: ResolvedExperiment, paths: Paths, input_size: int | None = None):
        self.exp = exp
        self.prepared_dir = paths.training_data(exp)
        self.metadata = read_metadata(self.prepared_dir / "train.parquet")
        self.num_landmarks = int(self.metadata["num_landmarks"])
        self.flip_permutation = list(self.metadata["flip_permutation"])
        self.input_size = input_size or INPUT_SIZE[exp.model]
        self.crop_size = int(self.metadata["crop_size"])
        self.image_encoding = str(self.metadata.get("image_encoding", ENCODED))
        self.train_transform = LandmarkBatchTransform(self.input_size, self.flip_permutation,
                                                      Augment() if exp.train.augment else None)
        self.test_transform = LandmarkBatchTransform(self.input_size, None, None)
        self.is_w300 = exp.dataset_config.format == "w300"
        fmt = exp.dataset_config.format
        self.test_splits = TEST_SPLITS[fmt] + [s for s in OPTIONAL_TEST_SPLITS[fmt]
                                               if (self.prepared_dir / f"{s}.parquet").exists()]
        self.reads: Counter = Counter()

    def describe(self) -> Description:
        return Description(label=MODEL_LABEL.get(self.exp.model, self.exp.model))

    def input_files(self) -> list[Path]:
        return [self.train_path] + [self.prepared_dir / f"{s}.parquet" for s in [VAL_SPLIT, *self.test_splits]]

    def check_inputs(self) -> None:
        require_splits(self.prepared_dir, [self.train_path.name], "training")
        require_splits(self.prepared_dir, [f"{VAL_SPLIT}.parquet"], "validation")
        require_splits(self.prepared_dir, [f"{s}.parquet" for s in self.test_splits], "test")

    # --- what the trainer asks for -------------------------------------------------------------
    def build_model(self) -> nn.Module:
        if self.exp.model == "cnn6":
            from facebench.papers.wing.model import CNN6

            return CNN6(num_landmarks=self.num_landmarks)
        if self.exp.model == "cnn7":
            from facebench.papers.wing.model import CNN7

            return CNN7(num_landmarks=self.num_landmarks, width=self.exp.cnn7_width or 1.0)
        if self.exp.model == "resnet50":
            from facebench.papers.wing.resnet50 import ResNet50Regressor

            return ResNet50Regressor(num_landmarks=self.num_landmarks)
        raise ValueError(f"landmark task has no model {self.exp.model!r}")

    def inference_model(self, model: nn.Module) -> nn.Module:
        """What MLflow logs: images -> (N, 2L) coordinates in input pixels (here, the network itself)."""
        return model

    def example_input(self) -> np.ndarray:
        """A network input batch, for exporting the model (MLflow's pt2 format traces it)."""
        return np.zeros((2, 3, self.input_size, self.input_size), dtype=np.float32)  # 2: keeps batch dynamic

    def build_loss(self) -> nn.Module:
        params = dict(self.exp.loss_params)
        weight = float(params.pop("weight", 1.0))
        loss = make_landmark_loss(self.exp.loss, **params)
        return ScaledLoss(loss, weight) if weight != 1.0 else loss

    @property
    def train_path(self) -> Path:
        """The training split: the PDB-resampled list when the experiment asks for PDB."""
        return self.prepared_dir / ("train_pdb.parquet" if self.exp.pdb else "train.parquet")

    def train_source(self) -> TrainSource:
        """The raw crops, points and normalisers: only a byte copy off the device; warping happens on it."""
        path = self.train_path
        return TrainSource(path, ("image", "landmarks", "norm"),
                           RawCropArrays(self.crop_size, self.image_encoding, str(path)))

    def augment_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw crops on the training device -> augmented network input (outside autocast, in float32)."""
        return self.train_transform(batch["image"], batch["landmarks"], batch["norm"])

    def training_step(self, model: nn.Module, loss_fn: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pred = model(batch["image"])
        return loss_fn(pred.float(), batch["landmarks"])

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Network input -> (N, 2L) landmark coordinates in input pixels."""
        return model(images).float()

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """The per-epoch validation metric (mean NME on the validation split), for logs, ASHA and sweeps."""
        errors = self._errors(model, device, [VAL_SPLIT])[VAL_SPLIT]
        metrics = {"val_nme": float(np.mean(errors["nme"]))}
        if "nme_ip" in errors:
            metrics["val_nme_ip"] = float(np.mean(errors["nme_ip"]))
        return metrics

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, dict[str, list[float]]]:
        """Per-sample errors on each test split (after the last epoch only)."""
        return self._errors(model, device, self.test_splits)

    @torch.no_grad()
    def _errors(self, model: nn.Module, device: torch.device, splits: list[str],
                batch_size: int = 256) -> dict[str, dict[str, list[float]]]:
        """Per-sample errors on each split, computed in the prepared crop's pixels."""
        model.eval()
        out: dict[str, dict[str, list[float]]] = {}
        for split in splits:
            self.reads[split] += 1
            path = self.prepared_dir / f"{split}.parquet"
            df = read_samples(path)
            preds = []
            for start in range(0, len(df), batch_size):
                rows = df.iloc[start:start + batch_size]
                crops = torch.from_numpy(decode_crops(rows["image"], self.crop_size, self.crop_size,
                                                      self.image_encoding, str(path))).to(device)
                no_points = torch.zeros(len(rows), 2 * self.num_landmarks, device=device)  # only the image is used
                x = self.test_transform(crops, no_points, torch.ones(len(rows), device=device))["image"]
                preds.append(self.predict(model, x).cpu().numpy())
            # input pixels -> crop pixels: the inverse of x -> (x + 0.5) * s / S - 0.5
            ratio = self.crop_size / self.input_size
            pred = (np.concatenate(preds).reshape(len(df), -1, 2) + 0.5) * ratio - 0.5
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


class ScaledLoss(nn.Module):
    """A loss times params.yaml's ``weight``."""

    def __init__(self, loss: nn.Module, weight: float):
        super().__init__()
        self.loss, self.weight = loss, weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.weight * self.loss(pred, target)


class RawCropArrays:
    """Batch function: Parquet rows -> fixed-shape arrays (uint8 crops, float32 points and norms).

    The only work left off the device: a byte copy for raw crops (or a decode for PNG/JPEG ones).
    """

    def __init__(self, crop_size: int, encoding: str, where: str):
        self.crop_size, self.encoding, self.where = crop_size, encoding, where

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = decode_crops(batch["image"], self.crop_size, self.crop_size, self.encoding, self.where)
        landmarks = np.stack([np.asarray(v, dtype=np.float32) for v in batch["landmarks"]])
        return {"image": images, "landmarks": landmarks, "norm": np.asarray(batch["norm"], dtype=np.float32)}
