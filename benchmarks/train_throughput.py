"""Training throughput: the Ray Train pipeline against a bare PyTorch loop, side by side in one run.

Both train the same model with the same loss and batch size. The bare loop trains on tensors that
are already resized and resident on the device (the upper bound: no I/O, no augmentation), and once
more with the task's device augmentation on each batch (the same work the pipeline does); the pipeline
streams raw crops from Parquet through Ray Data into a TorchTrainer, which augments each batch on the
device (rotation, scale, shift, flip, colour, blur) before the step. The figure that matters is the
ratio pipeline / bare on the same machine.

    python benchmarks/train_throughput.py --experiment aflw_cnn6_wing --epochs 3 [--gpu]
    python benchmarks/train_throughput.py --experiment w300_hg_awing --epochs 3 [--gpu]   # heatmaps
    python benchmarks/train_throughput.py --experiment casia_cosface --epochs 3 [--gpu]   # recognition

On CUDA the figures include the peak GPU memory of the bare loop and of the pipeline's worker.
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
from facebench.train.ray_trainer import fit, make_optimizer
from facebench.train.task import build_task


def resident_batches(task, device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(raw, ready): the whole training split on the device as the trainer's workers hold it (raw crops,
    from the task's ``train_source``), and once more already in network form (the upper bound's input:
    crops resized / scaled once up front, no augmentation)."""
    arrays = task.train_source().read_shard(0, 1)
    raw = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
    if hasattr(task, "test_transform"):  # landmark tasks: resize the crops to the network input
        norm = raw.get("norm", torch.ones(len(raw["image"]), device=device))
        out = task.test_transform(raw["image"], raw["landmarks"], norm)
        ready = {"image": out["image"].contiguous(), "landmarks": out["landmarks"].contiguous(), "norm": norm}
    else:  # recognition: scale to [-1, 1], no mirroring; channels-last like the pipeline's batches (a
        # permuted NHWC crop). With an NCHW copy this bound ran 25% slower than the augmented loop on an H200,
        # most likely because cuDNN runs channels-last faster in bf16.
        from facebench.papers.cosface.task import to_network_input

        ready = {"image": to_network_input(raw["image"]).contiguous(memory_format=torch.channels_last),
                 "label": raw["label"]}
    return raw, ready


def bare_loop(task, exp, device: torch.device, epochs: int, augment: bool) -> float:
    """Best epoch's images/s of a plain loop over the training split already on the device (no I/O, no Ray).

    ``augment=False``: the crops are in network form up front, so a step is the model alone (the upper
    bound). ``augment=True``: each batch of raw crops goes through the task's device augmentation first,
    as in the pipeline, which separates the augmentation's cost from the pipeline's.
    """
    raw, ready = resident_batches(task, device)
    model = task.build_model().to(device)
    loss_fn = task.build_loss().to(device)
    opt = make_optimizer(model, exp.train)
    bs = exp.train.batch_size
    amp = exp.train.amp and device.type == "cuda"
    n = len(raw["image"])
    best = 0.0
    for epoch in range(epochs):
        perm = torch.randperm(n, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, seen = time.perf_counter(), 0
        for i in range(0, n - bs + 1, bs):
            idx = perm[i:i + bs]
            if augment:
                batch = task.augment_batch({k: v[idx] for k, v in raw.items()})
            else:
                batch = {k: v[idx] for k, v in ready.items()}
            batch = task.add_targets(batch)  # heatmap tasks render their target maps per batch, as the pipeline
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = task.training_step(model, loss_fn, batch)
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


def _peak_gib(device: torch.device) -> float | None:
    """Peak GPU memory since the last call (GiB), or None on the CPU."""
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return round(peak, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--profile", default=None)
    ap.add_argument("--experiment", default="aflw_cnn6_wing")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--shuffle-buffer-batches", type=int, nargs="+", default=[16],
                    help="one pipeline run per value (0: no local shuffle buffer)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    ap.add_argument("--save-model", action="store_true", help="keep the pipeline's trained weights as "
                    "models/<experiment>/model.pt (e.g. a stage-1 CNN-6 for `facebench recrop`)")
    args = ap.parse_args()

    params = load_params(args.params, args.profile)
    overrides = {"epochs": args.epochs, "use_gpu": args.gpu, "amp": args.gpu, "val_every": 10_000, "augment": True}
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    exp = resolve_experiment(params, args.experiment, **overrides)
    paths = Paths(root=args.params.resolve().parent)
    task = build_task(exp, paths)
    device = torch.device("cuda" if args.gpu else "cpu")
    torch.set_num_threads(os.cpu_count() or 1)

    peak = {}
    bare = bare_loop(task, exp, device, args.epochs, augment=False)
    peak["bare"] = _peak_gib(device)
    bare_aug = bare_loop(task, exp, device, args.epochs, augment=True)
    peak["bare_with_device_augmentation"] = _peak_gib(device)
    pipeline, pipeline_peak = {}, {}
    for buffer in args.shuffle_buffer_batches:
        variant = resolve_experiment(params, args.experiment, **overrides, shuffle_buffer_batches=buffer)
        with tempfile.TemporaryDirectory() as storage:
            outcome = fit(variant, paths, Path(storage))
        pipeline[buffer] = outcome.metrics["images_per_s"]
        if args.save_model:
            paths.model_dir(exp.key).mkdir(parents=True, exist_ok=True)
            torch.save(outcome.state_dict, paths.model_dir(exp.key) / "model.pt")
        pipeline_peak[buffer] = outcome.metrics.get("gpu_peak_memory_gib")
    result = {
        "experiment": exp.key, "model": exp.model, "batch_size": exp.train.batch_size, "epochs": args.epochs,
        "device": torch.cuda.get_device_name() if args.gpu else f"CPU ({platform.processor() or platform.machine()}, "
                                                                  f"{os.cpu_count()} cores)",
        "train_images": task.train_source().num_rows(),
        "bare_images_per_s": round(bare, 1),
        "bare_with_device_augmentation_images_per_s": round(bare_aug, 1),
        "pipeline_last_epoch": [{"shuffle_buffer_batches": b, "images_per_s": round(r, 1), "ratio": round(r / bare, 3),
                                 "ratio_to_bare_with_augmentation": round(r / bare_aug, 3),
                                 **({"peak_gpu_memory_gib": round(pipeline_peak[b], 2)} if pipeline_peak[b] else {})}
                                for b, r in pipeline.items()],
    }
    if device.type == "cuda":
        result["bare_peak_gpu_memory_gib"] = peak
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
