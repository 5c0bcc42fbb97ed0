"""The parameters every loss accepts and their ranges, in plain Python (no torch).

One table serves two readers: the loss constructors (landmark.py, heatmap.py, margin.py, mtcnn.py)
check their arguments with ``check_param``, and facebench/config.py checks params.yaml's ``losses``
and sweep grids with the same rules when the file loads. So a value a training worker would refuse
is refused before Ray starts, with the key named, and the two can never disagree. Importing this
module must stay cheap: ``load_params`` imports it on every command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """Which numbers a parameter takes: finite, between optional bounds, optionally whole or 0/1."""

    low: float | None = None
    low_closed: bool = False  # True: low itself is allowed
    high: float | None = None
    high_closed: bool = False
    high_text: str | None = None  # how to print ``high`` (e.g. "pi/2")
    integer: bool = False
    flag: bool = False  # a switch: 0 (false) or 1 (true)

    def describe(self) -> str:
        """The rule in words, as an error message ends: "> 0", "in (0, 1]", "a positive integer"."""
        if self.flag:
            return "0 or 1 (false or true)"
        if self.integer and self.low == 0 and not self.low_closed and self.high is None:
            return "a positive integer"
        high = self.high_text or (f"{self.high:g}" if self.high is not None else None)
        if self.low is not None and high is not None:
            text = f"in {'[' if self.low_closed else '('}{self.low:g}, {high}{']' if self.high_closed else ')'}"
        elif self.low is not None:
            text = f"{'>=' if self.low_closed else '>'} {self.low:g}"
        elif high is not None:
            text = f"{'<=' if self.high_closed else '<'} {high}"
        else:
            text = "a finite number"
        return f"an integer {text}" if self.integer else text

    def accepts(self, value: object) -> bool:
        if isinstance(value, str) or (isinstance(value, bool) and not self.flag):
            return False  # a number, not its text; YAML's true/false only for a switch
        try:
            x = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        if not math.isfinite(x):
            return False
        if self.flag:
            return x in (0.0, 1.0)
        if self.integer and x != int(x):
            return False
        if self.low is not None and (x < self.low or (x == self.low and not self.low_closed)):
            return False
        if self.high is not None and (x > self.high or (x == self.high and not self.high_closed)):
            return False
        return True


POSITIVE = Range(low=0.0)
NON_NEGATIVE = Range(low=0.0, low_closed=True)
FINITE = Range()

# The multiplier the landmark and heatmap tasks put on their loss (params.yaml ``weight``).
WEIGHT = {"weight": POSITIVE}

# make_landmark_loss's names and keyword parameters (papers/wing/loss.py), in pixels of the input.
LANDMARK_LOSSES: dict[str, dict[str, Range]] = {
    "l2": {}, "l1": {}, "smooth_l1": {},
    "wing": {"w": POSITIVE, "eps": POSITIVE},
}

# make_heatmap_loss's names and keyword parameters (papers/awing/loss.py).
HEATMAP_LOSSES: dict[str, dict[str, Range]] = {
    "mse": {}, "l1": {},
    "wing": {"w": POSITIVE, "eps": POSITIVE},
    "awing": {"alpha": POSITIVE, "omega": POSITIVE, "epsilon": POSITIVE, "theta": POSITIVE},
}
# The weighted loss map's settings, which make_heatmap_loss takes only with use_weight_map=True.
WEIGHT_MAP_PARAMS: dict[str, Range] = {"threshold": FINITE, "W": NON_NEGATIVE}

# params.yaml loss key -> per-pixel loss of papers/awing/loss.py. The "hm_" keys keep the heatmap losses
# apart from the coordinate losses of the same name (whose parameters are in pixels).
HEATMAP_CONFIG_NAMES = {"hm_mse": "mse", "hm_l1": "l1", "hm_wing": "wing", "awing": "awing"}

# make_head's names and keyword parameters (papers/cosface/loss.py). SphereFace's lambda annealing
# (base, gamma, power, lambda_min) is the released Caffe layer's.
HEADS: dict[str, dict[str, Range]] = {
    "softmax": {},
    "nsl": {"s": POSITIVE},
    "sphereface": {"m": Range(low=0.0, integer=True), "base": POSITIVE, "gamma": NON_NEGATIVE,
                   "power": NON_NEGATIVE, "lambda_min": NON_NEGATIVE},
    "cosface": {"s": POSITIVE, "m": NON_NEGATIVE},
    "arcface": {"s": POSITIVE, "m": Range(low=0.0, low_closed=True, high=math.pi / 2, high_text="pi/2"),
                "easy_margin": Range(flag=True)},
}

# MTCNN's multi-task loss (papers/mtcnn/loss.py): the share of the classification losses kept by online
# hard sample mining. The task weights are the paper's per stage, not parameters.
MTCNN_LOSSES: dict[str, dict[str, Range]] = {
    "mtcnn": {"hard_ratio": Range(low=0.0, high=1.0, high_closed=True)},
}

# What each task takes in params.yaml: loss key -> {parameter: range}. The recognition and detection
# tasks do not scale their loss, so ``weight`` is not theirs (it would be ignored).
TASK_LOSSES: dict[str, dict[str, dict[str, Range]]] = {
    "landmarks": {name: {**WEIGHT, **params} for name, params in LANDMARK_LOSSES.items()},
    "heatmaps": {key: {**WEIGHT, **HEATMAP_LOSSES[name], **WEIGHT_MAP_PARAMS}
                 for key, name in HEATMAP_CONFIG_NAMES.items()},
    "recognition": HEADS,
    "detection": MTCNN_LOSSES,
}


def task_of(loss_key: str) -> str | None:
    """The task whose rows may use this params.yaml loss key, or None for a name no loss has."""
    return next((task for task, losses in TASK_LOSSES.items() if loss_key in losses), None)


def param_problem(params: dict[str, Range], key: str, value: object) -> str | None:
    """Why ``value`` is not acceptable for parameter ``key`` of a loss taking ``params``, or None."""
    if key not in params:
        return f"unknown parameter; this loss takes {', '.join(sorted(params)) or 'no parameters'}"
    rule = params[key]
    if not rule.accepts(value):
        shown = repr(value)
        return f"must be {rule.describe()}, got {shown[:-2] if shown.endswith('.0') else shown}"
    return None


def check_param(loss: str, params: dict[str, Range], key: str, value: object) -> None:
    """Raise ValueError("<loss>: <key> must be ..., got ...") when a constructor argument is out of range."""
    problem = param_problem(params, key, value)
    if problem is not None:
        raise ValueError(f"{loss}: {key} {problem}" if key in params else f"{loss}: {key}: {problem}")
