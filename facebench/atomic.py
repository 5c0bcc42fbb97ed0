"""Whole-or-nothing writes: a crash never leaves a half-written output behind.

Temporary files and folders do not go beside the destination: DVC stages depend on whole folders
(data/prepared, metrics) and hash whatever is in them, and a process killed by SIGKILL runs no
cleanup. They go to a scratch folder outside the destination's folder but on its filesystem, so
that os.replace can still move them into place: ``<project>/.facebench-tmp`` (the nearest folder
above holding params.yaml, dvc.yaml or .dvc), else ``.facebench-tmp`` beside the destination's
folder. Inside it each process works in ``<host>/<pid>/``; a later write removes the folders of
processes of this host that are no longer alive, and .dvcignore hides the scratch folder from DVC
should one ever sit inside a tracked folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

SCRATCH = ".facebench-tmp"
PROJECT_MARKERS = ("params.yaml", "dvc.yaml", ".dvc")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the scratch folder, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_dir(path.parent)
    fd, tmp = _in_own_folder(scratch, lambda own: tempfile.mkstemp(dir=own, prefix=f"{path.name}.", suffix=".tmp"))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes files owner-only; outputs are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _tidy(scratch)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def replace_dir(src: Path, dst: Path) -> None:
    """Move a fully written folder into place, replacing what was there.

    The old folder is moved aside (into the scratch folder) first and removed only after the new one
    is in place, so at every moment ``dst`` is either the old complete folder or the new complete one.
    """
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dst.with_name(dst.name + ".old"), ignore_errors=True)  # left beside by earlier versions
    scratch = scratch_dir(dst.parent)
    try:
        old = None
        if dst.exists():
            old = Path(_in_own_folder(scratch, lambda own: tempfile.mkdtemp(dir=own, prefix=f"{dst.name}.old-")))
            os.replace(dst, old)  # onto the empty folder just made: a rename, atomic on POSIX
        try:
            os.replace(src, dst)
        except BaseException:
            if old is not None:
                os.replace(old, dst)  # put the old folder back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        _tidy(scratch)


def build_dir(dst: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a fresh folder in the scratch folder, then swap it in (``replace_dir``); on any
    failure the partial folder is removed and ``dst`` is left as it was. Killed outright, the process
    leaves its partial folder in the scratch folder only, where the next write of any process removes it."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    for legacy in dst.parent.glob(f".{dst.name}.tmp-*"):  # left beside by earlier versions
        shutil.rmtree(legacy, ignore_errors=True)
    scratch = scratch_dir(dst.parent)
    tmp = Path(_in_own_folder(scratch, lambda own: tempfile.mkdtemp(dir=own, prefix=f"{dst.name}.")))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes the folder owner-only
        replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _tidy(scratch)


def scratch_dir(parent: Path) -> Path:
    """The scratch folder for writes into ``parent``: the project's (see the module docstring) when it is
    on ``parent``'s filesystem, else one beside ``parent``, else (``parent`` is a mount point or the
    filesystem root) one inside it. Folders of dead processes of this host in it are removed."""
    parent = Path(os.path.abspath(parent))
    device = parent.stat().st_dev
    project = next((p for p in (parent, *parent.parents) if any((p / m).exists() for m in PROJECT_MARKERS)), None)
    candidates = [c for c in (project, parent.parent if parent.parent != parent else None) if c is not None]
    home = next((c for c in candidates if c.stat().st_dev == device), parent)
    scratch = home / SCRATCH
    remove_stale(scratch)
    return scratch


def remove_stale(scratch: Path) -> list[Path]:
    """Remove the working folders (``<host>/<pid>``) of this host's processes that are no longer alive;
    returns what was removed. Other hosts' folders are left alone: their pids mean nothing here."""
    host_dir = Path(scratch) / _host()
    try:
        entries = list(host_dir.iterdir())
    except OSError:
        return []
    removed = []
    for entry in entries:
        if entry.name.isdigit() and not _alive(int(entry.name)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _host() -> str:
    return socket.gethostname().replace(os.sep, "_") or "localhost"


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no cheap test: never remove
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    except (OverflowError, ValueError):
        return False
    return True


def _in_own_folder(scratch: Path, make):
    """``make(<scratch>/<host>/<pid>)``: retried when another thread removed the empty folder meanwhile."""
    own = scratch / _host() / str(os.getpid())
    for attempt in range(3):
        own.mkdir(parents=True, exist_ok=True)
        try:
            return make(own)
        except FileNotFoundError:
            if attempt == 2:
                raise


def _tidy(scratch: Path) -> None:
    """Remove this process's folder and the ones above it where they are empty (others' are not)."""
    own = scratch / _host() / str(os.getpid())
    for folder in (own, own.parent, scratch):
        try:
            folder.rmdir()
        except OSError:
            return
