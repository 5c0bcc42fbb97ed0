"""The device cache replays exactly the recorded rows, reshuffled, and gives up cleanly when too big."""

from __future__ import annotations

import torch

from facebench.train.device_cache import DeviceCache


def _batches(rows: int, size: int):
    for start in range(0, rows, size):
        idx = torch.arange(start, min(rows, start + size))
        yield {"x": idx.clone(), "y": idx.float() * 2}


def test_records_an_epoch_then_replays_every_row_once_in_a_new_order():
    cache = DeviceCache(max_bytes=10**6)
    passed = [b["x"] for b in cache.record(_batches(10, 4))]  # 4 + 4 + 2: the partial batch is kept too
    assert torch.equal(torch.cat(passed), torch.arange(10)) and cache.ready and "cached 10 rows" in cache.note
    torch.manual_seed(0)
    epoch = list(cache.batches(3))
    assert [len(b["x"]) for b in epoch] == [3, 3, 3]  # 10 rows, batch 3: the last partial batch is dropped
    seen = torch.cat([b["x"] for b in epoch])
    assert len(set(seen.tolist())) == 9 and not torch.equal(seen, torch.arange(9))
    for b in epoch:  # columns stay aligned row by row
        assert torch.equal(b["y"], b["x"].float() * 2)


def test_a_shard_over_the_limit_is_streamed_not_cached():
    cache = DeviceCache(max_bytes=100)  # 10 int64 + 10 float32 rows = 120 bytes
    assert len(list(cache.record(_batches(10, 4)))) == 3
    assert not cache.ready and "exceeds the device cache limit" in cache.note
