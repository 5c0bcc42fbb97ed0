"""Classification heads of the CosFace comparison, all as one family: "logit = s·ψ(θ_y) for the
target class, s·cos θ_j for the others", trained with plain softmax cross-entropy on the logits.

With W ∈ R^{C×D} the class weights, x ∈ R^D an embedding and θ_j the angle between x and W_j:

| head       | paper                         | other classes j ≠ y | target class y                      |
|------------|-------------------------------|---------------------|-------------------------------------|
| softmax    | -                             | W_j·x + b_j         | W_y·x + b_y (no normalisation)      |
| nsl        | CosFace (Wang et al. 2018)    | s·cos θ_j           | s·cos θ_y                           |
| sphereface | SphereFace (Liu et al. 2017)  | ‖x‖·cos θ_j         | ‖x‖·(λ·cos θ_y + ψ(θ_y)) / (1 + λ)  |
| cosface    | CosFace, LMCL                 | s·cos θ_j           | s·(cos θ_y − m)                     |
| arcface    | ArcFace (Deng et al. 2019)    | s·cos θ_j           | s·cos(θ_y + m)  (its Eq. 3)         |

Every normalised head uses ‖W_j‖ = 1; NSL, CosFace and ArcFace also normalise x and fix its norm
to s, while SphereFace's A-Softmax keeps ‖x‖ (it normalises the weights only). A-Softmax's
ψ(θ) = (−1)^k cos(mθ) − 2k for θ ∈ [kπ/m, (k+1)π/m], k ∈ [0, m−1], makes the target logit
monotone in θ over the whole [0, π]; the λ-annealed mixture with the plain logit is the released
Caffe layer's (wy1iu/sphereface, margin_inner_product_layer.cpp), not in the paper's loss, but
needed for convergence. Gradients here are the true autograd gradients; the released Caffe layer
rescales its backward pass (its README, "Backward gradient"), so its optimiser settings need not
carry over.

``MarginHead.forward`` returns the logits; ``MarginHead.loss`` = cross-entropy on them. The
sharded variant (classes split over ranks, softmax via collectives) is ``make_sharded_head``: the
head of this rank's class slice inside train/partial_fc.py's ``ShardedMarginHead``.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from facebench.loss_specs import HEADS, check_param
from facebench.train.partial_fc import ShardedMarginHead, shard_range

HEAD_NAMES = tuple(HEADS)  # ("softmax", "nsl", "sphereface", "cosface", "arcface")


# ---------------------------------------------------------------------------------------------------
# The margin functions, kept free of modules so the numpy tests and the sharded head see the same maths.


def sphereface_lambda(iteration: int, base: float = 1000.0, gamma: float = 0.12, power: float = 1.0,
                      lambda_min: float = 5.0) -> float:
    """λ = max(λ_min, base·(1 + γ·it)^(−power)): the annealing of SphereFace's released Caffe layer.

    Defaults are its released training prototxt (base 1000, gamma 0.12, power 1, lambda_min 5,
    wy1iu/sphereface train/code/sphereface_model.prototxt); the layer increments its iteration
    counter before computing λ, so the first training step uses it = 1 (λ = 1000/1.12 ≈ 892.9),
    and λ reaches λ_min = 5 at it ≈ 1650.
    """
    return max(lambda_min, base * (1.0 + gamma * iteration) ** (-power))


def chebyshev_cos_multiple(cos: torch.Tensor, m: int) -> torch.Tensor:
    """cos(mθ) from cos θ by the Chebyshev recurrence T_{n+1} = 2c·T_n − T_{n−1}.

    Polynomial in cos θ, so unlike cos(m·acos(c)) its gradient stays finite at c = ±1.
    """
    prev, cur = torch.ones_like(cos), cos
    for _ in range(m - 1):
        prev, cur = cur, 2 * cos * cur - prev
    return cur


def sphereface_psi(cos: torch.Tensor, m: int = 4) -> torch.Tensor:
    """SphereFace's ψ(θ) = (−1)^k cos(mθ) − 2k, θ ∈ [kπ/m, (k+1)π/m], computed from cos θ.

    ψ is continuous and decreasing from 1 at θ = 0 to 1 − 2m at θ = π. k is a step function
    (no gradient); θ = π would give k = m, which is clamped to m − 1: both give the same value.
    """
    theta = torch.acos(cos.detach().clamp(-1.0, 1.0))
    k = torch.floor(m * theta / math.pi).clamp(0, m - 1)
    sign = 1.0 - 2.0 * torch.remainder(k, 2)  # (-1)^k
    return sign * chebyshev_cos_multiple(cos, m) - 2.0 * k


def arcface_target(cos: torch.Tensor, m: float, easy_margin: bool = False) -> torch.Tensor:
    """cos(θ + m) = cos θ·cos m − sin θ·sin m (ArcFace Eq. 3), with the released handling of θ + m > π.

    cos(θ + m) stops decreasing once θ + m passes π, which would reward pushing a sample *away*
    from its class. InsightFace's released heads therefore switch, for θ > π − m, to the CosFace-
    like cos θ − m·sin m (a first-order stand-in for the angular margin). That keeps the target
    decreasing over all of [0, π] but is NOT continuous: at θ = π − m it steps down from −1 to
    −(cos m + m·sin m) (−1.117 for m = 0.5). We keep the released behaviour so that results
    compare with published ArcFace numbers. ``easy_margin`` (also released) instead applies the
    margin only where cos θ > 0, i.e. θ < π/2, and is likewise discontinuous there.
    """
    sin = (1.0 - cos * cos).clamp_min(1e-12).sqrt()
    phi = cos * math.cos(m) - sin * math.sin(m)
    if easy_margin:
        return torch.where(cos > 0, phi, cos)
    return torch.where(cos > math.cos(math.pi - m), phi, cos - m * math.sin(m))


# ---------------------------------------------------------------------------------------------------
# Heads


class MarginHead(nn.Module):
    """Base of the family: the class weights W (num_classes × embedding_dim) and the logit assembly.

    Subclasses say how a class's logit is formed from cos θ and ‖x‖ (``other_logits`` for every
    class, ``target_logits`` for the labelled one). ``forward(x, labels)`` returns (N, C) logits;
    ``loss`` is the mean softmax cross-entropy on them. Labels of −1 mean "this sample's class is
    not among these weights" (the sharded head's local slice): the row gets no margin.
    """

    def __init__(self, embedding_dim: int, num_classes: int):
        super().__init__()
        if embedding_dim < 1 or num_classes < 1:
            raise ValueError(f"embedding_dim and num_classes must be positive, got {embedding_dim}, {num_classes}")
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)  # the released Caffe heads use the xavier filler

    def extra_repr(self) -> str:
        return f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}"

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        """cos θ_j = x·W_j / (‖x‖‖W_j‖), shape (N, C)."""
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()

    def other_logits(self, cos: torch.Tensor, x_norm: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def target_logits(self, cos_y: torch.Tensor, x_norm_y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Logits with the margin on each row's labelled column; rows labelled −1 get none."""
        cos = self.cosine(x)
        x_norm = x.norm(dim=1, keepdim=True)
        out = self.other_logits(cos, x_norm)
        rows = torch.nonzero(labels >= 0).squeeze(1)
        if rows.numel() == 0:
            return out
        cols = labels[rows]
        target = self.target_logits(cos[rows, cols], x_norm[rows, 0])
        return out.index_put((rows, cols), target)  # out of place: gradients reach both

    def _check(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.embedding_dim:
            raise ValueError(f"expected embeddings (N, {self.embedding_dim}), got {tuple(x.shape)}")
        if labels.shape != (x.shape[0],):
            raise ValueError(f"expected labels ({x.shape[0]},), got {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), "
                             f"got [{int(labels.min())}, {int(labels.max())}]")

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self._check(x, labels)
        return self.logits(x, labels)

    def loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(x, labels), labels)


