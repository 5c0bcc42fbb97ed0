"""Rendering many images, in order, over a process pool: one job per image, each drawn from its own seed,
so results never depend on the worker count; progress on stderr. The writers (landmarks.py,
identities.py) stage their trees beside the target folder and rename them into place when whole.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facebench.data.synth.faces import Regime, encode, render_random, render_scene, sample_person, sample_person_scene

PROGRESS_EVERY = 500
PARALLEL_FROM = 300  # images; smaller sets render in-process


class Progress:
    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self.t0 = label, total, 0, time.perf_counter()

    def step(self) -> None:
        self.done += 1
        if self.done % PROGRESS_EVERY == 0 or self.done == self.total:
            rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
            print(f"[synth {self.label}] {self.done}/{self.total} images ({rate:.0f}/s)", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Job:
    seed_words: tuple[int, ...]
    regime: Regime
    size: int
    path: Path
    ext: str
    person_seed: tuple[int, ...] | None = None  # set: an image of the person these words draw


def render_job(job: Job) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one image, write it, return its (68-point, 19-point, 19-visibility) annotations."""
    if job.person_seed is None:
        sample = render_random(list(job.seed_words), job.regime, job.size)
    else:
        person = sample_person(np.random.default_rng(list(job.person_seed)))
        scene = sample_person_scene(np.random.default_rng(list(job.seed_words)), person, job.regime, job.size)
        sample = render_scene(scene, job.size)
    job.path.write_bytes(encode(sample.image, job.ext))
    return sample.landmarks68, sample.aflw19, sample.visible19


def single_threaded() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe


def worker_count(n_jobs: int) -> int:
    """Processes for a job list: none for small sets (spawning costs ~1-2 s), else one per core."""
    return 1 if n_jobs < PARALLEL_FROM else max(1, min(len(os.sched_getaffinity(0)), 8))


def run_jobs(jobs: list[Job], label: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Render all jobs, in order. Results depend only on each job's seed, never on the worker count.

    Worker processes are spawned (not forked: callers may hold threads), so a calling script
    must guard its entry point with ``if __name__ == "__main__"``.
    """
    progress = Progress(label, len(jobs))
    workers = worker_count(len(jobs))
    results = []
    if workers == 1:
        for job in jobs:
            results.append(render_job(job))
            progress.step()
        return results
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=single_threaded) as pool:
        for result in pool.map(render_job, jobs, chunksize=16):
            results.append(result)
            progress.step()
    return results


def staging_dir(root: Path) -> Path:
    root.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))


def seed_word(seed: int) -> int:
    return int(seed) % (2**63)

