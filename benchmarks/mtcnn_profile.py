"""Where a single-frame MTCNN call spends its time on a GPU: kernel launches, host syncs, top operators,
with the CUDA-graph path and the eager path side by side in one run.

For the single-image frames/s target (issue 6: 100 frames/s at 640x480, min face 20): at batch 1 the
cascade is bound by launches and host round trips, not arithmetic, so this counts them per frame and
times both paths, alternating, on the same frames.

    python benchmarks/mtcnn_profile.py [--device cuda] [--calls 20] [--rounds 3] [--out profile.txt]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from facebench.bench import mtcnn_frames
from facebench.papers.mtcnn import REPO_ROOT, MTCNNDetector

COUNTED = ("cudaLaunchKernel", "cudaGraphLaunch", "cudaStreamSynchronize", "cudaDeviceSynchronize",
           "cudaMemcpyAsync", "aten::nonzero", "aten::item", "aten::equal")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def counts(detector: MTCNNDetector, frame: list[np.ndarray], calls: int, device: str) -> tuple[list[str], object]:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            detector.detect(frame)
        sync(device)
    events = prof.key_averages()
    return [f"  {name:28s} {sum(e.count for e in events if e.key == name) / calls:8.1f}" for name in COUNTED], events


def frames_per_s(detector: MTCNNDetector, frame: list[np.ndarray], seconds: float, device: str) -> float:
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        detector.detect(frame)
        n += 1
    sync(device)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per path")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    frames = mtcnn_frames((REPO_ROOT / ".." / "shared" / "images" / "astronaut.png").resolve())
    frame = [frames[2]]  # the frame with several faces
    detectors = {"graphs": MTCNNDetector(None, args.device, min_face=20),
                 "eager": MTCNNDetector(None, args.device, min_face=20, cuda_graphs=False)}
    lines = []
    for name, det in detectors.items():
        for _ in range(5):
            det.detect(frame)
        per_call, events = counts(det, frame, args.calls, args.device)
        lines += [f"{name}: per frame over {args.calls} single-frame calls on {args.device} "
                  f"(graphs in use: {bool(det._graphs)}):"] + per_call
        if name == "graphs":
            table = events.table(sort_by="cpu_time_total", row_limit=25)
    rates: dict[str, list[float]] = {name: [] for name in detectors}
    for _ in range(args.rounds):
        for name, det in detectors.items():
            rates[name].append(frames_per_s(det, frame, args.seconds, args.device))
    lines.append(f"frames/s at batch 1, {args.rounds} alternating rounds of {args.seconds:g} s each:")
    lines += [f"  {name:8s} " + "  ".join(f"{r:7.1f}" for r in rs) for name, rs in rates.items()]
    same = np.allclose(detectors["graphs"].detect_arrays(frame), detectors["eager"].detect_arrays(frame), atol=1e-2)
    lines += [f"same detections (1e-2 px): {same}", table]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
