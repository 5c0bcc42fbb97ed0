"""loss_specs.py is the one table of loss parameters: the constructors refuse exactly what it refuses."""

from __future__ import annotations

import math

import pytest

from facebench.loss_specs import (
    HEADS, HEATMAP_CONFIG_NAMES, HEATMAP_LOSSES, LANDMARK_LOSSES, MTCNN_LOSSES, Range, param_problem,
)
from facebench.papers.awing import loss as heatmap
from facebench.papers.cosface import loss as margin
from facebench.papers.mtcnn import loss as mtcnn
from facebench.papers.wing import loss as landmark


@pytest.mark.parametrize("rule, text", [
    (Range(low=0.0), "> 0"),
    (Range(low=0.0, low_closed=True), ">= 0"),
    (Range(low=0.0, high=1.0, high_closed=True), "in (0, 1]"),
    (Range(low=0.0, low_closed=True, high=math.pi / 2, high_text="pi/2"), "in [0, pi/2)"),
    (Range(low=0.0, integer=True), "a positive integer"),
    (Range(), "a finite number"),
    (Range(flag=True), "0 or 1 (false or true)"),
])
def test_rules_read_as_written(rule, text):
    assert rule.describe() == text


@pytest.mark.parametrize("rule, good, bad", [
    (Range(low=0.0), [1e-9, 5], [0, -1, float("nan"), float("inf"), True, "5"]),
    (Range(low=0.0, high=1.0, high_closed=True), [1.0, 0.5], [0.0, 1.0000001]),
    (Range(low=0.0, integer=True), [1, 4.0], [0, 2.5, -4]),
    (Range(flag=True), [True, False, 0, 1.0], [2, 0.5]),
])
def test_rules_accept_and_refuse(rule, good, bad):
    assert all(rule.accepts(v) for v in good)
    assert not any(rule.accepts(v) for v in bad)


def test_problem_names_the_rule_and_the_value():
    assert param_problem(LANDMARK_LOSSES["wing"], "w", -5.0) == "must be > 0, got -5"
    assert param_problem(LANDMARK_LOSSES["wing"], "w", 10.0) is None
    assert param_problem(LANDMARK_LOSSES["l1"], "w", 10.0) == "unknown parameter; this loss takes no parameters"


def test_the_modules_take_their_names_and_keys_from_the_table():
    from facebench.papers.awing.task import HEATMAP_LOSSES as TASK_HEATMAP_LOSSES

    assert landmark.LOSS_NAMES == ("l2", "l1", "smooth_l1", "wing")
    assert heatmap.HEATMAP_LOSS_NAMES == ("mse", "l1", "wing", "awing")
    assert margin.HEAD_NAMES == ("softmax", "nsl", "sphereface", "cosface", "arcface")
    assert {k: set(v) for k, v in heatmap._LOSS_PARAMS.items()} == {k: set(v) for k, v in HEATMAP_LOSSES.items()}
    assert TASK_HEATMAP_LOSSES == HEATMAP_CONFIG_NAMES


def _just_outside(rule: Range) -> float:
    if rule.integer:
        return 2.5
    if rule.high is not None:
        return rule.high + (0.0 if not rule.high_closed else 1e-6)
    return rule.low - (0.0 if not rule.low_closed else 1e-6)


def _builders():
    """(loss, parameter, rule, build(**kwargs)) for every parameter of the table that has a lower or upper bound."""
    out = []
    for name, params in LANDMARK_LOSSES.items():
        out += [(name, key, rule, lambda name=name, **kw: landmark.make_landmark_loss(name, **kw))
                for key, rule in params.items()]
    for name, params in HEATMAP_LOSSES.items():
        out += [(name, key, rule, lambda name=name, **kw: heatmap.make_heatmap_loss(name, **kw))
                for key, rule in params.items()]
    for name, params in HEADS.items():
        out += [(name, key, rule, lambda name=name, **kw: margin.make_head(name, 8, 4, **kw))
                for key, rule in params.items() if not rule.flag]
    out += [("mtcnn", key, rule, lambda **kw: mtcnn.make_mtcnn_loss("pnet", **kw))
            for key, rule in MTCNN_LOSSES["mtcnn"].items()]
    return [b for b in out if b[2].low is not None or b[2].high is not None]


@pytest.mark.parametrize("loss, key, rule, build", _builders(), ids=lambda v: v if isinstance(v, str) else "")
def test_constructors_refuse_what_the_table_refuses(loss, key, rule, build):
    bad = _just_outside(rule)
    assert not rule.accepts(bad)
    with pytest.raises(ValueError, match=f"{loss}: {key} must be"):
        build(**{key: bad})
    edge = rule.low if rule.low_closed else (rule.high if rule.high_closed else None)
    if edge is not None:
        build(**{key: edge})  # the bound the table allows, the constructor allows too
