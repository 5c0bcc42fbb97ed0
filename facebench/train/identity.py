"""Run identity: what a training run's numbers come from (its params, its code, its data).

A run is identified by three hashes (DESIGN.md, "Run identity"):

* **params**: ``ResolvedExperiment.config_hash`` (the resolved experiment: loss, schedule, seed, sizes);
* **code**: the bytes of every facebench source file the training imports (``code_hash``), found by
  reading the import statements of the modules a training starts from (``training_modules``), so a
  changed loss or trainer is a new run while a changed report is not. The files are read from the
  working tree, so uncommitted edits count (the commit and its dirty state are tagged separately);
* **data**: the bytes of every input file the task reads (``data_hash``): the prepared splits, the
  verification set, the earlier cascade stages' weights. One changed row is a new run.

Same identity: the same run (an unfinished one resumes, a finished one is reused). A different one
trains from scratch. The import graph here is also what a DVC stage's code deps must cover.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "facebench"
PACKAGE_DIR = Path(__file__).resolve().parents[1]

# Modules whose function-level imports pick one implementation among several (a plain dispatch on a
# name): their module-level imports count, their lazy ones do not, since the roots name the one chosen.
DISPATCH_MODULES = frozenset({"facebench.cli", "facebench.stages"})


def module_file(module: str) -> Path | None:
    """The source file of a facebench module or package (its ``__init__.py``), or None if there is none."""
    parts = module.split(".")[1:]
    if not parts:
        return PACKAGE_DIR / "__init__.py"
    rel = Path(*parts)
    for candidate in (PACKAGE_DIR / rel.with_suffix(".py"), PACKAGE_DIR / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(module: str, path: Path) -> set[str]:
    """facebench modules ``path`` imports (absolute imports; ``from facebench.x import y`` counts y when it
    is a module). Function-level imports count unless ``module`` is a dispatch module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lazy_ok = module not in DISPATCH_MODULES
    found: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and (lazy_ok or not in_function):
                if isinstance(child, ast.Import):
                    found.update(a.name for a in child.names if a.name.split(".")[0] == PACKAGE)
                elif child.level == 0 and child.module and child.module.split(".")[0] == PACKAGE:
                    found.add(child.module)
                    found.update(f"{child.module}.{a.name}" for a in child.names
                                 if module_file(f"{child.module}.{a.name}") is not None)
            visit(child, nested)

    visit(tree, False)
    return found


def _with_parents(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def import_closure(roots: list[str]) -> list[str]:
    """Every facebench module the roots import, transitively (with their parent packages), sorted."""
    seen: set[str] = set()
    todo = [m for root in roots for m in _with_parents(root)]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = module_file(module)
        if path is None:
            raise ValueError(f"{module}: no such facebench module (expected a file under {PACKAGE_DIR})")
        seen.add(module)
        for imported in _imports(module, path):
            if module_file(imported) is not None:
                todo.extend(m for m in _with_parents(imported) if m not in seen)
    return sorted(seen)


def task_module(task: str) -> str:
    """The module of ``task``'s class (config.TASK_CLASSES), e.g. facebench.papers.wing.task."""
    from facebench.config import TASK_CLASSES

    if task not in TASK_CLASSES:
        raise ValueError(f"{task}: no such task (known: {', '.join(TASK_CLASSES)})")
    return TASK_CLASSES[task].rsplit(".", 1)[0]


def training_modules(task: str) -> list[str]:
    """The modules a training of ``task`` runs: the trainer and the task's own module (which imports its
    model, loss, metrics and data helpers)."""
    return import_closure(["facebench.train.experiment", task_module(task)])


def code_hash(modules: list[str]) -> str:
    """sha256 over the modules' names and source bytes (the working tree, dirty edits included)."""
    h = hashlib.sha256()
    for module in sorted(modules):
        path = module_file(module)
        h.update(module.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def file_digest(path: Path, cache: dict[str, dict] | None = None) -> str:
    """sha256 of a file's bytes; ``cache`` (path -> size, mtime, digest) skips files unchanged on disk."""
    path = Path(path)
    stat = path.stat()
    key = str(path.resolve())
    hit = cache.get(key) if cache is not None else None
    if hit and hit["size"] == stat.st_size and hit["mtime_ns"] == stat.st_mtime_ns:
        return hit["sha256"]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    if cache is not None:
        cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    return digest


def data_hash(files: list[Path], cache_file: Path | None = None) -> str:
    """sha256 over the input files' digests, in a fixed order. A missing file is an error naming it.

    Large inputs are hashed once: ``cache_file`` remembers each file's digest with its size and mtime."""
    cache: dict[str, dict] = {}
    if cache_file is not None and cache_file.is_file():
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
    h = hashlib.sha256()
    for path in sorted({Path(p).resolve() for p in files}):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: an input of this training is missing (run the stage that writes it)")
        h.update(str(path.name).encode() + b"\0" + file_digest(path, cache).encode() + b"\0")
    if cache_file is not None:
        from facebench.atomic import atomic_write_text

        atomic_write_text(cache_file, json.dumps(cache, sort_keys=True))
    return h.hexdigest()


@dataclass(frozen=True)
class RunIdentity:
    params: str  # ResolvedExperiment.config_hash()
    code: str    # code_hash of the training's modules
    data: str    # data_hash of the task's input files

    @property
    def id(self) -> str:
        """One short name for the three: equal ids, equal params, code and data."""
        blob = json.dumps({"params": self.params, "code": self.code, "data": self.data}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def tags(self) -> dict[str, str]:
        return {"facebench.identity": self.id, "facebench.config_hash": self.params,
                "facebench.code_hash": self.code, "facebench.data_hash": self.data}


def identity_of(exp, input_files: list[Path], cache_file: Path | None = None) -> RunIdentity:
    """The identity of a training of ``exp`` (a ResolvedExperiment) reading ``input_files``."""
    return RunIdentity(params=exp.config_hash(), code=code_hash(training_modules(exp.task)),
                       data=data_hash(input_files, cache_file))

