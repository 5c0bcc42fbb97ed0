"""Keep a worker's training shard on its device.

Why: a GPU trains small landmark models faster than Ray Data can hand over batches from one Python
process (H100, CNN-6, batch 256: ~38,000 images/s bare, ~10,000 through iter_torch_batches). The
raw uint8 crops of a landmark set are small (AFLW-Full at 128 px: under 1 GiB). A shard that fits
is read straight from Parquet and handed over whole (``fill``); otherwise the first epoch streams
through Ray Data and records its batches (``record``). Either way, epochs reshuffle the kept rows on
the device and cut batches by index. Augmentation still runs per batch, so every epoch sees new
random warps. A shard larger than ``max_bytes`` is not cached (training streams every epoch instead,
and says so).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch


class DeviceCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.parts: dict[str, list[torch.Tensor]] | None = {}
        self.tensors: dict[str, torch.Tensor] | None = None
        self.nbytes = 0
        self.note = ""

    @property
    def ready(self) -> bool:
        return self.tensors is not None

    def record(self, batches: Iterable[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
        """Pass batches through while keeping them; the cache is ready once the iterable is exhausted."""
        for batch in batches:
            if self.parts is not None:
                self.nbytes += sum(v.numel() * v.element_size() for v in batch.values())
                if self.nbytes > self.max_bytes:
                    self.parts = None
                    self.note = f"shard exceeds the device cache limit ({self.max_bytes / 2**30:.1f} GiB); streaming"
                else:
                    for key, value in batch.items():
                        self.parts.setdefault(key, []).append(value)
            yield batch
        if self.parts:
            self.tensors = {k: torch.cat(v) for k, v in self.parts.items()}
            first = next(iter(self.tensors.values()))
            self.note = f"cached {first.shape[0]} rows ({self.nbytes / 2**20:.0f} MiB) on {first.device}"
        self.parts = None

    def fill(self, tensors: dict[str, torch.Tensor]) -> None:
        """Take a whole shard at once (read straight from Parquet): ready from the first epoch."""
        self.tensors, self.parts = tensors, None
        first = next(iter(tensors.values()))
        self.nbytes = sum(v.numel() * v.element_size() for v in tensors.values())
        self.note = f"cached {first.shape[0]} rows ({self.nbytes / 2**20:.0f} MiB) on {first.device}"

    def batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Full batches of a fresh random permutation of the cached rows (the last partial batch is dropped)."""
        assert self.tensors is not None, "record a full epoch first"
        first = next(iter(self.tensors.values()))
        order = torch.randperm(first.shape[0], device=first.device)
        for start in range(0, first.shape[0] - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            yield {k: v[idx] for k, v in self.tensors.items()}
