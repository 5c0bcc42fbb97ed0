"""The recognition task without Ray: its batches, its step (the loss falls) and the LFW evaluation."""

from __future__ import annotations

import pytest
import torch

from facebench.config import RecognitionExperimentConfig, resolve_experiment
from facebench.papers.cosface.loss import HEAD_NAMES
from facebench.papers.cosface.task import Recognizer
from facebench.train.task import build_task


def _batch(task, n: int = 8) -> dict[str, torch.Tensor]:
    from facebench.data.parquet import decode_crops, read_samples

    df = read_samples(task.train_path).iloc[:n]
    crops = decode_crops(df["image"], *task.crop, task.encoding)
    return {"image": torch.from_numpy(crops), "label": torch.as_tensor(df["identity"].to_numpy())}


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_every_head_trains_a_few_steps(recognition_project, head):
    params, paths = recognition_project
    exp = resolve_experiment(params, f"casia_{head}")
    task = build_task(exp, paths)
    assert task.num_classes == 4 and task.crop == (112, 96)  # 6 smoke identities, 2 held out for validation
    torch.manual_seed(0)
    model, loss_fn = task.build_model(), task.build_loss()
    assert isinstance(model, Recognizer)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = task.augment_batch(_batch(task, 6))
    assert batch["image"].shape == (6, 3, 112, 96) and batch["image"].abs().max() <= 1.0
    losses = []
    for _ in range(4):
        loss = task.training_step(model, loss_fn, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]  # the same batch: the step learns it
    assert model.head.weight.grad is not None  # the head trains with the backbone


def test_evaluation_runs_the_lfw_protocol(recognition_project):
    params, paths = recognition_project
    task = build_task(resolve_experiment(params, "casia_cosface"), paths)
    evaluation = task.evaluate(task.build_model(), torch.device("cpu"))
    metrics = task.summarise(evaluation)
    assert 0.0 <= metrics["lfw_accuracy"] <= 1.0 and evaluation["lfw"]["pairs"] == 24
    assert set(metrics) == {"lfw_accuracy", "lfw_accuracy_std", "lfw_tar_at_far_0.001", "lfw_tar_at_far_0.0001"}
    roc = task.curves(evaluation)["roc/lfw.csv"]
    assert roc["fpr"].iloc[0] == 0.0 and roc["tpr"].iloc[-1] == 1.0


def test_a_landmark_loss_is_refused(recognition_project):
    params, paths = recognition_project
    params.recognition_experiments["casia_bad"] = RecognitionExperimentConfig(
        paper="cosface", task="recognition", dataset="casia", model="sphereface", loss="wing", eval_dataset="lfw")
    with pytest.raises(ValueError, match="not a recognition head"):
        build_task(resolve_experiment(params, "casia_bad"), paths)