class SoftmaxHead(MarginHead):
    """The baseline: an ordinary linear layer with bias, nothing normalised, no margin."""

    def __init__(self, embedding_dim: int, num_classes: int):
        super().__init__(embedding_dim, num_classes)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def logits(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class NormSoftmaxHead(MarginHead):
    """NSL, the normalised softmax loss of the CosFace paper: s·cos θ_j for every class."""

    spec = "nsl"  # the loss_specs.py entry whose ranges this head's arguments follow

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0):
        super().__init__(embedding_dim, num_classes)
        check_param(self.spec, HEADS[self.spec], "s", s)
        self.s = float(s)

    def other_logits(self, cos: torch.Tensor, x_norm: torch.Tensor) -> torch.Tensor:
        return self.s * cos

    def target_logits(self, cos_y: torch.Tensor, x_norm_y: torch.Tensor) -> torch.Tensor:
        return self.s * cos_y


class CosFaceHead(NormSoftmaxHead):
    """LMCL, CosFace's large margin cosine loss: s·(cos θ_y − m) for the target; defaults s = 64,
    m = 0.35, the CosFace paper's settings. m = 0 is NSL."""

    spec = "cosface"

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.35):
        super().__init__(embedding_dim, num_classes, s)
        check_param(self.spec, HEADS[self.spec], "m", m)
        self.m = float(m)

    def target_logits(self, cos_y: torch.Tensor, x_norm_y: torch.Tensor) -> torch.Tensor:
        return self.s * (cos_y - self.m)


