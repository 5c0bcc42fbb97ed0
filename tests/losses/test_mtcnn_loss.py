"""MTCNN's multi-task loss against hand-computed cases: which kind trains which task, the task
weights, and online hard sample mining keeping the top 70% of the classification losses."""

from __future__ import annotations

import math

import pytest
import torch

from facebench.papers.mtcnn.loss import LANDMARK, NEGATIVE, PART, POSITIVE, hard_mean, make_mtcnn_loss


def test_hard_mean_keeps_the_largest_seventy_percent():
    losses = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert hard_mean(losses, 0.7).item() == pytest.approx((0.4 + 0.5 + 0.6 + 0.7 + 0.8 + 0.9 + 1.0) / 7)
    assert hard_mean(torch.tensor([2.0, 1.0, 3.0]), 0.7).item() == pytest.approx((3.0 + 2.0 + 1.0) / 3)  # ceil(2.1)
    assert hard_mean(torch.zeros(0), 0.7).item() == 0.0


def test_each_kind_trains_only_its_tasks_with_the_papers_weights():
    kind = torch.tensor([NEGATIVE, POSITIVE, PART, LANDMARK])
    # logits (non-face, face): negative p(face) = 1/(1+e^2), positive p(face) = 1/(1+e^-1)
    logits = torch.tensor([[1.0, -1.0], [0.0, 1.0], [5.0, -5.0], [-5.0, 5.0]])
    box_pred = torch.tensor([[9.0, 9, 9, 9], [0.1, 0, 0, 0], [0, 0.2, 0, 0], [9, 9, 9, 9]])
    box_target = torch.zeros(4, 4)
    lm_pred = torch.zeros(4, 10)
    lm_pred[3, 0] = 0.3
    lm_pred[0, :] = 7.0  # a negative's landmarks never count
    lm_target = torch.zeros(4, 10)
    ce_neg = -math.log(1 / (1 + math.exp(-2.0)))  # -log p(non-face)
    ce_pos = -math.log(1 / (1 + math.exp(-1.0)))
    onet = make_mtcnn_loss("onet", hard_ratio=1.0)
    parts = onet.parts(logits, box_pred, lm_pred, kind, box_target, lm_target)
    assert parts["det"].item() == pytest.approx((ce_neg + ce_pos) / 2)
    assert parts["box"].item() == pytest.approx((0.1 ** 2 + 0.2 ** 2) / 2)
    assert parts["landmark"].item() == pytest.approx(0.3 ** 2)
    total = onet(logits, box_pred, lm_pred, kind, box_target, lm_target).item()
    assert total == pytest.approx(1.0 * parts["det"].item() + 0.5 * parts["box"].item() + 1.0 * 0.09)
    rnet = make_mtcnn_loss("rnet", hard_ratio=1.0)  # no landmark head: det + 0.5 box
    assert rnet(logits, box_pred, None, kind, box_target, lm_target).item() == pytest.approx(
        parts["det"].item() + 0.5 * parts["box"].item())


def test_hard_mining_drops_the_easy_samples_gradient():
    kind = torch.tensor([NEGATIVE] * 10)
    logits = torch.zeros(10, 2)
    logits[:, 0] = torch.arange(10.0)  # sample i: non-face logit i, easier as i grows
    logits.requires_grad_(True)
    loss = make_mtcnn_loss("pnet")(logits, torch.zeros(10, 4), None, kind, torch.zeros(10, 4), torch.zeros(10, 10))
    loss.backward()
    has_grad = logits.grad.abs().sum(1) > 0
    assert has_grad.tolist() == [True] * 7 + [False] * 3


def test_a_batch_without_a_kind_adds_nothing_and_bad_stage_is_named():
    kind = torch.tensor([NEGATIVE, NEGATIVE])
    loss = make_mtcnn_loss("onet")(torch.zeros(2, 2), torch.zeros(2, 4), torch.zeros(2, 10), kind,
                                   torch.zeros(2, 4), torch.zeros(2, 10))
    assert loss.item() == pytest.approx(math.log(2.0))
    with pytest.raises(ValueError, match="qnet"):
        make_mtcnn_loss("qnet")
