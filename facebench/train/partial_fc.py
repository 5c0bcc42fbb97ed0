"""The classifier split over the workers (model parallel), for face recognition's large class counts: the
class weights are split contiguously over the ranks, each rank scores every rank's embeddings against its
slice, and the softmax cross-entropy is computed by collectives (like partial FC in insightface's
arcface_torch, without its class sampling). Training infrastructure, beside the trainer: it knows heads
only by ``num_classes``, ``embedding_dim`` and ``logits``; the CosFace paper's heads are in
papers/cosface/loss.py.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


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

    ``head`` is any classification head with ``num_classes``, ``embedding_dim`` and ``logits(x, labels)``
    (labels -1 where no class of the slice is the target). Each rank holds ``head`` built for its slice [class_start, class_end) of ``num_classes``.
    ``forward(x_local, labels_local)`` all-gathers the embeddings and labels of every rank, scores
    all samples against the local slice (margin on the label only where this rank owns it), and
    returns the cross-entropy over all classes and all ranks' samples — the same scalar on every
    rank, equal to the unsharded head's ``loss`` on the concatenated batch.

    Gradients are the true ones of that scalar: each rank's weight slice gets ∂L/∂W_slice, its
    embeddings ∂L/∂x_local. A DDP-wrapped backbone AVERAGES its gradients over the R ranks, i.e.
    would see ∂L/∂θ / R; ``ddp_grad_compensation=True`` multiplies the embedding gradients by R
    to undo that. The head's own weights must not be DDP-averaged (they differ per rank).
    """

    def __init__(self, head: nn.Module, num_classes: int, class_start: int, group=None,
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


