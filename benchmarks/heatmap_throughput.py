"""Adaptive Wing training step throughput and peak GPU memory: the stacked hourglass, bare loop.

The paper's network (4 stacks, 256x256 input, 64x64 heatmaps, CoordConv with the boundary channel)
trained with AWing and the weighted loss map on every stack (intermediate supervision). Targets are
rendered on the device from landmarks each step, as a heatmap pipeline would. Inputs are random
tensors already on the device: this is the upper bound a data pipeline is compared against.

    python benchmarks/heatmap_throughput.py [--device cuda] [--batch-sizes 16 32] [--stacks 4] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from facebench.papers.awing.heatmaps import input_to_heatmap, render_boundary_heatmap, render_gaussian_heatmaps
from facebench.papers.awing.loss import make_heatmap_loss, stacked_loss
from facebench.papers.awing.model import AWingHourglass


def measure(device: torch.device, batch: int, stacks: int, size: int, landmarks: int, seconds: float) -> dict:
    model = AWingHourglass(landmarks, num_stacks=stacks, input_size=size).to(device)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-4)  # the AWing paper trains with RMSprop
    loss_fn = make_heatmap_loss("awing", use_weight_map=True)
    x = torch.randn(batch, 3, size, size, device=device)
    pts = torch.rand(batch, landmarks, 2, device=device) * (size * 0.6) + size * 0.2
    amp = device.type == "cuda"

    def step() -> None:
        heat_pts = input_to_heatmap(pts)
        target = render_gaussian_heatmaps(heat_pts, size // 4, sigma=1.0)
        boundary = render_boundary_heatmap(heat_pts, size=size // 4, sigma=1.0)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        loss = stacked_loss(loss_fn, [h.float() for h in out["heatmaps"]], target)
        loss = loss + stacked_loss(loss_fn, [b.float() for b in out["boundary"]], boundary)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
        if steps % 5 == 0:
            sync()
    sync()
    elapsed = time.perf_counter() - start
    out = {"batch_size": batch, "stacks": stacks, "input": size, "landmarks": landmarks,
           "images_per_s": round(steps * batch / elapsed, 1), "steps": steps}
    if device.type == "cuda":
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[16, 32])
    ap.add_argument("--stacks", type=int, default=4)
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--landmarks", type=int, default=68)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    rows = [measure(device, b, args.stacks, args.input_size, args.landmarks, args.seconds) for b in args.batch_sizes]
    result = {"device": name, "torch": torch.__version__, "results": rows}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
