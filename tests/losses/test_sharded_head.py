"""The class-sharded head on 2 gloo processes equals the unsharded head: loss and gradients."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from facebench.losses.margin import make_head, make_sharded_head, shard_range

WORLD = 2
C, D = 7, 5  # 7 classes split 4 + 3
ROWS = [[0, 1, 2], [3, 4, 5, 6]]  # unequal local batches: rank 0 has 3 samples, rank 1 has 4
CASES = [
    ("cosface", {}),
    ("arcface", {}),
    ("arcface", {"easy_margin": True, "s": 16.0}),
    ("nsl", {"s": 16.0}),
    ("sphereface", {}),
    ("softmax", {}),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_rank(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        g = torch.Generator().manual_seed(0)  # identical full problem on both ranks
        x_full = torch.randn(7, D, generator=g, dtype=torch.float64)
        x_full[6] = -x_full[6]  # keep one sample far from everything
        y_full = torch.tensor([0, 6, 3, 4, 1, 4, 5])  # labels owned by both shards
        start, end = shard_range(C, WORLD, rank)
        for name, params in CASES:
            ref = make_head(name, D, C, **params).double()
            with torch.no_grad():
                ref.weight.copy_(torch.randn(C, D, generator=g, dtype=torch.float64))
                if name == "softmax":
                    ref.bias.copy_(torch.randn(C, generator=g, dtype=torch.float64))
            xr = x_full.clone().requires_grad_(True)
            ref_loss = ref.loss(xr, y_full)
            ref_loss.backward()

            sharded = make_sharded_head(name, D, C, **params).double()
            assert (sharded.class_start, sharded.class_end) == (start, end)
            with torch.no_grad():
                sharded.head.weight.copy_(ref.weight[start:end])
                if name == "softmax":
                    sharded.head.bias.copy_(ref.bias[start:end])
            xs = x_full[ROWS[rank]].clone().requires_grad_(True)
            loss = sharded(xs, y_full[ROWS[rank]])
            loss.backward()

            what = f"{name} {params} rank {rank}"
            torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=0, msg=f"loss, {what}")
            torch.testing.assert_close(xs.grad, xr.grad[ROWS[rank]], atol=1e-5, rtol=0, msg=f"x grad, {what}")
            torch.testing.assert_close(sharded.head.weight.grad, ref.weight.grad[start:end], atol=1e-5, rtol=0,
                                       msg=f"W grad, {what}")
            if name == "softmax":
                torch.testing.assert_close(sharded.head.bias.grad, ref.bias.grad[start:end], atol=1e-5, rtol=0)

        # DDP compensation: embedding gradients scaled by the world size, weight gradients untouched.
        ref = make_head("cosface", D, C).double()
        sharded = make_sharded_head("cosface", D, C, ddp_grad_compensation=True).double()
        with torch.no_grad():
            ref.weight.copy_(torch.randn(C, D, generator=g, dtype=torch.float64))
            sharded.head.weight.copy_(ref.weight[start:end])
        xr = x_full.clone().requires_grad_(True)
        ref.loss(xr, y_full).backward()
        xs = x_full[ROWS[rank]].clone().requires_grad_(True)
        sharded(xs, y_full[ROWS[rank]]).backward()
        torch.testing.assert_close(xs.grad, WORLD * xr.grad[ROWS[rank]], atol=1e-5, rtol=0)
        torch.testing.assert_close(sharded.head.weight.grad, ref.weight.grad[start:end], atol=1e-5, rtol=0)
    finally:
        dist.destroy_process_group()


def test_sharded_head_matches_unsharded_on_two_gloo_ranks():
    # fork, not spawn: pytest's importlib import mode leaves this module unimportable by name in a
    # freshly spawned interpreter; a forked child already has it.
    mp.start_processes(check_rank, args=(free_port(),), nprocs=WORLD, join=True, start_method="fork")


def test_shard_range_covers_all_classes_contiguously():
    for c, w in [(7, 2), (10572, 8), (8, 8), (9, 4)]:
        ranges = [shard_range(c, w, r) for r in range(w)]
        assert ranges[0][0] == 0 and ranges[-1][1] == c
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        sizes = [e - s for s, e in ranges]
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="cannot be split"):
        shard_range(3, 4, 0)
