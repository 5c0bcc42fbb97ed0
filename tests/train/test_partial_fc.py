"""The class-sharded head on 2 gloo processes equals the unsharded head: loss and gradients."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from facebench.papers.cosface.loss import make_head, make_sharded_head
from facebench.train.partial_fc import shard_range

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


def check_checkpoint_rank(rank: int, port: int) -> None:
    """One SGD-momentum step on each rank's rows, then: the gathered checkpoint equals the unsharded model's
    state and optimiser state after the same step on the whole batch, and restoring it gives the slices."""
    from facebench.papers.cosface.task import Recognizer, this_workers_state, whole_head_state

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        g = torch.Generator().manual_seed(0)
        x_full = torch.randn(7, D, generator=g)
        y_full = torch.tensor([0, 6, 3, 4, 1, 4, 5])
        whole = Recognizer(torch.nn.Identity(), make_head("softmax", D, C))
        with torch.no_grad():
            whole.head.weight.copy_(torch.randn(C, D, generator=g))
            whole.head.bias.copy_(torch.randn(C, generator=g))
        sharded = Recognizer(torch.nn.Identity(), make_sharded_head("softmax", D, C))
        start, end = sharded.head.class_start, sharded.head.class_end
        with torch.no_grad():
            sharded.head.head.weight.copy_(whole.head.weight[start:end])
            sharded.head.head.bias.copy_(whole.head.bias[start:end])
        opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (whole, sharded)]
        torch.nn.functional.cross_entropy(whole(x_full, y_full), y_full).backward()
        sharded(x_full[ROWS[rank]], y_full[ROWS[rank]]).backward()
        for opt in opts:
            opt.step()

        state, optim = whole_head_state(sharded, opts[1])
        want_state, want_optim = whole.state_dict(), opts[0].state_dict()
        assert state.keys() == want_state.keys()
        for key in want_state:
            torch.testing.assert_close(state[key], want_state[key], atol=1e-6, rtol=0)
        for i, slot in want_optim["state"].items():
            torch.testing.assert_close(optim["state"][i]["momentum_buffer"], slot["momentum_buffer"], atol=1e-6, rtol=0)

        fresh = Recognizer(torch.nn.Identity(), make_sharded_head("softmax", D, C))
        fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
        local_state, local_optim = this_workers_state(fresh, state, optim)
        fresh.load_state_dict(local_state)  # strict: names and shapes of this worker's slice
        fresh_opt.load_state_dict(local_optim)
        torch.testing.assert_close(fresh.head.head.weight, sharded.head.head.weight)
        torch.testing.assert_close(fresh_opt.state[fresh.head.head.bias]["momentum_buffer"],
                                   opts[1].state[sharded.head.head.bias]["momentum_buffer"])
    finally:
        dist.destroy_process_group()


def test_sharded_checkpoint_is_the_whole_head_and_restores_the_slices():
    mp.start_processes(check_checkpoint_rank, args=(free_port(),), nprocs=WORLD, join=True, start_method="fork")
