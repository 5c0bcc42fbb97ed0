"""MTCNN stage training (Zhang et al., SPL 2016): what a batch is, the step, the evaluation.

A batch is a set of square crops at the stage's input size (P-Net 12, R-Net 24, O-Net 48 px) with
their kind (negative, positive, part, landmark face), box offsets and, for O-Net, five points
(mtcnn/samples.py makes them). The step is the multi-task loss with online hard sample mining
(papers/mtcnn/loss.py). Evaluation scores the stage on its validation crops (face/non-face accuracy,
box and landmark error); the last stage (O-Net) also runs the whole trained cascade on the
validation scenes and reports its average precision, beside the published weights' on the same
scenes (mtcnn/evaluate.py).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from facebench.config import Paths, ResolvedExperiment, dataset_root
from facebench.papers.mtcnn.loss import LANDMARK, NEGATIVE, PART, POSITIVE, make_mtcnn_loss
from facebench.papers.mtcnn.samples import STAGE_SIZE
from facebench.train.task import Description, Task, TrainSource, require_splits

FLIP_POINTS = [1, 0, 2, 4, 3]  # image-left eye <-> image-right eye, nose, mouth corners swap


STAGE_LABEL = {"pnet": "P-Net", "rnet": "R-Net", "onet": "O-Net"}


class DetectionTask(Task):
    def __init__(self, exp: ResolvedExperiment, paths: Paths):
        self.exp = exp
        self.paths = paths
        self.prepared_dir = paths.training_data(exp)  # data/mtcnn/<experiment>
        self.size = STAGE_SIZE[exp.model]
        self.landmarks = exp.model == "onet"
        self.reads: Counter = Counter()
        self.scores_cascade = exp.model == "onet" and bool(exp.cascade)

    def describe(self) -> Description:
        return Description(label=STAGE_LABEL.get(self.exp.model, self.exp.model))

    def _project(self) -> tuple[Paths, Path]:
        """The project's paths and the WIDER root."""
        return self.paths, dataset_root(self.paths, self.exp.dataset, self.exp.dataset_config)

    def input_files(self) -> list[Path]:
        """The stage's crops; O-Net also reads the test scenes (index and images) and the earlier stages."""
        files = [self.prepared_dir / "train.parquet", self.prepared_dir / "val.parquet"]
        if self.scores_cascade:
            from facebench.data.formats.wider import load_scenes

            paths, raw_root = self._project()
            files += [paths.prepared(self.exp.dataset) / "test.parquet"]
            files += [s.image_path for s in load_scenes(paths.prepared(self.exp.dataset), "test", raw_root)]
            files += [paths.model_weights(key) for key in self.exp.cascade]
        return files

    def check_inputs(self) -> None:
        require_splits(self.prepared_dir, ["train.parquet"], "training")
        require_splits(self.prepared_dir, ["val.parquet"], "validation")
        if self.scores_cascade:
            paths, _ = self._project()
            require_splits(paths.prepared(self.exp.dataset), ["test.parquet"], "test")
            for key in self.exp.cascade:
                if not paths.model_weights(key).is_file():
                    raise FileNotFoundError(f"{paths.model_weights(key)}: the trained {key} stage is missing "
                                            f"(O-Net's evaluation runs the whole cascade; train {key} first)")

    # --- what the trainer asks for -------------------------------------------------------------
    def build_model(self) -> nn.Module:
        from facebench.papers.mtcnn.model import ONet, PNet, RNet

        return {"pnet": PNet, "rnet": RNet, "onet": lambda: ONet(dropout=0.25)}[self.exp.model]()

    def inference_model(self, model: nn.Module) -> nn.Module:
        """What MLflow logs: crops -> one (N, K) tensor (MLflow's model wants one output)."""
        return FlatOutputs(model)

    def example_input(self) -> np.ndarray:
        return np.zeros((2, 3, self.size, self.size), dtype=np.float32)

    def build_loss(self) -> nn.Module:
        return make_mtcnn_loss(self.exp.model, hard_ratio=float(self.exp.loss_params.get("hard_ratio", 0.7)))

    def train_source(self) -> TrainSource:
        return TrainSource(self.prepared_dir / "train.parquet", ("image", "kind", "box_target", "landmark_target"),
                           CropArrays(self.size))

    def augment_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """uint8 crops -> the cascade's input ((x - 127.5) / 128, RGB, NCHW), half of them mirrored with
        their targets (ours: the paper does not say whether it flips)."""
        image, box, points = batch["image"], batch["box_target"].float(), batch["landmark_target"].float()
        flip = torch.rand(image.shape[0], device=image.device) < 0.5
        image = torch.where(flip[:, None, None, None], image.flip(2), image)
        mirrored_box = torch.stack((-box[:, 2], box[:, 1], -box[:, 0], box[:, 3]), dim=1)
        box = torch.where(flip[:, None], mirrored_box, box)
        xs, ys = points[:, :5], points[:, 5:]
        mirrored = torch.cat((1.0 - xs[:, FLIP_POINTS], ys[:, FLIP_POINTS]), dim=1)
        points = torch.where(flip[:, None], mirrored, points)
        return {"image": normalise(image), "kind": batch["kind"], "box_target": box, "landmark_target": points}

    @staticmethod
    def _heads(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        out = model(images, logits=True)
        cls, box = out[0].flatten(1), out[1].flatten(1)  # P-Net: (N, C, 1, 1) on a 12x12 crop
        return cls, box, (out[2] if len(out) > 2 else None)

    def training_step(self, model: nn.Module, loss_fn: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cls, box, points = self._heads(model, batch["image"])
        return loss_fn(cls, box, points, batch["kind"], batch["box_target"], batch["landmark_target"])

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        crops = self._crop_metrics(model, device)
        return {"val_accuracy": float(np.mean(crops["correct"]))}

    @torch.no_grad()
    def _crop_metrics(self, model: nn.Module, device: torch.device, batch_size: int = 1024) -> dict[str, list]:
        """Per validation crop: kind, face probability, right or wrong (negatives and positives), box
        error (positives and parts: RMS of the four offsets), landmark error (landmark faces: mean point
        distance over the crop side)."""
        self.reads["val"] += 1
        model.eval()
        table = pq.read_table(self.prepared_dir / "val.parquet")
        arrays = CropArrays(self.size)({c: table.column(c).to_numpy(zero_copy_only=False)
                                        for c in ("image", "kind", "box_target", "landmark_target")})
        out: dict[str, list] = {"kind": [], "prob": [], "correct": [], "box_error": [], "landmark_error": []}
        for start in range(0, len(arrays["kind"]), batch_size):
            part = {k: torch.from_numpy(v[start:start + batch_size]).to(device) for k, v in arrays.items()}
            cls, box, points = self._heads(model, normalise(part["image"]))
            prob = torch.softmax(cls.float(), dim=1)[:, 1]
            kind = part["kind"]
            labelled = (kind == NEGATIVE) | (kind == POSITIVE)
            out["correct"] += ((prob >= 0.5) == (kind == POSITIVE))[labelled].float().tolist()
            out["kind"] += kind.tolist()
            out["prob"] += prob.tolist()
            boxed = (kind == POSITIVE) | (kind == PART)
            out["box_error"] += ((box.float() - part["box_target"]) ** 2).mean(1).sqrt()[boxed].tolist()
            if points is not None:
                marked = kind == LANDMARK
                d = (points.float() - part["landmark_target"])[marked]
                out["landmark_error"] += torch.sqrt(d[:, :5] ** 2 + d[:, 5:] ** 2).mean(1).tolist()
        model.train()
        return out

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        """After the last epoch: the stage on its validation crops (there are no test crops) and, for O-Net,
        the whole trained cascade (and the published one) on the test scenes."""
        result: dict[str, Any] = {"val": self._crop_metrics(model, device)}
        if self.scores_cascade:
            result["cascade"] = self._cascade_metrics(model, device)
        return result

    def _cascade_metrics(self, onet: nn.Module, device: torch.device) -> dict[str, dict[str, float]]:
        from facebench.data.formats.wider import load_scenes, official_keep_lists
        from facebench.papers.mtcnn import default_weights_dir
        from facebench.papers.mtcnn.detect import WIDER, MTCNNDetector
        from facebench.papers.mtcnn.evaluate import evaluate_cascade
        from facebench.papers.mtcnn.model import load_trained

        paths, raw_root = self._project()
        self.reads["test"] += 1
        scenes = load_scenes(paths.prepared(self.exp.dataset), "test", raw_root)
        pnet, rnet, _ = load_trained([paths.model_weights(key) for key in self.exp.cascade])
        onet.eval()
        keep = official_keep_lists(raw_root)  # real WIDER FACE: the eval kit's subsets
        out = {"trained": evaluate_cascade(MTCNNDetector(nets=(pnet, rnet, onet), device=device, **WIDER), scenes,
                                           keep_lists=keep)}
        published = default_weights_dir()
        if (published / "pnet.pt").is_file():
            out["published"] = evaluate_cascade(MTCNNDetector(published, device=device, **WIDER), scenes,
                                                keep_lists=keep)
        onet.train()
        return out

    @staticmethod
    def summarise(evaluation: dict[str, Any]) -> dict[str, float]:
        """val_crop_* on the validation crops (held-out training scenes); test_<weights>_ap_{easy,medium,hard}
        and _landmark_nme for the cascade on the test scenes (trained, and published for reference)."""
        val = evaluation["val"]
        kind = np.asarray(val["kind"])
        prob = np.asarray(val["prob"])
        metrics = {"val_crop_accuracy": float(np.mean(val["correct"])),
                   "val_crop_recall": float(np.mean(prob[kind == POSITIVE] >= 0.5)) if (kind == POSITIVE).any() else 0.0,
                   "val_crop_box_rmse": float(np.mean(val["box_error"])) if val["box_error"] else float("nan")}
        if val["landmark_error"]:
            metrics["val_crop_landmark_nme"] = float(np.mean(val["landmark_error"]))
        for weights, values in evaluation.get("cascade", {}).items():
            metrics.update({f"test_{weights}_{k}": float(v) for k, v in values.items()})
        return metrics

    @staticmethod
    def curves(evaluation: dict[str, Any]) -> dict[str, Any]:
        return {}


class FlatOutputs(nn.Module):
    """A stage's outputs side by side: face probability, the four offsets and, for O-Net, the five points
    as x1, y1, ..., x5, y5 (fractions of the crop)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([o.reshape(o.shape[0], -1) for o in self.net(x)], dim=1)


def normalise(image: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float, as the cascade feeds its networks."""
    return (image.permute(0, 3, 1, 2).float() - 127.5) / 128.0


class CropArrays:
    """Parquet rows -> fixed-shape arrays: raw crops, kinds, box and landmark targets."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = np.frombuffer(b"".join(batch["image"]), np.uint8).reshape(-1, self.size, self.size, 3)
        return {"image": images,
                "kind": np.asarray(batch["kind"], np.int64),
                "box_target": np.stack([np.asarray(v, np.float32) for v in batch["box_target"]]),
                "landmark_target": np.stack([np.asarray(v, np.float32) for v in batch["landmark_target"]])}

