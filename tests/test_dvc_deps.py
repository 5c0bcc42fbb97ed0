"""Every DVC stage lists, as deps, every facebench module its command imports (DESIGN.md, "The pipeline").

For each stage of dvc.yaml and study/dvc.yaml (as DVC resolves it, foreach expanded), the modules its command runs are found
by reading import statements (facebench/train/identity.py: the same graph the run identity hashes), from
the modules that verb's dispatch picks for that stage's dataset or experiment. A module is covered when a
dep names its file or a folder holding it. A stage that leaves one out would not re-run after that module
changes, and its outputs would silently come from older code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from facebench.config import load_params
from facebench.train.identity import PACKAGE_DIR, import_closure, module_file, training_modules

REPO = Path(__file__).resolve().parents[1]

SYNTH = {"w300": "facebench.data.synth", "aflw_full": "facebench.data.synth",
         "casia": "facebench.data.synth.identities", "lfw": "facebench.data.synth.identities",
         "wider": "facebench.data.synth.wider"}
PREPARE = {"w300": ["facebench.data.prepare", "facebench.data.formats.w300"],
           "aflw_full": ["facebench.data.prepare", "facebench.data.formats.aflw"],
           "casia": ["facebench.data.prepare_identity"], "lfw": ["facebench.data.prepare_identity"],
           "wider": ["facebench.data.formats.wider"]}
TASKS = ("landmarks", "heatmaps", "recognition", "detection")
STUDY_TASK = {"wing": "landmarks", "cosface": "recognition", "awing": "heatmaps"}


def command_roots(cmd: str, params) -> list[str]:
    """The modules a stage's `facebench <verb> <name>` commands (joined by `&&`) run: the CLI itself only
    parses arguments."""
    return [module for part in cmd.split("&&") for module in verb_roots(part, params)]


def verb_roots(cmd: str, params) -> list[str]:
    words = cmd.split()
    assert words[0] == "facebench", cmd
    verb, name = words[1], (words[2] if len(words) > 2 else None)
    if verb == "synth":
        return ["facebench.stages", SYNTH[params.datasets[name].format]]
    if verb == "prepare":
        cfg = params.datasets[name]
        return ["facebench.stages", *PREPARE[cfg.format]] + (
            ["facebench.papers.mtcnn.detect"] if getattr(cfg, "points", "list") == "mtcnn" else [])
    if verb == "train":  # a row the profile leaves out gets placeholder outputs (train/skip.py)
        recrop = ["facebench.papers.wing.two_stage"] if "--recrop" in words else []
        return ["facebench.train.skip", *recrop, *training_modules(params.all_experiments[name].task)]
    if verb == "recrop":
        return ["facebench.train.skip", "facebench.papers.wing.two_stage"]
    if verb == "mtcnn-data":
        return ["facebench.stages", "facebench.papers.mtcnn.samples", "facebench.data.formats.wider",
                "facebench.papers.mtcnn.model", "facebench.papers.mtcnn.detect"]
    if verb == "tune":
        base = params.all_experiments[params.all_sweeps[name].experiment]
        return ["facebench.train.tune", *training_modules(base.task)]
    if verb == "register":
        return ["facebench.registry"]
    if verb == "report":  # it hashes every task's training sources to flag rows trained with other code
        return ["facebench.report", *[m for task in TASKS for m in training_modules(task)]]
    if verb == "study":  # study/dvc.yaml: a question's cells train through its task
        return ["facebench.study", *training_modules(STUDY_TASK[name])]
    if verb == "claims":  # like the report, it flags cells trained with other code
        return ["facebench.report.claims", *[m for task in STUDY_TASK.values() for m in training_modules(task)]]
    raise AssertionError(f"no rule for `facebench {verb}` (stage command {cmd!r}): add one here")


def uncovered(modules: list[str], deps: list[str]) -> list[str]:
    """Module files no dep names (a dep is a file or a folder, relative to the project root)."""
    dep_paths = [(REPO / d).resolve() for d in deps]
    missing = []
    for module in import_closure(modules):
        path = module_file(module).resolve()
        if path.name == "__init__.py" and path.stat().st_size == 0:
            continue  # an empty package marker runs nothing
        if not any(path == d or d in path.parents for d in dep_paths):
            missing.append(str(path.relative_to(PACKAGE_DIR.parent)))
    return missing


def _stages():
    from dvc.repo import Repo

    return list(Repo(str(REPO)).index.stages)


def test_every_stage_lists_the_modules_its_command_imports():
    params = load_params(REPO / "params.yaml")
    problems = {}
    for stage in _stages():
        missing = uncovered(command_roots(stage.cmd, params), [d.def_path for d in stage.deps])
        if missing:
            problems[stage.addressing] = missing
    assert problems == {}, "dvc.yaml deps leave out modules the stages import:\n" + "\n".join(
        f"  {stage}: {', '.join(mods)}" for stage, mods in sorted(problems.items()))


def test_a_dep_removed_by_hand_is_found():
    """The check itself: without facebench/papers/wing/loss.py a Wing training stage is reported."""
    params = load_params(REPO / "params.yaml")
    stage = next(s for s in _stages() if s.addressing == "train@aflw_cnn6_wing")
    deps = [d.def_path for d in stage.deps]
    assert uncovered(command_roots(stage.cmd, params), deps) == []
    trimmed = [d for d in deps if d not in ("facebench/papers/wing/loss.py", "facebench/papers/wing")]
    assert "facebench/papers/wing/loss.py" in uncovered(command_roots(stage.cmd, params), trimmed)


@pytest.mark.parametrize("task", TASKS)
def test_a_training_imports_its_task_model_and_loss(task):
    """Hand-listed expectations for the import graph the identity and this check rely on."""
    mods = set(training_modules(task))
    expected = {"landmarks": {"facebench.papers.wing.loss", "facebench.papers.wing.model", "facebench.papers.wing.model"},
                "heatmaps": {"facebench.papers.awing.loss", "facebench.papers.awing.model", "facebench.papers.wing.task"},
                "recognition": {"facebench.papers.cosface.loss", "facebench.papers.cosface.model",
                                "facebench.metrics.verification"},
                "detection": {"facebench.papers.mtcnn.loss", "facebench.papers.mtcnn.model", "facebench.papers.mtcnn.evaluate"}}[task]
    assert expected <= mods
    assert "facebench.report" not in mods and "facebench.cli" not in mods
    others = {"landmarks": "facebench.papers.cosface.task", "heatmaps": "facebench.papers.mtcnn.task",
              "recognition": "facebench.papers.wing.task", "detection": "facebench.papers.awing.task"}[task]
    assert others not in mods  # the task dispatch's lazy imports are not followed
