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
sharded variant (classes split over ranks, softmax via collectives) is ``ShardedMarginHead``.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from facebench.loss_specs import HEADS, check_param

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


# ---------------------------------------------------------------------------------------------------
# Model-parallel head: the classes are split over the ranks (needed once C·D no longer fits one device).


def shard_range(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """[start, end) of the contiguous class slice rank ``rank`` holds; sizes differ by at most one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    if num_classes < world_size:
        raise ValueError(f"{num_classes} classes cannot be split over {world_size} ranks (each needs one)")
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class _GatherRows(torch.autograd.Function):
    """All-gather of (n_r, D) rows from every rank (sizes may differ) with a correct backward.

    Every rank's loss depends on every rank's rows, so the gradient of rank r's rows is the SUM
    over ranks of the gradients of their gathered copies: all-reduce, then keep the own rows.
    (Written here rather than torch.distributed.nn.functional.all_gather because that one's
    backward relies on reduce_scatter, which gloo lacks.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int], rank: int, grad_scale: float, group) -> torch.Tensor:
        ctx.sizes, ctx.rank, ctx.grad_scale, ctx.group = sizes, rank, grad_scale, group
        padded = x.new_zeros((max(sizes), *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous(), group=group)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        own = grad[start : start + ctx.sizes[ctx.rank]]
        return own * ctx.grad_scale, None, None, None, None


class _ShardedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy over logits whose classes are split over the ranks.

    Forward: global row max (all-reduce MAX), global Σ exp (all-reduce SUM) and the target logit
    from the rank owning the label (all-reduce SUM of zeros elsewhere); loss_i = log Σ + max − z_y.
    Backward is local: ∂L/∂z_ij = (softmax_ij − [j = y_i]) / N, with the global max and Σ saved.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, local_labels: torch.Tensor, group) -> torch.Tensor:
        z = logits.detach()
        row_max = z.max(dim=1).values
        dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
        exp = torch.exp(z - row_max[:, None])
        sum_exp = exp.sum(dim=1)
        dist.all_reduce(sum_exp, op=dist.ReduceOp.SUM, group=group)
        owned = local_labels >= 0
        target = torch.zeros_like(row_max)
        target[owned] = z[owned, local_labels[owned]]
        dist.all_reduce(target, op=dist.ReduceOp.SUM, group=group)
        loss = (torch.log(sum_exp) + row_max - target).mean()
        ctx.save_for_backward(exp, sum_exp, local_labels)
        return loss

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        exp, sum_exp, local_labels = ctx.saved_tensors
        grad = exp / sum_exp[:, None]
        owned = torch.nonzero(local_labels >= 0).squeeze(1)
        grad[owned, local_labels[owned]] -= 1.0
        return grad * (grad_out / exp.shape[0]), None, None


class ShardedMarginHead(nn.Module):
    """A margin head whose class weights are split contiguously over the ranks of a process group.

    Each rank holds ``head`` built for its slice [class_start, class_end) of ``num_classes``.
    ``forward(x_local, labels_local)`` all-gathers the embeddings and labels of every rank, scores
    all samples against the local slice (margin on the label only where this rank owns it), and
    returns the cross-entropy over all classes and all ranks' samples — the same scalar on every
    rank, equal to the unsharded head's ``loss`` on the concatenated batch.

    Gradients are the true ones of that scalar: each rank's weight slice gets ∂L/∂W_slice, its
    embeddings ∂L/∂x_local. A DDP-wrapped backbone AVERAGES its gradients over the R ranks, i.e.
    would see ∂L/∂θ / R; ``ddp_grad_compensation=True`` multiplies the embedding gradients by R
    to undo that. The head's own weights must not be DDP-averaged (they differ per rank).
    """

    def __init__(self, head: MarginHead, num_classes: int, class_start: int, group=None,
                 ddp_grad_compensation: bool = False):
        super().__init__()
        if class_start < 0 or class_start + head.num_classes > num_classes:
            raise ValueError(f"slice [{class_start}, {class_start + head.num_classes}) outside {num_classes} classes")
        self.head = head
        self.num_classes = num_classes
        self.class_start = class_start
        self.group = group
        self.ddp_grad_compensation = ddp_grad_compensation

    @property
    def class_end(self) -> int:
        return self.class_start + self.head.num_classes

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.head.embedding_dim or labels.shape != (x.shape[0],):
            raise ValueError(f"expected embeddings (N, {self.head.embedding_dim}) and labels (N,), "
                             f"got {tuple(x.shape)} and {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        world, rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        size = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)  # NCCL gathers device tensors only
        sizes_t = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes_t, size, group=self.group)
        sizes = [int(s) for s in sizes_t]
        scale = float(world) if self.ddp_grad_compensation else 1.0
        x_all = _GatherRows.apply(x, sizes, rank, scale, self.group)
        labels_all = _GatherRows.apply(labels, sizes, rank, 1.0, self.group)
        local = labels_all - self.class_start
        local = torch.where((local >= 0) & (local < self.head.num_classes), local, torch.full_like(local, -1))
        logits = self.head.logits(x_all, local)  # bf16 under autocast: the softmax sums want float32 at least
        return _ShardedCrossEntropy.apply(logits.to(torch.promote_types(logits.dtype, torch.float32)), local, self.group)

    # --- checkpoints hold the whole head, as one unsharded worker would ---------------------------
    def sharded_names(self) -> list[str]:
        """This module's tensors whose rows are this rank's classes (the weight, Softmax's bias); buffers
        (A-Softmax's iteration count) are the same on every rank."""
        return [f"head.{name}" for name, _ in self.head.named_parameters()]

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's class rows of a sharded tensor, in class order (a collective: call on every rank)."""
        world = dist.get_world_size(self.group)
        counts = [b - a for a, b in (shard_range(self.num_classes, world, r) for r in range(world))]
        padded = local.new_zeros((max(counts), *local.shape[1:]))
        padded[: local.shape[0]] = local.detach()
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded, group=self.group)
        return torch.cat([p[:n] for p, n in zip(parts, counts)])

    def local_rows(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a whole-head tensor."""
        if full.shape[0] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} class rows, got a tensor of shape {tuple(full.shape)}")
        return full[self.class_start:self.class_end].clone()


def make_sharded_head(name: str, embedding_dim: int, num_classes: int, group=None,
                      ddp_grad_compensation: bool = False, **params) -> ShardedMarginHead:
    """The ``make_head`` head for this rank's class slice (process group must be initialised)."""
    start, end = shard_range(num_classes, dist.get_world_size(group), dist.get_rank(group))
    return ShardedMarginHead(make_head(name, embedding_dim, end - start, **params), num_classes, start, group,
                             ddp_grad_compensation)
