"""MTCNN side by side: facebench's cascade and the reference implementation (facenet-pytorch 2.6.0) in one
process, with the same published weights and settings (min face 20, thresholds 0.6 / 0.7 / 0.7, factor
0.709), on the same 640x480 frames: ``facebench bench``'s four (one face, its mirror, several small faces,
none) and synthetic WIDER-format scenes (faces of 12 to 300 px, some frames without faces).

    python benchmarks/mtcnn_vs_reference.py                       # CPU, 2 threads each, batch 1 and 8
    python benchmarks/mtcnn_vs_reference.py --device cuda --out results.json

Frames/s for both and their ratio, single image (one call per frame) and batched (``--batch`` frames per
call; the reference batches equal-size frames itself). Calls alternate between the two implementations
frame by frame, so a machine shared with other work slows both alike; each figure is the total over
``--rounds`` passes. Agreement: faces paired one to one (``facebench.papers.mtcnn.reference.agreement``) and how
many agree within issue 20's tolerances (box IoU >= 0.98, landmarks within 1% of the side, score within
1e-3).

The reference imports torchvision only for ``batched_nms``; where torchvision does not import (this
project's torch), a plain-torch stand-in runs in its place (``facebench/papers/mtcnn/reference.py``), which may be
slower than torchvision's C++ kernel. The time spent in it is reported, and so is the ratio against the
reference with that time taken out (a lower bound of the speed-up).
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

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facebench.bench import FRAME_HEIGHT, FRAME_WIDTH, mtcnn_frames  # noqa: E402
from facebench.data.formats.wider import read_scenes  # noqa: E402
from facebench.data.synth.wider import synth_wider  # noqa: E402
from facebench.papers.mtcnn import REPO_ROOT, MTCNNDetector  # noqa: E402
from facebench.papers.mtcnn import reference as ref_module  # noqa: E402


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def frames(scenes: int, seed: int) -> list[np.ndarray]:
    out = mtcnn_frames((REPO_ROOT / ".." / "shared" / "images" / "astronaut.png").resolve())
    with tempfile.TemporaryDirectory() as tmp:
        synth_wider(Path(tmp), {"val": scenes}, seed=seed, width=FRAME_WIDTH, height=FRAME_HEIGHT,
                    min_face=12, max_face=300)
        for s in read_scenes(Path(tmp), "val"):
            out.append(cv2.cvtColor(cv2.imread(str(s.image_path)), cv2.COLOR_BGR2RGB))
    return out


class NmsClock:
    """Wraps the reference's ``batched_nms`` (stand-in or torchvision) to add up the time spent in it."""

    def __init__(self) -> None:
        import facenet_pytorch.models.utils.detect_face as steps

        self.steps, self.inner, self.seconds = steps, steps.batched_nms, 0.0
        steps.batched_nms = self

    def __call__(self, *args):
        start = time.perf_counter()
        try:
            return self.inner(*args)
        finally:
            self.seconds += time.perf_counter() - start


def timed(call, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def side_by_side(detector: MTCNNDetector, reference, clock: NmsClock, batches: list[list[np.ndarray]],
                 rounds: int, device: torch.device) -> dict:
    """Both implementations on each batch in turn, ``rounds`` times (after one warm-up pass)."""
    def ref_call(batch):
        return ref_module.reference_rows(reference, np.stack(batch))

    for batch in batches:  # warm-up: layouts, caches, CUDA graphs
        ref_call(batch)
        detector.detect_arrays(batch)
    ref_s = fb_s = nms_s = 0.0
    for _ in range(rounds):
        for batch in batches:
            clock.seconds = 0.0
            ref_s += timed(lambda: ref_call(batch), device)
            nms_s += clock.seconds
            fb_s += timed(lambda: detector.detect_arrays(batch), device)
    n = rounds * sum(len(b) for b in batches)
    out = {"frames": n, "reference_fps": n / ref_s, "facebench_fps": n / fb_s, "ratio": ref_s / fb_s,
           "reference_nms_ms_per_frame": 1000 * nms_s / n,
           "ratio_without_reference_nms": (ref_s - nms_s) / fb_s}
    ours, ref = [], []
    for k, batch in enumerate(batches):  # agreement on the same batches
        a, b = detector.detect_arrays(batch), ref_call(batch)
        a[:, 0] += k * len(batch)
        b[:, 0] += k * len(batch)
        ours.append(a)
        ref.append(b)
    check = ref_module.agreement(np.concatenate(ours), np.concatenate(ref), sum(len(b) for b in batches))
    out["agreement"] = {k: v for k, v in check.items() if k != "pairs"}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (both implementations)")
    parser.add_argument("--batch", type=int, default=8, help="frames per call in the batched setting")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scenes", type=int, default=12, help="synthetic WIDER scenes added to the 4 frames")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    reference = ref_module.load_reference(device)
    clock = NmsClock()
    detector = MTCNNDetector(None, device, min_face=20)
    images = frames(args.scenes, args.seed)
    batched = [[images[(k * args.batch + i) % len(images)] for i in range(args.batch)]
               for k in range(max(1, len(images) // args.batch))]
    load_before = os.getloadavg()
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {cpu_model()}",
        "torch": torch.__version__, "threads": args.threads, "frame": [FRAME_WIDTH, FRAME_HEIGHT],
        "min_face": 20, "frames": len(images),
        "single": side_by_side(detector, reference, clock, [[f] for f in images], args.rounds, device),
        f"batch_{args.batch}": side_by_side(detector, reference, clock, batched, args.rounds, device),
    }
    # A CPU shared with other work distorts 2-thread timings (a descheduled thread stalls every parallel op):
    # the load averages before and after say whether the machine was quiet.
    report["load_average_before_after"] = [round(v, 2) for v in load_before + os.getloadavg()]
    print(f"{report['device']}, torch {report['torch']}, {args.threads} threads, {len(images)} frames "
          f"{FRAME_WIDTH}x{FRAME_HEIGHT}, min face 20")
    print(f"{'setting':<10} {'reference fps':>14} {'facebench fps':>14} {'ratio':>6} {'ratio w/o ref NMS':>18}  agreement")
    for name in ("single", f"batch_{args.batch}"):
        r = report[name]
        a = r["agreement"]
        print(f"{name:<10} {r['reference_fps']:>14.1f} {r['facebench_fps']:>14.1f} {r['ratio']:>6.2f} "
              f"{r['ratio_without_reference_nms']:>18.2f}  {a['agreeing']}/{a['faces_reference']} faces agree, "
              f"{len(a['count_mismatch'])} images differ in count; worst IoU {a['worst_iou']:.4f}, "
              f"score {a['worst_score']:.1e}")
    print("load average (1, 5, 15 min) before and after:", report["load_average_before_after"])
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
