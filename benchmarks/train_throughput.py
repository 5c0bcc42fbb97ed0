"""Training throughput: the Ray Train pipeline against a bare PyTorch loop, side by side in one run.

Both train the same model with the same loss and batch size. The bare loop trains on tensors that
are already decoded and resident on the device (the upper bound); the pipeline reads Parquet through
Ray Data (decode + augmentation in Ray tasks) into a TorchTrainer. The figure that matters is the
ratio pipeline / bare on the same machine.

    python benchmarks/train_throughput.py --experiment aflw_cnn6_wing --epochs 3 [--gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from facebench.config import Paths, load_params, resolve_experiment
from facebench.data.parquet import read_samples
from facebench.data.transforms import LandmarkBatchTransform
from facebench.tasks import build_task
from facebench.train.ray_trainer import fit


def bare_loop(task, exp, device: torch.device, epochs: int) -> float:
    """Images/s of a plain loop over pre-decoded tensors on the device (no augmentation, no I/O)."""
    df = read_samples(task.prepared_dir / ("train_pdb.parquet" if exp.pdb else "train.parquet"))
    batch = LandmarkBatchTransform(task.input_size, None, None)(
        {"image": df["image"].to_numpy(), "landmarks": df["landmarks"].to_numpy(), "norm": df["norm"].to_numpy()})
    x = torch.from_numpy(batch["image"]).to(device)
    y = torch.from_numpy(batch["landmarks"]).to(device)
    model = task.build_model().to(device)
    loss_fn = task.build_loss().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=exp.train.lr)
    bs = exp.train.batch_size
    amp = exp.train.amp and device.type == "cuda"
    seen, best = 0, 0.0
    for epoch in range(epochs):
        perm = torch.randperm(len(x), device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, seen = time.perf_counter(), 0
        for i in range(0, len(x) - bs + 1, bs):
            idx = perm[i:i + bs]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(model(x[idx]).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += bs
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = seen / (time.perf_counter() - start)
        if epoch > 0 or epochs == 1:  # the first epoch warms up kernels and caches
            best = max(best, rate)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--profile", default=None)
    ap.add_argument("--experiment", default="aflw_cnn6_wing")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    params = load_params(args.params, args.profile)
    overrides = {"epochs": args.epochs, "use_gpu": args.gpu, "amp": args.gpu, "val_every": 10_000, "augment": True}
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    exp = resolve_experiment(params, args.experiment, **overrides)
    paths = Paths(root=args.params.resolve().parent)
    task = build_task(exp, paths.prepared(exp.dataset))
    device = torch.device("cuda" if args.gpu else "cpu")
    torch.set_num_threads(os.cpu_count() or 1)

    bare = bare_loop(task, exp, device, args.epochs)
    with tempfile.TemporaryDirectory() as storage:
        outcome = fit(exp, paths.prepared(exp.dataset), Path(storage), "throughput-bench")
    pipeline = outcome.metrics["images_per_s"]
    result = {
        "experiment": exp.key, "model": exp.model, "batch_size": exp.train.batch_size, "epochs": args.epochs,
        "device": torch.cuda.get_device_name() if args.gpu else f"CPU ({platform.processor() or platform.machine()}, "
                                                                  f"{os.cpu_count()} cores)",
        "bare_images_per_s": round(bare, 1), "pipeline_images_per_s_last_epoch": round(pipeline, 1),
        "ratio": round(pipeline / bare, 3),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
