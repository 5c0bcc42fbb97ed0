"""Inference speed of the papers' models: images/s at batch 1 and batched, on the CPU and the GPU.

What ``facebench bench`` runs. Landmark models (CNN-6, the AWing hourglass) are timed on random input
already on the device, in eval mode under ``torch.inference_mode`` (bf16 autocast on CUDA); the
figure is the network alone, as papers quote it. The MTCNN cascade is timed end to end on 640x480
frames (host -> device copy, pyramid, three stages, results back on the host), the way a detector's
frames/s is quoted. Each setting warms up first; CUDA timings synchronise before the clock stops.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from facebench.train.ray_trainer import device_name

FRAME_WIDTH, FRAME_HEIGHT = 640, 480
LANDMARK_MODELS = ("cnn6", "hourglass")
MODELS = LANDMARK_MODELS + ("mtcnn",)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(call: Callable[[], object], device: torch.device, seconds: float, warmup: int = 3
               ) -> tuple[int, list[float]]:
    """Run ``call`` for about ``seconds`` (at least 3 times) after ``warmup`` calls; per-call seconds."""
    for _ in range(warmup):
        call()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t0 = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return len(times), times


def build_landmark_model(name: str, num_landmarks: int = 68, stacks: int = 4, features: int = 256,
                         input_size: int = 256) -> tuple[torch.nn.Module, int]:
    """(model, input side): CNN-6 at 64x64; the AWing hourglass at the given size (paper: 4 x 256 at 256)."""
    if name == "cnn6":
        from facebench.papers.wing.model import CNN6, INPUT_SIZE

        return CNN6(num_landmarks), INPUT_SIZE
    if name == "hourglass":
        from facebench.papers.awing.model import AWingHourglass

        return AWingHourglass(num_landmarks, num_stacks=stacks, features=features, input_size=input_size), input_size
    raise ValueError(f"unknown landmark model {name!r}; known: {', '.join(LANDMARK_MODELS)}")


def bench_landmark_model(name: str, device: torch.device, batch: int, seconds: float, **model_args: int) -> dict:
    model, side = build_landmark_model(name, **model_args)
    model = model.to(device).eval()
    x = torch.randn(batch, 3, side, side, device=device)
    amp = device.type == "cuda"

    def call() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            model(x)

    calls, times = time_calls(call, device, seconds)
    return {"model": name, "input": side, "batch": batch, "calls": calls,
            "images_per_s": round(batch * calls / sum(times), 1),
            "median_latency_ms": round(1000 * float(np.median(times)), 3)}


def mtcnn_frames(astronaut: Path) -> list[np.ndarray]:
    """Four 640x480 RGB frames with 1, 1, several and no faces, built from one photograph."""
    import cv2

    image = cv2.imread(str(astronaut))
    if image is None:
        raise FileNotFoundError(f"{astronaut}: cannot read the benchmark photograph")
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    letterbox = np.zeros((FRAME_HEIGHT, FRAME_WIDTH, 3), np.uint8)
    side = min(FRAME_HEIGHT, FRAME_WIDTH)
    x0 = (FRAME_WIDTH - side) // 2
    letterbox[:, x0:x0 + side] = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
    mirrored = np.ascontiguousarray(letterbox[:, ::-1])
    crowd = (cv2.resize(rgb, (FRAME_WIDTH, FRAME_HEIGHT), interpolation=cv2.INTER_AREA) // 2 + 60).astype(np.uint8)
    face = rgb[40:200, 150:300]
    for k, (scale, y, x) in enumerate([(0.3, 20, 30), (0.45, 300, 60), (0.6, 120, 420), (0.25, 380, 520)]):
        f = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        crowd[y:y + f.shape[0], x:x + f.shape[1]] = f[:, ::-1] if k % 2 else f
    rng = np.random.default_rng(0)
    noise = cv2.resize(rng.integers(0, 256, (FRAME_HEIGHT // 16, FRAME_WIDTH // 16, 3), dtype=np.uint8),
                       (FRAME_WIDTH, FRAME_HEIGHT), interpolation=cv2.INTER_CUBIC)
    return [letterbox, mirrored, np.ascontiguousarray(crowd), noise]


def bench_mtcnn(detector, frames: list[np.ndarray], batch: int, seconds: float) -> dict:
    """Frames/s of ``detector.detect`` on ``batch`` frames per call (results come back to the host)."""
    inputs = [frames[i % len(frames)] for i in range(batch)]
    faces: list = []

    def call() -> None:
        nonlocal faces
        faces = detector.detect(inputs)

    calls, times = time_calls(call, torch.device(detector.device), seconds, warmup=2)
    return {"model": "mtcnn", "input": [FRAME_WIDTH, FRAME_HEIGHT], "batch": batch, "calls": calls,
            "images_per_s": round(batch * calls / sum(times), 2),
            "median_latency_ms": round(1000 * float(np.median(times)), 3),
            "faces_per_frame": [len(f) for f in faces[:len(frames)]]}


def run_bench(models: list[str], devices: list[str], batch_sizes: list[int], seconds: float,
              weights: Path | None = None, min_face: float = 20, hourglass: dict | None = None,
              progress: Callable[[dict], None] | None = None) -> dict:
    """Every (model, device, batch) setting; returns a JSON-ready report."""
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    report: dict = {"torch": torch.__version__, "results": []}
    for dev in devices:
        device = torch.device(dev)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but torch sees no CUDA device")
        for name in models:
            if name == "mtcnn":
                from facebench.papers.mtcnn import REPO_ROOT, MTCNNDetector

                detector = MTCNNDetector(weights, device, min_face=min_face)
                frames = mtcnn_frames((REPO_ROOT / ".." / "shared" / "images" / "astronaut.png").resolve())
            for batch in batch_sizes:
                if name == "mtcnn":
                    row = bench_mtcnn(detector, frames, batch, seconds)
                    row["min_face"] = min_face
                else:
                    row = bench_landmark_model(name, device, batch, seconds,
                                               **(hourglass or {}) if name == "hourglass" else {})
                row = {"device": dev, "device_name": device_name(device), **row}
                report["results"].append(row)
                if progress:
                    progress(row)
    return report
