"""Where a single-frame MTCNN call spends its time on a GPU: kernel launches, host syncs, top operators.

For the single-image frames/s target (issue 6: 100 frames/s at 640x480, min face 20): at batch 1 the
cascade is bound by launches and host round trips, not arithmetic, so this counts them per frame.

    python benchmarks/mtcnn_profile.py [--device cuda] [--calls 20] [--out profile.txt]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from facebench.bench import mtcnn_frames
from facebench.mtcnn import REPO_ROOT, MTCNNDetector

COUNTED = ("cudaLaunchKernel", "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync",
           "aten::nonzero", "aten::item", "aten::_local_scalar_dense", "aten::equal", "aten::unique")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    frames = mtcnn_frames((REPO_ROOT / ".." / "shared" / "images" / "astronaut.png").resolve())
    detector = MTCNNDetector(None, args.device, min_face=20)
    frame = [frames[0]]
    for _ in range(5):
        detector.detect(frame)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        for _ in range(args.calls):
            detector.detect(frame)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
    events = prof.key_averages()
    lines = [f"per frame over {args.calls} single-frame calls on {args.device}:"]
    for name in COUNTED:
        count = sum(e.count for e in events if e.key == name)
        lines.append(f"  {name:28s} {count / args.calls:8.1f}")
    lines.append(events.table(sort_by="cpu_time_total", row_limit=30))
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
