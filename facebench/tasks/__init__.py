"""Tasks: one file per task says what a batch is, the training step and the evaluation.

``build_task`` is a plain dispatch on the experiment's ``task`` field, so the place where each
task lives stays visible.
"""

from __future__ import annotations

from pathlib import Path

from facebench.config import ResolvedExperiment


def build_task(exp: ResolvedExperiment, prepared_dir: Path):
    if exp.task == "landmarks":
        from facebench.tasks.landmarks import LandmarkTask

        return LandmarkTask(exp, prepared_dir)
    if exp.task == "heatmaps":
        from facebench.tasks.heatmaps import HeatmapTask

        return HeatmapTask(exp, prepared_dir)
    if exp.task == "recognition":
        from facebench.tasks.recognition import RecognitionTask

        return RecognitionTask(exp, prepared_dir)
    raise ValueError(f"unknown task {exp.task!r} (known: landmarks, heatmaps, recognition)")