class ArcFaceHead(NormSoftmaxHead):
    """Additive angular margin (ArcFace Eq. 3): s·cos(θ_y + m), defaults s = 64, m = 0.5;
    for θ_y > π − m see ``arcface_target``."""

    spec = "arcface"

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.5,
                 easy_margin: bool = False):
        super().__init__(embedding_dim, num_classes, s)
        check_param(self.spec, HEADS[self.spec], "m", m)
        check_param(self.spec, HEADS[self.spec], "easy_margin", easy_margin)
        self.m = float(m)
        self.easy_margin = bool(easy_margin)

    def target_logits(self, cos_y: torch.Tensor, x_norm_y: torch.Tensor) -> torch.Tensor:
        return self.s * arcface_target(cos_y, self.m, self.easy_margin)


class SphereFaceHead(MarginHead):
    """A-Softmax (SphereFace) with the released λ annealing.

    Target logit f_y = ‖x‖·(λ·cos θ_y + ψ(θ_y)) / (1 + λ), others ‖x‖·cos θ_j. ‖x‖ is kept: the
    feature norm is not normalised. λ follows ``sphereface_lambda`` of the training-step counter
    ``iteration`` (a buffer, so it survives checkpoints), which each training-mode forward advances
    first, like the Caffe layer; evaluation-mode forwards leave it and use its current value.
    """

    def __init__(self, embedding_dim: int, num_classes: int, m: int = 4, base: float = 1000.0,
                 gamma: float = 0.12, power: float = 1.0, lambda_min: float = 5.0):
        super().__init__(embedding_dim, num_classes)
        for key, value in (("m", m), ("base", base), ("gamma", gamma), ("power", power), ("lambda_min", lambda_min)):
            check_param("sphereface", HEADS["sphereface"], key, value)
        self.m = int(m)
        self.base, self.gamma, self.power, self.lambda_min = float(base), float(gamma), float(power), float(lambda_min)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    @property
    def lam(self) -> float:
        return sphereface_lambda(int(self.iteration), self.base, self.gamma, self.power, self.lambda_min)

    def logits(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.iteration += 1
        return super().logits(x, labels)

    def other_logits(self, cos: torch.Tensor, x_norm: torch.Tensor) -> torch.Tensor:
        return x_norm * cos

    def target_logits(self, cos_y: torch.Tensor, x_norm_y: torch.Tensor) -> torch.Tensor:
        lam = self.lam
        return x_norm_y * (lam * cos_y + sphereface_psi(cos_y, self.m)) / (1.0 + lam)


def make_head(name: str, embedding_dim: int, num_classes: int, **params) -> MarginHead:
    """Build a head by name; ``params`` are the head's own keyword arguments (s, m, ...)."""
    if name == "softmax":
        cls = SoftmaxHead
    elif name == "nsl":
        cls = NormSoftmaxHead
    elif name == "sphereface":
        cls = SphereFaceHead
    elif name == "cosface":
        cls = CosFaceHead
    elif name == "arcface":
        cls = ArcFaceHead
    else:
        raise ValueError(f"unknown head {name!r}; expected one of {', '.join(HEAD_NAMES)}")
    try:
        return cls(embedding_dim, num_classes, **params)
    except TypeError as err:  # an unknown keyword: say which head and what it takes
        raise ValueError(f"head {name!r}: {err}") from None


def make_sharded_head(name: str, embedding_dim: int, num_classes: int, group=None,
                      ddp_grad_compensation: bool = False, **params) -> ShardedMarginHead:
    """The ``make_head`` head for this rank's class slice (process group must be initialised)."""
    start, end = shard_range(num_classes, dist.get_world_size(group), dist.get_rank(group))
    return ShardedMarginHead(make_head(name, embedding_dim, end - start, **params), num_classes, start, group,
                             ddp_grad_compensation)
