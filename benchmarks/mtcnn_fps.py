"""MTCNN detection throughput (frames/s) on 640x480 frames, single images and batches, CPU and CUDA.

Frames: the astronaut photograph letterboxed into 640x480, a mirrored copy, a copy with several smaller
faces pasted onto a dimmed background, and a face-free smooth noise frame, cycled to fill batches. Settings
are the paper's (min face 20, factor 0.709, thresholds 0.6/0.7/0.7), as in the usual ~25 fps figure quoted
for facenet-pytorch's MTCNN at 640x480. Time includes the host->device copy and the results coming back.

    python benchmarks/mtcnn_fps.py [--device cpu cuda] [--batch-sizes 1 8 32] [--seconds 5] [--out fps.json]

CPU figures move a lot with other load on the machine (torch's thread pool waits for busy cores); compare
runs taken on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from facebench.mtcnn import MTCNNDetector, REPO_ROOT

ASTRONAUT = (REPO_ROOT / ".." / "shared" / "images" / "astronaut.png").resolve()
WIDTH, HEIGHT = 640, 480


def make_frames() -> list[np.ndarray]:
    """Four 640x480 RGB frames with 1, 1, several and no faces."""
    rgb = cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB)
    letterbox = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    side = min(HEIGHT, WIDTH)
    x0 = (WIDTH - side) // 2
    letterbox[:, x0:x0 + side] = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
    mirrored = np.ascontiguousarray(letterbox[:, ::-1])
    crowd = (cv2.resize(rgb, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA) // 2 + 60).astype(np.uint8)
    face = rgb[40:200, 150:300]
    for k, (scale, y, x) in enumerate([(0.3, 20, 30), (0.45, 300, 60), (0.6, 120, 420), (0.25, 380, 520)]):
        f = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        crowd[y:y + f.shape[0], x:x + f.shape[1]] = f[:, ::-1] if k % 2 else f
    rng = np.random.default_rng(0)
    noise = cv2.resize(rng.integers(0, 256, (HEIGHT // 16, WIDTH // 16, 3), dtype=np.uint8), (WIDTH, HEIGHT),
                       interpolation=cv2.INTER_CUBIC)
    return [letterbox, mirrored, np.ascontiguousarray(crowd), noise]


def measure(detector: MTCNNDetector, frames: list[np.ndarray], batch: int, seconds: float) -> dict:
    """Frames/s over repeated calls after two warm-up calls; also the median per-call latency."""
    inputs = [frames[i % len(frames)] for i in range(batch)]
    for _ in range(2):
        detector.detect(inputs)
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t0 = time.perf_counter()
        faces = detector.detect(inputs)  # returns host arrays: includes the device sync
        times.append(time.perf_counter() - t0)
    total = sum(times)
    return {"batch": batch, "calls": len(times), "fps": round(batch * len(times) / total, 2),
            "median_latency_ms": round(1000 * float(np.median(times)), 2),
            "faces_per_frame": [len(f) for f in faces[:len(frames)]]}


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} torch threads)"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", nargs="+", default=None, help="default: cpu, and cuda when available")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--seconds", type=float, default=5.0, help="timed seconds per setting")
    ap.add_argument("--min-face", type=float, default=20)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    frames = make_frames()
    report: dict = {"frame_size": [WIDTH, HEIGHT], "min_face": args.min_face, "torch": torch.__version__,
                    "python": sys.version.split()[0], "results": []}
    for device in devices:
        detector = MTCNNDetector(args.weights, device, min_face=args.min_face)
        for batch in args.batch_sizes:
            row = {"device": device, "device_name": device_name(device), **measure(detector, frames, batch,
                                                                                    args.seconds)}
            report["results"].append(row)
            print(json.dumps(row), file=sys.stderr)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
